"""A result kept by reference: which refs the operator believes, and how a read is checked.

A task reports a large result as a ref (api.storage.BlobRef) in its termination message. The task
wrote that message, so nothing in it is trusted: a ref is believed only when it names this very
attempt's own place, which the operator computes itself from the run's namespace, name, uid and
attempt:

- ``configmap:<the run's checkpoint ConfigMap>/result.attempt-<n>`` (at most 256 KiB), or
- ``<the operator's store>/runs/<namespace>/<run uid>/attempt-<n>/result``.

A ref to anything else (another run's key or blob, another bucket, a path with ``..``) is refused
with the place it should have named; it is never followed. The bytes are then read and their
sha256 and size compared with the ref before the run succeeds, and again by every reader: a missing
or changed blob is a clear error, never a wrong value.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kubetasks.api.storage import CONFIGMAP_SCHEME, BlobRef, result_path
from kubetasks.core.naming import checkpoint_name
from kubetasks.protocol import RESULT_CONFIGMAP_LIMIT, result_key

REFUSED = "InvalidResultRef"  # the ref names a place that is not this attempt's own
UNREADABLE = "ResultUnreadable"  # its place holds nothing, or not the bytes the ref names


@dataclass(frozen=True)
class Place:
    """Where a believed ref's bytes are: a key of the run's ConfigMap, or a path in the store."""

    ref: BlobRef
    configmap: str | None = None
    key: str | None = None
    path: str | None = None  # below the store's url


@dataclass(frozen=True)
class Judged:
    place: Place | None = None
    refusal: str | None = None


def configmap_uri(configmap: str, key: str) -> str:
    return f"{CONFIGMAP_SCHEME}:{configmap}/{key}"


def judge_ref(raw: Any, namespace: str, run: str, run_uid: str, attempt: int, store_url: str | None) -> Judged:
    """The place ``raw`` (a ref as the task reported it) names, when it is this attempt's own."""
    try:
        ref = BlobRef.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors()[:3])
        return Judged(refusal=f"the task reported a resultRef that is not a ref ({problems})")
    own_configmap, own_key = checkpoint_name(run, run_uid), result_key(attempt)
    own_path = result_path(namespace, run_uid, attempt)
    if ref.uri == configmap_uri(own_configmap, own_key):
        if ref.size > RESULT_CONFIGMAP_LIMIT:
            return Judged(refusal=f"the task reported a result of {ref.size} bytes in its ConfigMap; "
                                  f"a ConfigMap holds at most {RESULT_CONFIGMAP_LIMIT}")
        return Judged(Place(ref, configmap=own_configmap, key=own_key))
    if store_url is not None and ref.uri == f"{store_url}/{own_path}":
        return Judged(Place(ref, path=own_path))
    where = configmap_uri(own_configmap, own_key) + (f" or {store_url}/{own_path}" if store_url else "")
    shown = ref.uri if len(ref.uri) <= 200 else ref.uri[:197] + "..."
    return Judged(refusal=f"the task reported its result at {shown!r}, which is not attempt {attempt}'s own "
                          f"place ({where}): refused, not read")


def check_bytes(ref: BlobRef, data: bytes | None) -> str | None:
    """Why ``data`` (None: nothing there) is not the blob ``ref`` names; None when it is."""
    if data is None:
        return f"{ref.uri} is missing (deleted behind the operator's back?)"
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != ref.size or digest != ref.sha256:
        return (f"{ref.uri} is not the blob that was written: {len(data)} bytes with sha256 {digest[:12]}, "
                f"expected {ref.size} bytes with sha256 {ref.sha256[:12]}")
    return None


def short(ref: BlobRef) -> str:
    """One line for people: size and digest."""
    return f"{ref.size:,} bytes, sha256 {ref.sha256}"
