"""Payloads kept in the object store (TaskRun spec.payloadRef), on both sides of a run.

Reading (in the task pod): the operator mounts a presigned GET of the run's payload, with its
size and sha256, in the attempt's grant (protocol.GRANT_DIR, GRANT_PAYLOAD_*); the runtime
downloads it with plain HTTP and checks both before the task sees it. A blob missing from the
store or not the one uploaded fails the run for good (PayloadUnavailable), never a wrong value.

Uploading (``kubetasks run --payload-file``, ``trigger`` from a user's machine): a payload whose
JSON is over :data:`UPLOAD_ABOVE` is PUT to the operator's ``/payloads/<namespace>`` (reached as
``/results`` is: ``KUBETASKS_OPERATOR_URL`` or the API server's service proxy), which checks that
the caller may create TaskRuns there and answers its BlobRef for spec.payloadRef. An operator
without a store (501) leaves the payload inline, within the API server's limits.

A task pod holds no token the operator would honour for that and no store credentials: a payload
it triggers a child with stays inline, at most :data:`INLINE_LIMIT`, and a larger one is refused
with that limit named (:func:`inline_limit_error`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kubetasks import protocol
from kubetasks.api.storage import DEFAULT_THRESHOLD, BlobRef
from kubetasks.core.payload_refs import payloads_path
from kubetasks.runtime.errors import PermanentError
from kubetasks.runtime.results import PATIENCE, ResultUnavailable, _send, _with_retries

log = logging.getLogger("kubetasks.runtime")
UPLOAD_ABOVE = DEFAULT_THRESHOLD  # bytes of JSON above which a client uploads the payload (storage.threshold's default)
# What a TaskRun's spec.payload may hold: the API server refuses objects over about 1.5 MiB (etcd's
# request limit), and the rest of the TaskRun needs room too.
INLINE_LIMIT = 1024 * 1024


class PayloadUnavailable(PermanentError):
    """The run's payload could not be read as it was uploaded (missing, changed, no grant)."""


class PayloadTooLarge(PermanentError):
    """A payload over what the TaskRun can hold, with no way to the object store."""


@dataclass(frozen=True)
class PayloadGrant:
    url: str
    uri: str
    sha256: str
    size: int


def read_payload_grant(directory: str = protocol.GRANT_DIR) -> PayloadGrant | None:
    """The presigned GET of the run's payload, when the operator mounted one (spec.payloadRef)."""
    base = Path(directory)
    try:
        return PayloadGrant(url=(base / protocol.GRANT_PAYLOAD_URL).read_text().strip(),
                            uri=(base / protocol.GRANT_PAYLOAD_URI).read_text().strip(),
                            sha256=(base / protocol.GRANT_PAYLOAD_SHA256).read_text().strip(),
                            size=int((base / protocol.GRANT_PAYLOAD_SIZE).read_text().strip()))
    except (OSError, ValueError):
        return None


def fetch_payload(grant: PayloadGrant) -> str:
    """The payload's JSON text, its size and sha256 checked; PayloadUnavailable when it is missing
    or not the one uploaded. Errors that may pass (network, 5xx) are retried, then raised."""
    def get() -> bytes:
        try:
            return bytes(_send(urllib.request.Request(grant.url)).read())
        except urllib.error.HTTPError as e:
            if e.code in (403, 404):
                raise PayloadUnavailable(f"the payload {grant.uri} could not be read from the store (HTTP {e.code}: "
                                         "deleted behind the operator's back, or its grant expired)") from None
            raise
    data = _with_retries(get, f"downloading the payload {grant.uri}")
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != grant.size or digest != grant.sha256:
        raise PayloadUnavailable(f"the payload {grant.uri} is not the one uploaded: {len(data)} bytes with sha256 "
                                 f"{digest[:12]}, expected {grant.size} bytes with sha256 {grant.sha256[:12]}")
    return data.decode("utf-8")


def no_grant_error(namespace: str, run: str, ref: Any) -> PayloadUnavailable:
    uri = ref.get("uri") if isinstance(ref, dict) else ref
    return PayloadUnavailable(f"TaskRun {namespace}/{run}'s payload is in the object store ({uri}) and this attempt "
                              f"has no grant to read it ({protocol.GRANT_DIR}): the operator could not create it "
                              "(its chart needs create on Secrets with a store)")


