"""Asking the operator's HTTPS endpoints as the kubeconfig's user: the one way the CLI (/why,
/logs) and the SDK on a user's machine (/results, /payloads) reach them.

Where (core.operator_address): through the API server's service proxy to the operator's metrics
Service, with the kubeconfig's credentials, or at ``KUBETASKS_OPERATOR_URL`` directly (its CA in
``KUBETASKS_OPERATOR_CA``). Either way the operator reviews the user's bearer token, which also
travels in ``TOKEN_HEADER`` (the proxy drops Authorization once it has authenticated the caller):
a kubeconfig that authenticates with a client certificate cannot ask.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubetasks.core.operator_address import CA_ENV, DEFAULT_SERVICE, SERVICE_ENV, URL_ENV, proxy_path, service_of
from kubetasks.core.why import TOKEN_HEADER

CONNECT_TIMEOUT = 5.0
TRANSIENT = (429, 500, 502, 503, 504)  # worth asking again


class Unreachable(Exception):
    """The operator could not be asked (no token, not reachable): a message for a person."""


@dataclass
class Reply:
    status: int
    body: Any  # unread: ``read(n)``, ``headers.get``, ``close`` (urllib's or urllib3's response)
    where: str  # who answered, for messages

    def problem(self) -> str:
        """The operator's message of a refusal, read from the body."""
        text = self.body.read().decode("utf-8", "replace").strip()
        try:
            text = str(json.loads(text).get("message") or text)
        except (ValueError, AttributeError):
            pass
        return f"{self.where} answered {self.status}: {text[:300]}"


def ask(method: str, path: str, data: bytes | None = None, headers: Mapping[str, str] | None = None,
        url: str | None = None, env: Mapping[str, str] = os.environ, timeout: float = 10.0) -> Reply:
    """``method path`` of the operator as the user, whatever the status it answers; Unreachable
    when it cannot be asked. The caller reads and closes ``Reply.body``."""
    from kubetasks.runtime.kube import api_client, bearer_token

    try:
        client = api_client()
        token = bearer_token(client)
    except Exception as e:  # noqa: BLE001 (an exec plugin that fails, a kubeconfig without a user)
        raise Unreachable(f"no credentials to ask the operator with: {e}") from e
    if token is None:
        raise Unreachable("the operator checks a bearer token, and your kubeconfig's user has none "
                          "(a client certificate?)")
    extra = {TOKEN_HEADER: f"Bearer {token}", **(headers or {})}
    base = url or env.get(URL_ENV)
    where = f"the operator at {base}"
    try:
        if base:
            ca = env.get(CA_ENV)
            context = ssl.create_default_context(cafile=ca) if ca else None
            request = urllib.request.Request(base.rstrip("/") + path, data=data, method=method,
                                             headers={"Authorization": f"Bearer {token}", **extra})
            try:
                response = urllib.request.urlopen(request, timeout=timeout, context=context)  # noqa: S310
                return Reply(response.status, response, where)
            except urllib.error.HTTPError as e:
                return Reply(e.code, e, where)
        svc_ns, service = service_of(env.get(SERVICE_ENV) or DEFAULT_SERVICE)
        where = f"the operator's Service {svc_ns}/{service} (through the API server)"
        _, full, all_headers, _, _ = client.param_serialize(method, proxy_path(svc_ns, service, path),
                                                            header_params=extra, auth_settings=["BearerToken"])
        response = client.call_api(method, full, all_headers, data, _request_timeout=(CONNECT_TIMEOUT, timeout))
        return Reply(int(response.status), response.response, where)
    except ValueError as e:
        raise Unreachable(str(e)) from e
    except Exception as e:  # noqa: BLE001 (refused, timed out, TLS: the operator is not there)
        raise Unreachable(f"could not reach {where}: {e}") from e
