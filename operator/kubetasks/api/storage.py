"""Where bulk data goes: a reference to a blob, and the layout of a run's blobs in the store.

What a run produces beyond a few KiB (its result, step outputs, a large payload, the whole log of
each attempt) is kept out of etcd: status and checkpoints hold a BlobRef, and the bytes live in the
run's ConfigMap (up to 256 KiB) or in the object store the operator is configured with.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import Field

from kubetasks.api.common import Model

SHA256_PATTERN = r"^[0-9a-f]{64}$"
# A blob named in a run's own ConfigMap: configmap:<configmap name>/<key>
CONFIGMAP_SCHEME = "configmap"
DEFAULT_THRESHOLD = 64 * 1024  # bytes; above it a value goes to the store (chart: storage.threshold)


class BlobRef(Model):
    """A value kept outside the object that names it, verified by its digest on every read."""

    uri: Annotated[str, Field(max_length=2048, description=(
        "Where the bytes are: s3://, gs://, az:// or file:// (the operator's store), or "
        "configmap:<name>/<key> (the run's own ConfigMap)."))]
    size: Annotated[int, Field(ge=0, description="Bytes.")]
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN, description="Hex digest of the bytes.")]

    @classmethod
    def of(cls, uri: str, data: bytes) -> BlobRef:
        return cls(uri=uri, size=len(data), sha256=hashlib.sha256(data).hexdigest())


# -- the layout of a run's blobs, below the store's prefix: everything of a run under one prefix,
#    so that a grant, a listing and a delete each name one prefix.

def run_prefix(namespace: str, run_uid: str) -> str:
    return f"runs/{namespace}/{run_uid}/"


def log_path(namespace: str, run_uid: str, attempt: int) -> str:
    return f"{run_prefix(namespace, run_uid)}attempt-{attempt}/log"


def result_path(namespace: str, run_uid: str, attempt: int) -> str:
    return f"{run_prefix(namespace, run_uid)}attempt-{attempt}/result"


def payload_path(namespace: str, run_uid: str) -> str:
    return f"{run_prefix(namespace, run_uid)}payload"


def step_path(namespace: str, run_uid: str, configmap_key: str) -> str:
    return f"{run_prefix(namespace, run_uid)}steps/{configmap_key}"


# -- payloads uploaded before their run exists (PUT /payloads/<namespace>): content-addressed per
#    namespace, named by the runs' spec.payloadRef, collected by the sweep once no run names them.

PAYLOADS = "payloads/"


def payload_blob_path(namespace: str, sha256: str) -> str:
    return f"{PAYLOADS}{namespace}/{sha256}"
