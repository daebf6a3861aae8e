"""Results larger than the termination message: kept by reference, and read back verified.

Writing (in the task pod, when the attempt succeeds), by the result's compact JSON size:
- up to protocol.RESULT_LIMIT (3 KiB): inline in the termination message, as always;
- above the attempt's grant threshold (a store is configured: core.grants mounted a presigned PUT
  at protocol.GRANT_DIR): PUT to the store with plain urllib (the pod holds no store credentials);
- up to protocol.RESULT_CONFIGMAP_LIMIT (256 KiB): under ``result.attempt-<n>`` in the run's
  checkpoint ConfigMap, with a merge patch (the run's Role allows it);
- else: ResultTooLarge, saying to configure a store.
The report then carries a ref (uri, size, sha256) that the operator checks before the run succeeds.

Reading (RunHandle.wait): a ref's bytes are fetched and their size and sha256 compared with the
ref in the run's status (which only the operator writes) before the value is returned. A
ConfigMap-held result is read with the caller's own rights (a parent's pods: the Role the operator
gives them on the child). A store-held one: in a task pod, through the presigned GET the operator
grants the parent (core.naming.result_grant_name); elsewhere, from the operator's
``/results/<namespace>/<name>``, which checks that the caller may get the run.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kubetasks import protocol
from kubetasks.api.storage import CONFIGMAP_SCHEME, BlobRef
from kubetasks.api.times import parse_time
from kubetasks.core.naming import result_grant_name
from kubetasks.core.operator_address import RESULTS_PREFIX
from kubetasks.core.result_refs import check_bytes
from kubetasks.runtime.errors import ResultTooLarge

log = logging.getLogger("kubetasks.runtime")
TIMEOUT = 300.0  # seconds for one upload or download
PATIENCE = 180.0  # seconds an upload or download is retried for
GRANT_GRACE_SECONDS = 60.0  # the operator writes a parent's grant just after the child's outcome
CONFIGMAP_MARGIN = 16 * 1024  # the ConfigMap's metadata and the JSON around its data


class ResultUnavailable(RuntimeError):
    """A run's result could not be read as it was written (missing, changed, or not reachable)."""


@dataclass(frozen=True)
class Grant:
    put_url: str
    uri: str
    threshold: int
    expires: datetime | None


def read_grant(directory: str = protocol.GRANT_DIR) -> Grant | None:
    """The attempt's upload grant, when the operator mounted one (it has a store that signs)."""
    base = Path(directory)
    try:
        url = (base / protocol.GRANT_PUT_URL).read_text().strip()
        uri = (base / protocol.GRANT_URI).read_text().strip()
        threshold = int((base / protocol.GRANT_THRESHOLD).read_text().strip() or 0)
        expires_text = (base / protocol.GRANT_EXPIRES).read_text().strip()
    except (OSError, ValueError):
        return None
    return Grant(url, uri, threshold, parse_time(expires_text) if expires_text else None)


# -- writing -----------------------------------------------------------------------------------------

Save = Callable[[str, str], None]  # (ConfigMap key, value): the run's checkpoint ConfigMap
Put = Callable[[str, bytes], None]  # (presigned URL, body)


