"""How the CLI and the dashboard ask the operator, as the user, why a run waits and for the
archived log of an attempt (``GET /logs/<namespace>/<name>/<attempt>``, streamed).

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

import hashlib
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubetasks.core.operator_address import CA_ENV, DEFAULT_SERVICE, SERVICE_ENV, URL_ENV, service_of
from kubetasks.core.log_archive import SHA256_HEADER, logs_path
from kubetasks.core.why import TOKEN_HEADER, why_path

__all__ = ["CA_ENV", "DEFAULT_SERVICE", "SERVICE_ENV", "URL_ENV", "Answer", "LogCut", "Unreachable", "ask_why", "service_of",
           "stream_archived_log"]
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


class Unreachable(Exception):
    """The operator could not be asked (no token, not reachable): a message for a person."""


def _open(path: str, url: str | None, env: Mapping[str, str], timeout: float) -> tuple[int, Any, str]:
    """GET ``path`` of the operator as the user: (status, the unread response, where it was asked)."""
    from kubetasks import kube

    try:
        token = kube.bearer_token()
    except Exception as e:  # noqa: BLE001 (an exec plugin that fails, a kubeconfig without a user)
        raise Unreachable(f"no credentials to ask the operator with: {e}") from e
    if token is None:
        raise Unreachable("the operator checks a bearer token, and your kubeconfig's user has none "
                          "(a client certificate?)")
    headers = {"Authorization": f"Bearer {token}", TOKEN_HEADER: f"Bearer {token}"}
    base = url or env.get(URL_ENV)
    where = f"the operator at {base}"
    try:
        if base:
            ca = env.get(CA_ENV)
            context = ssl.create_default_context(cafile=ca) if ca else None
            request = urllib.request.Request(base.rstrip("/") + path, headers={"Accept": "application/json", **headers})
            try:
                response = urllib.request.urlopen(request, timeout=timeout, context=context)
                return response.status, response, where
            except urllib.error.HTTPError as e:
                return e.code, e, where
        svc_ns, service = service_of(env.get(SERVICE_ENV) or DEFAULT_SERVICE)
        where = f"the operator's Service {svc_ns}/{service} (through the API server)"
        status, response = kube.service_proxy_open(svc_ns, service, path, headers={TOKEN_HEADER: f"Bearer {token}"},
                                                   timeout=(kube.CONNECT_TIMEOUT, timeout))
        return status, response, where
    except ValueError as e:
        raise Unreachable(str(e)) from e
    except Exception as e:  # noqa: BLE001 (refused, timed out, TLS: the operator is not there)
        raise Unreachable(f"could not reach {where}: {kube.error_line(e)}") from e


def ask_why(namespace: str, name: str, url: str | None = None,
            env: Mapping[str, str] = os.environ) -> Answer:
    """The operator's live answer for the run, or why there is none (never raises for the
    operator's absence: the caller falls back to the run's status)."""
    path = why_path(quote(namespace, safe=""), quote(name, safe=""))
    try:
        status, response, where = _open(path, url, env, TIMEOUT)
        with closing(response):
            body = response.read()
    except Unreachable as e:
        return Answer(None, str(e))
    except Exception as e:  # noqa: BLE001 (cut while reading)
        return Answer(None, f"could not read the operator's answer: {e}")
    if status != 200:
        return Answer(None, _problem(status, body, where))
    try:
        answer = json.loads(body)
    except ValueError:
        return Answer(None, f"{where} did not answer JSON")
    return Answer(answer if isinstance(answer, dict) else None, None if isinstance(answer, dict) else "not an object")


LOG_TIMEOUT = 60.0  # seconds a log's stream may stay silent
LOG_CHUNK = 256 * 1024


def stream_archived_log(namespace: str, name: str, attempt: int, write: Callable[[bytes], object],
                        url: str | None = None, env: Mapping[str, str] = os.environ) -> tuple[int, str]:
    """Streams the attempt's archived log from the operator into ``write``, chunk by chunk; returns
    (bytes, sha256 hex) as received. Unreachable when the operator cannot be asked or refuses (its
    message), LogCut when the stream is cut or does not match the digest the operator announced."""
    path = logs_path(quote(namespace, safe=""), quote(name, safe=""), attempt)
    status, response, where = _open(path, url, env, LOG_TIMEOUT)
    with closing(response):
        if status != 200:
            raise Unreachable(_problem(status, response.read(), where))
        expected = response.headers.get(SHA256_HEADER)
        digest, size = hashlib.sha256(), 0
        try:
            while chunk := response.read(LOG_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                write(chunk)
        except Exception as e:  # noqa: BLE001 (cut: a connection reset, a short body)
            raise LogCut(f"the log's stream from {where} was cut after {size} bytes: {e}") from e
    if expected and digest.hexdigest() != expected:
        raise LogCut(f"the log from {where} is not the one archived: {size} bytes with sha256 {digest.hexdigest()[:12]}, "
                     f"expected sha256 {expected[:12]}")
    return size, digest.hexdigest()


class LogCut(Exception):
    """An archived log arrived cut or changed."""
