"""The Kubernetes client of task code: in-cluster config in a pod, else $KUBECONFIG, loaded once
on first use (so importing the SDK, and tasks that never call the API, need no configuration).

Kept apart from the operator's ``kubetasks.kube`` so that the SDK depends on nothing but the
official client and pydantic.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

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
                kubernetes.config.load_kube_config(client_configuration=configuration)
            _client = kubernetes.client.ApiClient(configuration)
        return _client


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
