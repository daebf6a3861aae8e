"""``ctx.metadata``: a task's progress and facts about its run, shown in status.metadata.

The pod writes one document (core.metadata) into its own checkpoint ConfigMap: at most once per
METADATA_FLUSH_SECONDS (a timer writes what changed meanwhile) and when the attempt ends. The
operator copies it into the run's status, and folds what ``ctx.metadata.parent`` and
``ctx.metadata.root`` recorded into the ancestors' status. The document survives retries: a
later attempt starts from what the earlier ones wrote (an increment outside a step runs again).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kubetasks.core.metadata import (
    METADATA_LIMIT, MetadataDoc, MetadataError, appended, contribute, contribution_value, incremented, parse_doc,
    storable,
)
from kubetasks.protocol import METADATA_FLUSH_SECONDS, METADATA_KEY, METADATA_LABEL, TOTAL_LIMIT, metadata_digest
from kubetasks.runtime.checkpoints import Checkpoints, MemoryStore
from kubetasks.runtime.errors import InvalidMetadata, MetadataTooLarge

log = logging.getLogger("kubetasks.runtime")


class RunMetadata:
    """The attempt's metadata document: loaded on first use, written at most once a second.
    Thread-safe."""

    def __init__(self, checkpoints: Checkpoints, flush_seconds: float = METADATA_FLUSH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._checkpoints = checkpoints
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # one write at a time, in order
        self._doc: MetadataDoc | None = None
        self._dirty = False
        self._last_write = float("-inf")
        self._timer: threading.Timer | None = None

    def _loaded(self) -> MetadataDoc:
        if self._doc is None:
            self._doc = parse_doc(self._checkpoints.value(METADATA_KEY)) or MetadataDoc()
        return self._doc

    def get(self, scope: str, key: str) -> Any:
        with self._lock:
            doc = self._loaded()
            if scope == "own":
                return doc.own.get(key)
            return contribution_value(getattr(doc, scope).get(key))

    def update(self, scope: str, op: str, key: str, value: Any) -> None:
        """Applies one operation, or raises (and applies nothing) when it cannot be taken or would
        bring the document over 256 KiB; then writes it now or schedules the write."""
        if not isinstance(key, str) or not key:
            raise InvalidMetadata(f"a metadata key must be a non-empty string, not {key!r}")
        try:
            value = storable(json.loads(json.dumps(value, allow_nan=False)))
        except (TypeError, ValueError) as e:
            raise InvalidMetadata(f"metadata {key!r}: the value must be JSON data ({e})") from None
        with self._lock:
            doc = self._loaded()
            part = getattr(doc, scope)  # "own", "parent" or "root"
            try:
                if op == "set" and value is None:  # removes the key: status keeps no nulls (core.metadata)
                    part = {k: v for k, v in part.items() if k != key}
                elif scope == "own":
                    part = {**part, key: value if op == "set" else incremented(part.get(key), value, key)
                            if op == "inc" else appended(part.get(key), value, key)}
                else:
                    part = {**part, key: contribute(part.get(key), op, value, key)}
            except MetadataError as e:
                raise InvalidMetadata(str(e)) from None
            changed = replace(doc, **{scope: storable(part)})  # an increment may pass 64 bits
            size = len(changed.encode().encode())
            if size > METADATA_LIMIT:
                raise MetadataTooLarge(f"metadata {key!r}: the run's metadata would be {size} bytes; the limit is "
                                       f"{METADATA_LIMIT} (256 KiB): keep large data elsewhere")
            # It shares the checkpoint ConfigMap with the steps' records (protocol.TOTAL_LIMIT in all).
            old = self._checkpoints.value(METADATA_KEY)
            total = self._checkpoints.used() + size - (len(old.encode()) if old is not None else -len(METADATA_KEY))
            if total > TOTAL_LIMIT:
                raise MetadataTooLarge(f"metadata {key!r}: the run's checkpoints (its steps' records and its "
                                       f"metadata) would be {total} bytes; the limit is {TOTAL_LIMIT} (900 KiB)")
            self._doc, self._dirty = changed, True
            due = self._last_write + self._flush_seconds - self._clock()
            if due > 0:
                if self._timer is None:
                    self._timer = threading.Timer(due, self._flush_quietly)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self.flush()

    def flush(self) -> None:
        """Writes the document if it changed since the last write."""
        with self._writing:
            with self._lock:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                if not self._dirty or self._doc is None:
                    return
                text, self._dirty = self._doc.encode(), False
                self._last_write = self._clock()
            try:
                self._checkpoints.save_value(METADATA_KEY, text, {METADATA_LABEL: metadata_digest(text)})
            except BaseException:
                with self._lock:
                    self._dirty = True  # written next time
                raise

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception as e:  # a background write: the next one (or the attempt's end) tries again
            log.warning("could not write the run's metadata: %s", e)


class Metadata:
    """``ctx.metadata`` (and ``.parent``, ``.root``): set, increment, append and get keys of the
    run's status.metadata. ``parent`` and ``root`` add to the metadata of the run that triggered
    this one and of the root of its trigger chain (children incrementing their parent's
    ``progress``); their ``get`` tells what this run added."""

    def __init__(self, run: RunMetadata, scope: str = "own") -> None:
        self._run = run
        self._scope = scope

    @classmethod
    def in_memory(cls) -> Metadata:
        return cls(RunMetadata(Checkpoints(MemoryStore())))

    @property
    def parent(self) -> Metadata:
        return Metadata(self._run, "parent")

    @property
    def root(self) -> Metadata:
        return Metadata(self._run, "root")

    def set(self, key: str, value: Any) -> None:
        self._run.update(self._scope, "set", key, value)

    def increment(self, key: str, n: int | float = 1) -> None:
        self._run.update(self._scope, "inc", key, n)

    def append(self, key: str, value: Any) -> None:
        self._run.update(self._scope, "append", key, value)

    def get(self, key: str) -> Any:
        return self._run.get(self._scope, key)

    def flush(self) -> None:
        """Writes what changed now, rather than within a second (the attempt's end writes it too)."""
        self._run.flush()
