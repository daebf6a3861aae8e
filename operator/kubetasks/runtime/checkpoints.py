"""Step checkpoints: the records of completed steps, kept in the run's checkpoint ConfigMap.

The operator creates one ConfigMap per run (``<run>-steps``) and lets the run's pods get and patch
it, nothing else. Each completed step is one key, written with a JSON merge patch the moment the
step finishes, so concurrent writers never overwrite each other and a crash loses at most the
step that was running. The record format, shared with the operator, is in :mod:`kubetasks.protocol`.

A ConfigMap holds at most 1 MiB, so the limits are explicit: one record may take 256 KiB and the
whole ConfigMap (the payload, when it is there, included) 900 KiB. A step that would exceed them
fails with :class:`CheckpointTooLarge`; nothing is ever truncated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from kubetasks.protocol import (
    KEY_PREFIX, PAYLOAD_KEY, RECORD_LIMIT, SCOPE_SEPARATOR, STATUS_STEPS_LIMIT, TOTAL_LIMIT, Checkpoint,
    configmap_key, format_time, parse_checkpoints, steps_from_configmap,
)
from kubetasks.runtime.errors import CheckpointTooLarge, StepOutputUnavailable

if TYPE_CHECKING:
    from kubetasks.runtime.step_blobs import StepBlobs

log = logging.getLogger("kubetasks.runtime")

# Re-exported: the runtime's API, and where the operator imported them from before protocol had them.
__all__ = [
    "KEY_PREFIX", "RECORD_LIMIT", "SCOPE_SEPARATOR", "STATUS_STEPS_LIMIT", "TOTAL_LIMIT", "Checkpoint",
    "configmap_key", "format_time", "parse_checkpoints", "steps_from_configmap",
    "check_fits", "CheckpointStore", "MemoryStore", "ConfigMapStore", "Checkpoints",
]


def check_fits(data: Mapping[str, str], cm_key: str, value: str, step_key: str) -> None:
    """Raises :class:`CheckpointTooLarge` when ``value`` under ``cm_key`` would break a limit."""
    size = len(value.encode())
    if size > RECORD_LIMIT:
        raise CheckpointTooLarge(
            f"step {step_key!r}: its checkpoint is {size} bytes; the limit is {RECORD_LIMIT} (256 KiB) per step: "
            "store large results elsewhere and return a reference, or configure an object store (chart values "
            "storage.*): step outputs above its threshold then go there"
        )
    total = sum(len(k.encode()) + len(v.encode()) for k, v in data.items() if k != cm_key)
    total += len(cm_key.encode()) + size
    if total > TOTAL_LIMIT:
        payload = len(data.get(PAYLOAD_KEY, "").encode())
        of_which = f", the payload's {payload} included" if payload else ""
        raise CheckpointTooLarge(
            f"step {step_key!r}: its checkpoint ({size} bytes) would bring the run's checkpoints to {total} bytes"
            f"{of_which}; the limit is {TOTAL_LIMIT} (900 KiB) per run: store large results elsewhere and return "
            "a reference, or configure an object store (chart values storage.*): step outputs above its "
            "threshold then go there"
        )


# -- stores (I/O) -------------------------------------------------------------------------------------

class CheckpointStore(Protocol):
    """Where checkpoint data lives: ConfigMap data, key -> JSON text."""

    def load(self) -> dict[str, str]:
        """All data, read once when the first step runs."""
        ...

    def save(self, key: str, value: str, labels: Mapping[str, str] | None = None) -> None:
        """Writes one key, leaving the others as they are (and sets ``labels`` on the ConfigMap)."""
        ...


class MemoryStore:
    """A store in memory: for tests, and for running a task locally without a cluster."""

    def __init__(self, data: Mapping[str, str] | None = None) -> None:
        self.data: dict[str, str] = dict(data or {})
        self.loads = 0
        self.saves: list[str] = []  # keys, in the order they were written
        self.labels: dict[str, str] = {}

    def load(self) -> dict[str, str]:
        self.loads += 1
        return dict(self.data)

    def save(self, key: str, value: str, labels: Mapping[str, str] | None = None) -> None:
        self.saves.append(key)
        self.data[key] = value
        self.labels.update(labels or {})


class ConfigMapStore:
    """The run's checkpoint ConfigMap, read with GET and written with JSON merge patches."""

    def __init__(self, name: str, namespace: str, attempts: int = 6) -> None:
        self.name = name
        self.namespace = namespace
        self.attempts = attempts

    def _api(self) -> Any:
        from kubernetes.client import CoreV1Api

        from kubetasks.runtime.kube import api_client

        return CoreV1Api(api_client())

    def load(self) -> dict[str, str]:
        from kubernetes.client.exceptions import ApiException

        from kubetasks.runtime.kube import with_retries

        try:
            cm = with_retries(lambda: self._api().read_namespaced_config_map(self.name, self.namespace),
                              f"checkpoint ConfigMap {self.namespace}/{self.name}", self.attempts)
        except ApiException as e:
            if e.status == 404:
                raise RuntimeError(f"checkpoint ConfigMap {self.namespace}/{self.name} does not exist "
                                   "(the operator creates it before the first attempt)") from None
            raise
        return dict(cm.data or {})

    def save(self, key: str, value: str, labels: Mapping[str, str] | None = None) -> None:
        from kubetasks.runtime.kube import with_retries

        patch: dict[str, Any] = {"data": {key: value}}
        if labels:
            patch["metadata"] = {"labels": dict(labels)}
        # A step's work is done when we get here: retry transient API errors rather than lose it.
        with_retries(lambda: self._api().patch_namespaced_config_map(
            self.name, self.namespace, patch, _content_type="application/merge-patch+json"),
            f"checkpoint ConfigMap {self.namespace}/{self.name}", self.attempts)


