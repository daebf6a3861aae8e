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
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubetasks.core.operator_address import CA_ENV, DEFAULT_SERVICE, SERVICE_ENV, URL_ENV, service_of
from kubetasks.runtime.operator_http import Reply, Unreachable, ask
from kubetasks.core.log_archive import SHA256_HEADER, logs_path
from kubetasks.core.why import why_path

__all__ = ["CA_ENV", "DEFAULT_SERVICE", "SERVICE_ENV", "URL_ENV", "Answer", "LogCut", "Unreachable", "ask_why", "service_of",
           "stream_archived_log"]
TIMEOUT = 5.0  # seconds: the live answer is a nicety; the status is the fallback


@dataclass(frozen=True)
class Answer:
    body: dict[str, Any] | None  # the operator's live answer (FlowControl.explain); None: see problem
    problem: str | None = None


def _open(path: str, url: str | None, env: Mapping[str, str], timeout: float) -> Reply:
    return ask("GET", path, headers={"Accept": "application/json"}, url=url, env=env, timeout=timeout)


def ask_why(namespace: str, name: str, url: str | None = None,
            env: Mapping[str, str] = os.environ) -> Answer:
    """The operator's live answer for the run, or why there is none (never raises for the
    operator's absence: the caller falls back to the run's status)."""
    path = why_path(quote(namespace, safe=""), quote(name, safe=""))
    try:
        reply = _open(path, url, env, TIMEOUT)
        with closing(reply.body):
            if reply.status != 200:
                return Answer(None, reply.problem())
            body = reply.body.read()
    except Unreachable as e:
        return Answer(None, str(e))
    except Exception as e:  # noqa: BLE001 (cut while reading)
        return Answer(None, f"could not read the operator's answer: {e}")
    where = reply.where
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
    reply = _open(path, url, env, LOG_TIMEOUT)
    response, where = reply.body, reply.where
    with closing(response):
        if reply.status != 200:
            raise Unreachable(reply.problem())
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
