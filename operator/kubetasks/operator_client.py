"""How the CLI and the dashboard ask the operator why a run waits, as the user.

The operator answers ``GET /why/<namespace>/<name>`` on its metrics port (HTTPS, the metrics
Service) to a bearer token whose user may ``get`` that TaskRun (:mod:`kubetasks.core.why`). Reached:

- by default, through the API server's service proxy to the operator's metrics Service
  (``KUBETASKS_OPERATOR_SERVICE``: ``NAMESPACE/NAME[:PORT]``, default
  ``kubetasks-system/kubetasks-metrics:metrics``), with the kubeconfig's credentials: the user
  needs ``get`` on ``services/proxy`` of that Service. The API server drops the Authorization
  header once it has authenticated the caller, so the user's token also travels in
  ``X-Kubetasks-Authorization`` for the operator's own TokenReview;
- at ``KUBETASKS_OPERATOR_URL`` (or ``--operator-url``) directly: a port-forward, an Ingress, or an
  operator run on this machine (``http://127.0.0.1:9090``); ``KUBETASKS_OPERATOR_CA`` names the
  CA file an HTTPS operator's certificate is checked with.

Either way the operator reviews the user's bearer token: a kubeconfig that authenticates with a
client certificate gets no live answer (the caller falls back to the run's status and says so).
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
from urllib.parse import quote

from kubetasks.core.operator_address import CA_ENV, DEFAULT_SERVICE, SERVICE_ENV, URL_ENV, service_of
from kubetasks.core.why import TOKEN_HEADER, why_path

__all__ = ["CA_ENV", "DEFAULT_SERVICE", "SERVICE_ENV", "URL_ENV", "Answer", "ask_why", "service_of"]
TIMEOUT = 5.0  # seconds: the live answer is a nicety; the status is the fallback


@dataclass(frozen=True)
class Answer:
    body: dict[str, Any] | None  # the operator's live answer (FlowControl.explain); None: see problem
    problem: str | None = None


def _problem(status: int, body: bytes, where: str) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        text = str(json.loads(text).get("message") or text)
    except (ValueError, AttributeError):
        pass
    return f"{where} answered {status}: {text[:300]}"


def ask_why(namespace: str, name: str, url: str | None = None,
            env: Mapping[str, str] = os.environ) -> Answer:
    """The operator's live answer for the run, or why there is none (never raises for the
    operator's absence: the caller falls back to the run's status)."""
    from kubetasks import kube

    path = why_path(quote(namespace, safe=""), quote(name, safe=""))
    try:
        token = kube.bearer_token()
    except Exception as e:  # noqa: BLE001 (an exec plugin that fails, a kubeconfig without a user)
        return Answer(None, f"no credentials to ask the operator with: {e}")
    if token is None:
        return Answer(None, "the operator checks a bearer token, and your kubeconfig's user has none "
                            "(a client certificate?)")
    headers = {"Authorization": f"Bearer {token}", TOKEN_HEADER: f"Bearer {token}"}
    base = url or env.get(URL_ENV)
    try:
        if base:
            where = f"the operator at {base}"
            ca = env.get(CA_ENV)
            context = ssl.create_default_context(cafile=ca) if ca else None
            request = urllib.request.Request(base.rstrip("/") + path, headers={"Accept": "application/json", **headers})
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:
                    status, body = response.status, response.read()
            except urllib.error.HTTPError as e:
                status, body = e.code, e.read()
        else:
            svc_ns, service = service_of(env.get(SERVICE_ENV) or DEFAULT_SERVICE)
            where = f"the operator's Service {svc_ns}/{service} (through the API server)"
            status, body = kube.service_proxy_get(svc_ns, service, path, headers={TOKEN_HEADER: f"Bearer {token}"})
    except ValueError as e:
        return Answer(None, str(e))
    except Exception as e:  # noqa: BLE001 (refused, timed out, TLS: the operator is not there)
        return Answer(None, f"could not reach {where}: {kube.error_line(e)}")
    if status != 200:
        return Answer(None, _problem(status, body, where))
    try:
        answer = json.loads(body)
    except ValueError:
        return Answer(None, f"{where} did not answer JSON")
    return Answer(answer if isinstance(answer, dict) else None, None if isinstance(answer, dict) else "not an object")
