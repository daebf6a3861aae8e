"""Payloads kept in the object store (TaskRun spec.payloadRef): which refs the operator follows,
who may upload one, and which uploaded payloads the sweep collects.

A payload over the store's threshold is uploaded before its run exists (the operator's
``PUT /payloads/<namespace>``, by a caller who may create TaskRuns there) and kept
content-addressed at ``payloads/<namespace>/<sha256>`` (api.storage.payload_blob_path). A TaskRun
names it in ``spec.payloadRef``; anyone who may create a TaskRun writes that ref, so the operator
follows it only to its own namespace's payloads, by the digest it names: never another namespace's
payload, never a run's blobs, never another store. Its task's pod reads it through a presigned GET
in its attempt's grant (protocol.GRANT_PAYLOAD_*), never with the store's credentials.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from kubetasks.api.storage import PAYLOADS, BlobRef, payload_blob_path
from kubetasks.api.taskrun import TaskRun
from kubetasks.core.metrics_access import Verdict, access_verdict
from kubetasks.core.trigger_policy import Refusal

PAYLOADS_PREFIX = "/payloads/"  # PUT /payloads/<namespace> on the operator's metrics port
UPLOAD_VERB = "create"  # the caller must be allowed to create TaskRuns in the namespace
INVALID_PAYLOAD_REF = "InvalidPayloadRef"
PAYLOAD_UNAVAILABLE = "PayloadUnavailable"
DEFAULT_MAX_UPLOAD = 64 * 1024 * 1024  # bytes (chart: storage.maxPayloadBytes)


def payloads_path(namespace: str) -> str:
    return f"{PAYLOADS_PREFIX}{namespace}"


def ref_path(ref: BlobRef, namespace: str, store_url: str | None) -> tuple[str | None, str | None]:
    """(the path below the store's prefix, None) when the operator may read ``ref`` as a payload of
    a run in ``namespace``; (None, why not) otherwise. Pure: the digest in the path must be the
    ref's own, so a ref names exactly the bytes that were uploaded under it."""
    if store_url is None:
        return None, (f"the payload is kept by reference ({ref.uri}), and this operator has no object store: "
                      "configure one (chart values storage.*) or put the payload in spec.payload")
    path = payload_blob_path(namespace, ref.sha256)
    if ref.uri != f"{store_url}/{path}":
        return None, (f"spec.payloadRef names {ref.uri[:300]!r}, which is not a payload of the namespace {namespace!r} "
                      f"in this operator's store (expected {store_url}/{path}): refused, not read")
    return path, None


def payload_refusal(run: TaskRun, store_url: str | None, uses_runtime: bool) -> Refusal | None:
    """Why a run's payloadRef must not be followed (before its first attempt); None when it may."""
    ref = run.spec.payload_ref
    if ref is None:
        return None
    if run.spec.payload is not None:
        return Refusal(INVALID_PAYLOAD_REF, "set spec.payload or spec.payloadRef, not both")
    _, problem = ref_path(ref, run.namespace, store_url)
    if problem:
        return Refusal(INVALID_PAYLOAD_REF, problem)
    if not uses_runtime:
        return Refusal(INVALID_PAYLOAD_REF, f"the payload is kept in the object store ({ref.size} bytes): it reaches "
                                            "`entrypoint` tasks only, and this Task runs a `command`")
    return None


def missing_refusal(ref: BlobRef, found_size: int | None) -> Refusal | None:
    """The run's payload blob, checked before its first attempt: ``found_size`` None when the store
    has no such blob."""
    if found_size is None:
        return Refusal(PAYLOAD_UNAVAILABLE, f"the payload {ref.uri} is missing from the store (deleted behind the "
                                            "operator's back, or swept after storage.sweepGraceSeconds without a run "
                                            "naming it?): upload it again and create a new run")
    if found_size != ref.size:
        return Refusal(PAYLOAD_UNAVAILABLE, f"the payload {ref.uri} is {found_size} bytes in the store; spec.payloadRef "
                                            f"says {ref.size}: it is not the payload that was uploaded")
    return None


def upload_access(user: dict[str, Any], access_review: dict[str, Any], namespace: str) -> Verdict:
    """A SubjectAccessReview's status (``create`` TaskRuns in ``namespace``) for the uploader."""
    return access_verdict(user, access_review, f"create taskruns.kubetasks.io in the namespace {namespace!r}",
                          "only they may upload its payloads")


def payloads_to_delete(listing: Iterable[tuple[str, int, datetime]], named: Collection[str], now: datetime,
                       grace: timedelta, namespaces: Collection[str] = ()) -> list[str]:
    """The uploaded payloads (paths) no known run names (``named``: paths of the runs' payloadRefs,
    from a synced cache taken before the listing), written ``grace`` ago or earlier (an upload
    comes before its run), in a namespace the operator watches (``namespaces``; empty: all)."""
    gone = []
    for path, _, modified in listing:
        parts = path.split("/")
        if len(parts) != 3 or parts[0] + "/" != PAYLOADS or not parts[1] or not parts[2]:
            continue
        if path in named or now - modified < grace or (namespaces and parts[1] not in namespaces):
            continue
        gone.append(path)
    return sorted(gone)