def inline_limit_error(size: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the payload is {size} bytes of JSON; a task pod triggers runs with their payload in the TaskRun, at most "
        f"{INLINE_LIMIT} bytes (the API server's object limit): a pod cannot upload to the operator's object store. "
        "Pass a reference to the data (a step's output, an object you wrote) instead")


# -- uploading, from a user's machine -------------------------------------------------------------

def encoded(payload: Any) -> bytes:
    return protocol.encode_payload(payload).encode()


def upload_payload(namespace: str, data: bytes, patience: float = PATIENCE) -> BlobRef | None:
    """PUTs the payload's JSON bytes to the operator as the kubeconfig's user; its ref, or None
    when the operator has no store (501). PayloadTooLarge with the operator's message when it
    refuses or cannot be asked."""
    from kubetasks.runtime.operator_http import TRANSIENT, Unreachable, ask

    path = payloads_path(quote(namespace, safe=""))
    answered: list[tuple[int, bytes]] = []

    def put() -> bytes:
        try:
            reply = ask("PUT", path, data, {"Content-Type": "application/json"}, timeout=300.0)
        except Unreachable as e:
            raise PayloadTooLarge(f"the payload is {len(data)} bytes: over {UPLOAD_ABOVE} it is uploaded through "
                                  f"the operator, which could not be asked: {e}") from None
        with closing(reply.body):
            if reply.status in TRANSIENT:  # tried again
                raise urllib.error.HTTPError(reply.where, reply.status, reply.problem(), None, None)  # type: ignore[arg-type]
            if reply.status not in (200, 201, 501):
                raise PayloadTooLarge(f"the payload is {len(data)} bytes, over {UPLOAD_ABOVE}, and uploading it "
                                      f"failed: {reply.problem()}")
            answered.append((reply.status, reply.body.read()))
        return b""
    try:
        _with_retries(put, "uploading the payload to the operator", patience)
    except ResultUnavailable as e:
        raise PayloadTooLarge(f"the payload is over {UPLOAD_ABOVE} bytes and could not be uploaded: {e}") from None
    status, body = answered[-1]
    return None if status == 501 else BlobRef.model_validate_json(body)


def in_task_pod() -> bool:
    return bool(os.environ.get(protocol.ENV_RUN) and os.environ.get("KUBERNETES_SERVICE_HOST"))


def place_payload(spec: dict[str, Any], namespace: str, in_pod: bool | None = None) -> None:
    """Moves a new TaskRun's ``spec.payload`` to the object store when its JSON is over
    :data:`UPLOAD_ABOVE` (``spec.payloadRef`` then names it); leaves it inline otherwise, or when
    the operator has no store and it fits the TaskRun. Raises PayloadTooLarge with the limit when
    it can go nowhere."""
    if spec.get("payload") is None:
        return
    data = encoded(spec["payload"])
    if len(data) <= UPLOAD_ABOVE:
        return
    if in_task_pod() if in_pod is None else in_pod:
        if len(data) > INLINE_LIMIT:
            raise inline_limit_error(len(data))
        return
    try:  # one try for a payload that fits the TaskRun anyway: it stays inline when the operator is not there
        ref = upload_payload(namespace, data, PATIENCE if len(data) > INLINE_LIMIT else 0.0)
    except Exception as e:  # noqa: BLE001 (refused, unreachable, no kubeconfig user to ask as)
        if len(data) > INLINE_LIMIT:
            if isinstance(e, PayloadTooLarge):
                raise
            raise PayloadTooLarge(f"the payload is {len(data)} bytes and could not be uploaded: {e}") from e
        log.warning("the payload (%d bytes) stays in the TaskRun: %s", len(data), e)
        return
    if ref is None:
        if len(data) > INLINE_LIMIT:
            raise PayloadTooLarge(f"the payload is {len(data)} bytes of JSON; without an object store a TaskRun holds "
                                  f"at most {INLINE_LIMIT} bytes of payload (the API server's object limit): configure "
                                  "a store (chart values storage.*), which lifts it, or pass a reference to the data")
        return
    del spec["payload"]
    spec["payloadRef"] = ref.to_api()
