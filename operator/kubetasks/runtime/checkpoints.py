"""Step checkpoints: the records of completed steps, kept in the run's checkpoint ConfigMap.

The operator creates one ConfigMap per run (``<run>-steps``) and lets the run's pods get and patch
it, nothing else. Each completed step is one key, written with a JSON merge patch the moment the
step finishes, so concurrent writers never overwrite each other and a crash loses at most the
step that was running::

    step.<sanitised key>: {"key": "parent/child", "result": ..., "attempt": 2,
                           "durationSeconds": 0.41, "completedAt": "2025-01-01T00:00:00.000Z"}

Durable sleeps are records too, with ``"kind": "sleep"``, ``"wakeAt"`` and ``"startedAt"``;
``completedAt`` stays null until a later attempt finds the wake time passed.

A ConfigMap holds at most 1 MiB, so the limits are explicit: one record may take 256 KiB and all
records together 900 KiB. A step that would exceed them fails with :class:`CheckpointTooLarge`;
nothing is ever truncated. The operator reads the same data with :func:`steps_from_configmap`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from kubetasks.api.taskrun import StepRecord
from kubetasks.runtime.encoding import to_json_value
from kubetasks.runtime.errors import CheckpointTooLarge

log = logging.getLogger("kubetasks.runtime")

KEY_PREFIX = "step."
SCOPE_SEPARATOR = "/"
CONFIGMAP_KEY_LIMIT = 253
RECORD_LIMIT = 256 * 1024
TOTAL_LIMIT = 900 * 1024
STATUS_STEPS_LIMIT = 200  # TaskRunStatus.steps holds at most this many
_UNSAFE = re.compile(r"[^-._a-zA-Z0-9]")
_DIGEST = 10

T = TypeVar("T")


# -- keys and records (pure) ------------------------------------------------------------------------

def configmap_key(scoped_key: str) -> str:
    """The ConfigMap key of a step: readable, valid ([-._a-zA-Z0-9]+, at most 253 characters) and
    unique. Keys that had to be changed (nesting, other characters, length) get a short sha256 of
    the full key, so that ``a/b`` and ``a.b`` never share a record."""
    readable = _UNSAFE.sub("_", scoped_key.replace(SCOPE_SEPARATOR, "."))
    if readable == scoped_key and len(KEY_PREFIX) + len(readable) <= CONFIGMAP_KEY_LIMIT:
        return KEY_PREFIX + readable
    digest = hashlib.sha256(scoped_key.encode()).hexdigest()[:_DIGEST]
    room = CONFIGMAP_KEY_LIMIT - len(KEY_PREFIX) - _DIGEST - 1
    return f"{KEY_PREFIX}{readable[:room]}-{digest}"


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as Kubernetes writes times."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Checkpoint:
    """One step's record. ``result`` is plain JSON data."""

    key: str
    result: Any = None
    attempt: int = 0
    duration_seconds: float | None = None
    completed_at: datetime | None = None
    kind: str = "run"  # "run" | "sleep"
    wake_at: datetime | None = None
    started_at: datetime | None = None

    @property
    def completed(self) -> bool:
        return self.completed_at is not None

    def encode(self) -> str:
        body: dict[str, Any] = {
            "key": self.key,
            "result": to_json_value(self.result, f"the result of step {self.key!r}"),
            "attempt": self.attempt,
            "durationSeconds": None if self.duration_seconds is None else round(self.duration_seconds, 3),
            "completedAt": format_time(self.completed_at) if self.completed_at else None,
        }
        if self.kind != "run":
            body["kind"] = self.kind
        if self.wake_at is not None:
            body["wakeAt"] = format_time(self.wake_at)
        if self.started_at is not None:
            body["startedAt"] = format_time(self.started_at)
        return json.dumps(body, separators=(",", ":"), allow_nan=False)

    @classmethod
    def decode(cls, text: str) -> Checkpoint | None:
        """The record in a ConfigMap value; None when the value is not one (it is then ignored)."""
        try:
            body = json.loads(text)
            if not isinstance(body, dict) or not isinstance(body.get("key"), str):
                return None
            duration = body.get("durationSeconds")
            return cls(
                key=body["key"],
                result=body.get("result"),
                attempt=int(body.get("attempt") or 0),
                duration_seconds=float(duration) if duration is not None else None,
                completed_at=_parse_time(body.get("completedAt")),
                kind=str(body.get("kind") or "run"),
                wake_at=_parse_time(body.get("wakeAt")),
                started_at=_parse_time(body.get("startedAt")),
            )
        except (ValueError, TypeError):
            return None


def parse_checkpoints(data: Mapping[str, str] | None) -> dict[str, Checkpoint]:
    """Scoped step key -> record, from ConfigMap data. Keys not starting with ``step.`` and values
    that are not records are skipped: a lost record only means the step runs again."""
    records: dict[str, Checkpoint] = {}
    for cm_key, text in (data or {}).items():
        if not cm_key.startswith(KEY_PREFIX):
            continue
        record = Checkpoint.decode(text) if isinstance(text, str) else None
        if record is None:
            log.warning("ignoring unreadable checkpoint %s", cm_key)
            continue
        records[record.key] = record
    return records