# -- the run's view of its checkpoints -----------------------------------------------------------------

def resumes(before: Checkpoint | None, after: Checkpoint) -> bool:
    """Whether writing ``after`` over ``before`` completes a sleep or wait that ended an earlier
    attempt's pod (one that ends where it began ended none)."""
    return (before is not None and before.kind in ("sleep", "wait") and not before.completed
            and after.completed and after.attempt > before.attempt)


class Checkpoints:
    """The checkpoints of one attempt: loaded once (on first use, so tasks without steps never
    call the API), then kept in step with every write. Thread-safe."""

    def __init__(self, store: CheckpointStore, blobs: StepBlobs | None = None) -> None:
        self.store = store
        self.blobs = blobs  # step outputs in the object store (runtime.step_blobs), with a grant
        self._lock = threading.RLock()
        self._data: dict[str, str] | None = None
        self._records: dict[str, Checkpoint] = {}
        self.resumed: Callable[[Checkpoint], object] | None = None  # a wait that ended an earlier pod, done

    def _loaded(self) -> dict[str, str]:
        if self._data is None:
            self._data = dict(self.store.load())
            self._records = parse_checkpoints(self._data)
            if self._records:
                log.info("resuming with %d checkpointed step(s)", len(self._records))
        return self._data

    def get(self, scoped_key: str) -> Checkpoint | None:
        """The step's record; an output kept in the store is read (once) and verified."""
        with self._lock:
            self._loaded()
            record = self._records.get(scoped_key)
            if record is None or record.result_ref is None or record.result is not None:
                return record
            if self.blobs is None:
                raise StepOutputUnavailable(
                    f"step {scoped_key!r}: its output is in the object store ({record.result_ref.get('uri')}) and "
                    "this attempt has no grant to read it (an operator without a store that signs URLs)")
            record = replace(record, result=self.blobs.fetch(record))
            self._records[scoped_key] = record
            return record

    def used(self) -> int:
        """Bytes of data the ConfigMap holds (keys and values)."""
        with self._lock:
            return sum(len(k.encode()) + len(v.encode()) for k, v in self._loaded().items())

    def value(self, key: str) -> str | None:
        """The text under a key that is not a step's record (the run's metadata: runtime.metadata)."""
        with self._lock:
            return self._loaded().get(key)

    def save_value(self, key: str, value: str, labels: Mapping[str, str] | None = None) -> None:
        """Writes one key that is not a step's record (an attempt's result: runtime.results)."""
        with self._lock:
            data = self._loaded()
            if labels:
                self.store.save(key, value, labels)
            else:
                self.store.save(key, value)
            data[key] = value

    def put(self, record: Checkpoint) -> None:
        """Checks the limits, writes the record, then remembers it."""
        with self._lock:
            data = self._loaded()
            cm_key = configmap_key(record.key)
            if self.blobs is not None:
                record = self.blobs.keep(record, lambda text: check_fits(data, cm_key, text, record.key))
            value = record.encode()
            check_fits(data, cm_key, value, record.key)
            self.store.save(cm_key, value)
            data[cm_key] = value
            before, self._records[record.key] = self._records.get(record.key), record
        if self.resumed is not None and resumes(before, record):
            self.resumed(record)