def keep_result(text: str, attempt: int, configmap: str | None, save: Save | None, used: Callable[[], int] = lambda: 0,
                grant: Grant | None = None, put: Put | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Keeps a result's JSON ``text`` (over RESULT_LIMIT) where the operator will look for it, and
    returns its ref. ``used()``: bytes the ConfigMap holds already (its checkpoints)."""
    data = text.encode()
    size = len(data)
    now = now or datetime.now(timezone.utc)
    if grant is not None and (size > grant.threshold or size > protocol.RESULT_CONFIGMAP_LIMIT):
        if grant.expires is not None and now >= grant.expires:
            raise ResultTooLarge(f"result is {size} bytes and its upload grant expired at {grant.expires.isoformat()} "
                                 "(maxDuration plus a margin): it cannot be kept")
        (put or http_put)(grant.put_url, data)
        return BlobRef.of(grant.uri, data).to_api()
    if size > protocol.RESULT_CONFIGMAP_LIMIT:
        raise ResultTooLarge(
            f"result is {size} bytes; without an object store a result is kept in the run's ConfigMap, at most "
            f"{protocol.RESULT_CONFIGMAP_LIMIT} bytes: configure a store (chart values storage.*) or return a reference")
    if configmap is None or save is None:
        raise ResultTooLarge(f"result is {size} bytes; the limit is {protocol.RESULT_LIMIT} without the run's "
                             "checkpoint ConfigMap (its Task's own serviceAccountName needs bindRunRole: true)")
    key = protocol.result_key(attempt)
    held = used()
    if held + len(key) + size > protocol.CONFIGMAP_DATA_LIMIT - CONFIGMAP_MARGIN:
        raise ResultTooLarge(f"result is {size} bytes and the run's ConfigMap holds {held} bytes of checkpoints: "
                             f"together over a ConfigMap's {protocol.CONFIGMAP_DATA_LIMIT}; configure a store "
                             "(chart values storage.*)")
    save(key, text)
    return BlobRef.of(f"{CONFIGMAP_SCHEME}:{configmap}/{key}", data).to_api()


def http_put(url: str, data: bytes) -> None:
    """PUTs ``data`` to a presigned URL, retrying errors that may pass (network, 5xx, 429)."""
    request = urllib.request.Request(url, data=data, method="PUT",
                                     headers={"Content-Type": "application/json", "Content-Length": str(len(data))})
    _with_retries(lambda: _send(request).read(), "uploading the result")


def _send(request: urllib.request.Request, context: ssl.SSLContext | None = None) -> Any:
    return urllib.request.urlopen(request, timeout=TIMEOUT, context=context)  # noqa: S310 (the operator's URL)


def _with_retries(call: Callable[[], bytes], what: str, patience: float = PATIENCE) -> bytes:
    """``call()``, retried with backoff for ``patience`` seconds on errors that may pass (network,
    429, 5xx): a store restarted while the attempt ends costs a wait, not the attempt."""
    delay, deadline = 0.5, time.monotonic() + patience
    while True:
        try:
            return call()
        except urllib.error.HTTPError as e:
            if e.code not in (429, 500, 502, 503, 504) or time.monotonic() >= deadline:
                raise ResultUnavailable(f"{what}: HTTP {e.code}: {e.read()[:300].decode('utf-8', 'replace')}") from None
            why = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            if time.monotonic() >= deadline:
                raise ResultUnavailable(f"{what}: {e}") from None
            why = str(e)
        log.warning("%s: %s; retrying in %.1fs", what, why, delay)
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


# -- reading -----------------------------------------------------------------------------------------

def result_of(namespace: str, name: str, status: dict[str, Any], metadata: dict[str, Any]) -> Any:
    """The result of a succeeded run: inline, or read from its ref and verified."""
    raw = status.get("resultRef")
    if raw is None:
        return status.get("result")
    ref = BlobRef.model_validate(raw)
    uid = str(metadata.get("uid", ""))
    if ref.uri.startswith(CONFIGMAP_SCHEME + ":"):
        data = _configmap_bytes(namespace, ref)
    elif os.environ.get(protocol.ENV_RUN) and os.environ.get("KUBERNETES_SERVICE_HOST"):
        data = _granted_bytes(namespace, name, uid, ref)
    else:
        data = _operator_bytes(namespace, name)
    problem = check_bytes(ref, data)
    if problem:
        raise ResultUnavailable(f"the result of TaskRun {namespace}/{name}: {problem}")
    assert data is not None
    return json.loads(data)


def _configmap_bytes(namespace: str, ref: BlobRef) -> bytes | None:
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    from kubetasks.runtime.kube import api_client, with_retries

    configmap, _, key = ref.uri[len(CONFIGMAP_SCHEME) + 1:].partition("/")
    try:
        found = with_retries(lambda: CoreV1Api(api_client()).read_namespaced_config_map(configmap, namespace),
                             f"ConfigMap {namespace}/{configmap}")
    except ApiException as e:
        if e.status == 404:
            return None
        raise ResultUnavailable(f"reading ConfigMap {namespace}/{configmap}: {e.status} {e.reason}") from None
    text = (found.data or {}).get(key)
    return None if text is None else str(text).encode()


def _granted_bytes(namespace: str, name: str, uid: str, ref: BlobRef) -> bytes:
    """In a parent's pod: the presigned GET the operator granted it (written just after the
    child's outcome: waited for a moment)."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    from kubetasks.runtime.kube import api_client, with_retries

    grant = result_grant_name(name, uid)
    deadline = time.monotonic() + GRANT_GRACE_SECONDS
    while True:
        try:
            found = with_retries(lambda: CoreV1Api(api_client()).read_namespaced_config_map(grant, namespace),
                                 f"ConfigMap {namespace}/{grant}")
            break
        except ApiException as e:
            if e.status not in (403, 404) or time.monotonic() >= deadline:
                raise ResultUnavailable(f"TaskRun {namespace}/{name}'s result is in the object store ({ref.uri}) "
                                        f"and no grant to read it is readable here (ConfigMap {grant}: "
                                        f"{e.status} {e.reason})") from None
            time.sleep(1.0)
    url = (found.data or {}).get("url") or ""
    return _with_retries(lambda: _send(urllib.request.Request(url)).read(), f"downloading {ref.uri}")


def _operator_bytes(namespace: str, name: str) -> bytes:
    """From a user's machine: the operator's /results endpoint, as the kubeconfig's user."""
    from kubetasks.runtime.operator_http import TRANSIENT, Unreachable, ask

    path = f"{RESULTS_PREFIX}{quote(namespace, safe='')}/{quote(name, safe='')}"

    def fetch() -> bytes:
        try:
            reply = ask("GET", path, timeout=TIMEOUT)
        except Unreachable as e:
            raise ResultUnavailable(f"TaskRun {namespace}/{name}'s result is in the object store, read through "
                                    f"the operator: {e}") from None
        with closing(reply.body):
            if reply.status in TRANSIENT:  # tried again
                raise urllib.error.HTTPError(reply.where, reply.status, reply.problem(), None, None)  # type: ignore[arg-type]
            if reply.status != 200:
                raise ResultUnavailable(reply.problem())
            return bytes(reply.body.read())
    return _with_retries(fetch, f"the result of {namespace}/{name} from the operator")