def steps_from_configmap(data: Mapping[str, str] | None, limit: int = STATUS_STEPS_LIMIT) -> list[StepRecord]:
    """The steps to show in TaskRun status, oldest first; pending sleeps last. When there are more
    than ``limit`` (the status holds 200), the most recent are kept."""
    records = parse_checkpoints(data).values()
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    ordered = sorted(records, key=lambda r: (r.completed_at is None, r.completed_at or epoch, r.key))
    return [
        StepRecord(name=r.key, attempt=r.attempt, duration_seconds=r.duration_seconds, completed_at=r.completed_at)
        for r in ordered[-limit:] if limit > 0
    ]


def check_fits(data: Mapping[str, str], cm_key: str, value: str, step_key: str) -> None:
    """Raises :class:`CheckpointTooLarge` when ``value`` under ``cm_key`` would break a limit."""
    size = len(value.encode())
    if size > RECORD_LIMIT:
        raise CheckpointTooLarge(
            f"step {step_key!r}: its checkpoint is {size} bytes; the limit is {RECORD_LIMIT} (256 KiB) per step: "
            "store large results elsewhere and return a reference"
        )
    total = sum(len(k.encode()) + len(v.encode()) for k, v in data.items() if k != cm_key)
    total += len(cm_key.encode()) + size
    if total > TOTAL_LIMIT:
        raise CheckpointTooLarge(
            f"step {step_key!r}: its checkpoint ({size} bytes) would bring the run's checkpoints to {total} bytes; "
            f"the limit is {TOTAL_LIMIT} (900 KiB) per run: store large results elsewhere and return a reference"
        )


# -- stores (I/O) -------------------------------------------------------------------------------------

class CheckpointStore(Protocol):
    """Where checkpoint data lives: ConfigMap data, key -> JSON text."""

    def load(self) -> dict[str, str]:
        """All data, read once when the first step runs."""
        ...

    def save(self, key: str, value: str) -> None:
        """Writes one key, leaving the others as they are."""
        ...


class MemoryStore:
    """A store in memory: for tests, and for running a task locally without a cluster."""

    def __init__(self, data: Mapping[str, str] | None = None) -> None:
        self.data: dict[str, str] = dict(data or {})
        self.loads = 0
        self.saves: list[str] = []  # keys, in the order they were written

    def load(self) -> dict[str, str]:
        self.loads += 1
        return dict(self.data)

    def save(self, key: str, value: str) -> None:
        self.saves.append(key)
        self.data[key] = value


class ConfigMapStore:
    """The run's checkpoint ConfigMap, read with GET and written with JSON merge patches."""

    RETRY_STATUS = (429, 500, 502, 503, 504)

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

        try:
            cm = self._with_retries(lambda: self._api().read_namespaced_config_map(self.name, self.namespace))
        except ApiException as e:
            if e.status == 404:
                raise RuntimeError(f"checkpoint ConfigMap {self.namespace}/{self.name} does not exist "
                                   "(the operator creates it before the first attempt)") from None
            raise
        return dict(cm.data or {})

    def save(self, key: str, value: str) -> None:
        # A step's work is done when we get here: retry transient API errors rather than lose it.
        self._with_retries(lambda: self._api().patch_namespaced_config_map(
            self.name, self.namespace, {"data": {key: value}}, _content_type="application/merge-patch+json"))

    def _with_retries(self, call: Callable[[], T]) -> T:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        delay = 0.5
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
                transient = not isinstance(e, ApiException) or e.status in self.RETRY_STATUS
                if not transient or attempt == self.attempts:
                    raise
                log.warning("checkpoint ConfigMap %s/%s: %s; retrying in %.1fs", self.namespace, self.name,
                            getattr(e, "reason", None) or e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")


# -- the run's view of its checkpoints -----------------------------------------------------------------

class Checkpoints:
    """The checkpoints of one attempt: loaded once (on first use, so tasks without steps never
    call the API), then kept in step with every write. Thread-safe."""

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store
        self._lock = threading.RLock()
        self._data: dict[str, str] | None = None
        self._records: dict[str, Checkpoint] = {}

    def _loaded(self) -> dict[str, str]:
        if self._data is None:
            self._data = dict(self.store.load())
            self._records = parse_checkpoints(self._data)
            if self._records:
                log.info("resuming with %d checkpointed step(s)", len(self._records))
        return self._data

    def get(self, scoped_key: str) -> Checkpoint | None:
        with self._lock:
            self._loaded()
            return self._records.get(scoped_key)

    def put(self, record: Checkpoint) -> None:
        """Checks the limits, writes the record, then remembers it."""
        with self._lock:
            data = self._loaded()
            cm_key = configmap_key(record.key)
            value = record.encode()
            check_fits(data, cm_key, value, record.key)
            self.store.save(cm_key, value)
            data[cm_key] = value
            self._records[record.key] = record
