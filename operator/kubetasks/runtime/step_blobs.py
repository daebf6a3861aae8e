"""Step outputs in the object store, from the task pod: PUT through the attempt's upload slots,
read back through the GETs the operator granted, verified (core.step_grants has the scheme).

The pod holds no store credentials: only the presigned URLs of its grant Secret, mounted at
protocol.GRANT_DIR. An output above the grant's threshold (or one the checkpoint ConfigMap cannot
hold) takes the next free slot; its record then holds a ref. On replay a ref is followed only
through a GET the operator signed for it at the attempt's start, and its bytes must have the ref's
size and sha256: a blob missing, changed, refused or not granted fails the attempt with
StepOutputUnavailable, never a wrong value.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubetasks import protocol
from kubetasks.api.storage import BlobRef
from kubetasks.api.times import parse_time
from kubetasks.core.result_refs import check_bytes
from kubetasks.core.step_grants import GETS_KEY, PUTS_KEY, SLOTS_ENV, SLOTS_VALUE, parse_gets, parse_puts
from kubetasks.protocol import RECORD_LIMIT, Checkpoint
from kubetasks.runtime.errors import CheckpointTooLarge, StepOutputUnavailable
from kubetasks.runtime.results import _send, _with_retries

Put = Callable[[str, bytes], None]  # (presigned URL, body)
Get = Callable[[str], "bytes | None"]  # presigned URL -> body, None when the store has no such blob


def http_put(url: str, data: bytes) -> None:
    """PUTs a step output to a presigned URL, retrying errors that may pass."""
    request = urllib.request.Request(url, data=data, method="PUT",
                                     headers={"Content-Type": "application/json", "Content-Length": str(len(data))})
    _with_retries(lambda: _send(request).read(), "uploading a step output")


class _Missing(Exception):
    """The store answered 404: not retried."""


def http_get(url: str) -> bytes | None:
    """GETs a presigned URL, retrying errors that may pass; None for a blob that is not there."""
    def get() -> bytes:
        try:
            return bytes(_send(urllib.request.Request(url)).read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise _Missing() from None
            raise
    try:
        return _with_retries(get, "downloading a step output")
    except _Missing:
        return None


@dataclass
class StepBlobs:
    """An attempt's step grants: upload slots taken in order, downloads by uri. Thread-safe."""

    puts: list[tuple[str, str]]
    gets: dict[str, dict[str, str]]
    threshold: int
    expires: datetime | None = None
    put: Put = http_put
    get: Get = http_get
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def keep(self, record: Checkpoint, fits: Callable[[str], None]) -> Checkpoint:
        """``record``, or the same with its result PUT to the store and a ref in its place: when
        its output is above the threshold, or would not fit the ConfigMap (``fits`` raises
        CheckpointTooLarge: the run's 900 KiB). Beyond the slots, an output that fits stays in the
        ConfigMap; one that does not is CheckpointTooLarge naming the chart value."""
        if record.kind != "run" or record.result_ref is not None:
            return record
        data = json.dumps(record.result, separators=(",", ":"), allow_nan=False).encode()
        small = len(data) <= min(self.threshold, RECORD_LIMIT)
        with self._lock:
            index = self._next
            slot_left = index < len(self.puts)
            if small or not slot_left:
                try:
                    fits(record.encode())
                    return record
                except CheckpointTooLarge:
                    if not slot_left:
                        raise CheckpointTooLarge(
                            f"step {record.key!r}: its output is {len(data)} bytes, too large for the checkpoint "
                            f"ConfigMap, and this attempt has used all {len(self.puts)} of its object-store slots "
                            f"for step outputs (chart value {SLOTS_VALUE}, the operator's {SLOTS_ENV}): raise it, "
                            "or keep fewer large step outputs per attempt") from None
                    # small, but the run's checkpoints are full: it goes to the store
            self._next = index + 1
        if self.expires is not None and self.clock() >= self.expires:
            raise CheckpointTooLarge(f"step {record.key!r}: its output is {len(data)} bytes and this attempt's "
                                     f"upload grant expired at {self.expires.isoformat()} (maxDuration plus a "
                                     "margin): it cannot be kept")
        uri, url = self.puts[index]
        self.put(url, data)
        return replace(record, result=None, result_ref=BlobRef.of(uri, data).to_api())

    def fetch(self, record: Checkpoint) -> Any:
        """The output a record's ref names, read through this attempt's grant and verified."""
        return fetch_output(record, self.gets, self.get)


def fetch_output(record: Checkpoint, gets: dict[str, dict[str, str]], get: Get) -> Any:
    key = record.key
    try:
        ref = BlobRef.model_validate(record.result_ref)
    except ValidationError:
        raise StepOutputUnavailable(f"step {key!r}: its checkpoint's resultRef is not a ref (uri, size, sha256)"
                                    ) from None
    grant = gets.get(ref.uri)
    if grant is None:
        raise StepOutputUnavailable(
            f"step {key!r}: its output is in the object store ({ref.uri}) and this attempt was granted no read "
            "of it (the operator grants the step outputs the run's checkpoints name when an attempt starts, and "
            "only with a store that signs URLs)")
    if "refused" in grant:
        raise StepOutputUnavailable(f"step {key!r}: the operator refused to grant its output: {grant['refused']}")
    data = get(grant.get("url", ""))
    problem = check_bytes(ref, data)
    if problem:
        raise StepOutputUnavailable(f"step {key!r}: its output {problem}")
    assert data is not None
    return json.loads(data)


def read_step_grant(directory: str = protocol.GRANT_DIR) -> StepBlobs | None:
    """The attempt's step grants, when the operator mounted them (it has a store that signs)."""
    base = Path(directory)
    try:
        puts = parse_puts((base / PUTS_KEY).read_text())
        gets = parse_gets((base / GETS_KEY).read_text())
        threshold = int((base / protocol.GRANT_THRESHOLD).read_text().strip() or 0)
        expires_text = (base / protocol.GRANT_EXPIRES).read_text().strip()
    except (OSError, ValueError):
        return None
    return StepBlobs(puts, gets, threshold, parse_time(expires_text) if expires_text else None)
