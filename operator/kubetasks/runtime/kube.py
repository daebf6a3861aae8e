"""The Kubernetes client of task code: in-cluster config in a pod, else $KUBECONFIG, loaded once
on first use (so importing the SDK, and tasks that never call the API, need no configuration).

Kept apart from the operator's ``kubetasks.kube`` so that the SDK depends on nothing but the
official client and pydantic.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

log = logging.getLogger("kubetasks.runtime")
T = TypeVar("T")
TRANSIENT_STATUS = (429, 500, 502, 503, 504)
REQUEST_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds, as the operator's

_lock = threading.Lock()
_client: Any = None
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def api_client() -> Any:
    """The shared ``kubernetes.client.ApiClient``."""
    global _client
    with _lock:
        if _client is None:
            import kubernetes

            configuration = kubernetes.client.Configuration()
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            else:
                # $KUBECONFIG as it is now: the client reads it once, when first imported.
                kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                                   client_configuration=configuration)
            from kubernetes.utils.keepalive import tcp_keepalive_socket_options

            configuration.socket_options = tcp_keepalive_socket_options()

            class TimedApiClient(kubernetes.client.ApiClient):
                """Every request gets a timeout unless it sets one: a hung API server must not
                hold a task's checkpoint write until maxDuration."""

                def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
                    if kwargs.get("_request_timeout") is None:
                        kwargs["_request_timeout"] = REQUEST_TIMEOUT
                    return super().call_api(method, url, *args, **kwargs)

            _client = TimedApiClient(configuration)
        return _client


def bearer_token(client: Any) -> str | None:
    """The bearer token ``client`` authenticates with (a token, or an exec plugin's); None when it
    authenticates otherwise (a client certificate): the operator's endpoints review a token."""
    value = client.configuration.get_api_key_with_prefix("BearerToken", alias="authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def default_namespace() -> str:
    """The namespace to trigger runs in when none is given: the current run's, the pod's, the
    kubeconfig context's, else "default"."""
    from kubetasks import protocol

    if os.environ.get(protocol.ENV_NAMESPACE):
        return os.environ[protocol.ENV_NAMESPACE]
    if os.environ.get("KUBERNETES_SERVICE_HOST") and _SERVICE_ACCOUNT_NAMESPACE.exists():
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    try:
        import kubernetes

        _, current = kubernetes.config.list_kube_config_contexts()
        return str((current or {}).get("context", {}).get("namespace") or "default")
    except Exception:  # no kubeconfig: the API call that follows will say so
        return "default"


def with_retries(call: Callable[[], T], what: str, attempts: int = 6) -> T:
    """``call()``, retried with backoff (0.5 s doubling to 8 s) on errors that may pass: network
    errors and 429/5xx. A task pod's API calls are few, and an attempt lost to a blip costs more."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            transient = not isinstance(e, ApiException) or e.status in TRANSIENT_STATUS
            if not transient or attempt == attempts:
                raise
            log.warning("%s: %s; retrying in %.1fs", what, getattr(e, "reason", None) or e, delay)
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


def read_taskrun(namespace: str, name: str) -> dict[str, Any]:
    """The TaskRun ``namespace/name`` as a dict (the run's Role allows ``get`` on taskruns)."""
    from kubernetes.client import CustomObjectsApi

    from kubetasks.api.common import GROUP, VERSION

    api = CustomObjectsApi(api_client())
    run = with_retries(lambda: api.get_namespaced_custom_object(GROUP, VERSION, namespace, "taskruns", name),
                       f"TaskRun {namespace}/{name}")
    return cast(dict[str, Any], run)  # the client returns the decoded JSON object
