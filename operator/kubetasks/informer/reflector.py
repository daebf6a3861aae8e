"""Keeping a :class:`Store` in step with the API server, as client-go's Reflector does.

List (page by page), replace the store, then watch from the list's resourceVersion, and keep
watching: a watch the server ends (every ``watch_seconds`` to twice that, jittered), one that
breaks, and one that goes quiet for longer than ``idle_seconds`` (a stopped or partitioned API
server; above kube-apiserver's bookmark period, so a quiet but healthy watch is not cut) resume
from the last version seen, without a list. Only a watch that cannot resume lists again: 410
Gone, whether as an ERROR event or as the HTTP status, and a list whose continue token expired
while paging (then listed again in one request, as client-go's pager falls back to). A replace
synthesizes deletes for whatever vanished meanwhile.

A full re-list is otherwise a rare safety net (``relist_seconds``, hours; each reflector draws
its own time, so kinds and namespaces are not re-listed together): lists are what cost the API
server, pause this reflector's events, and hold two copies of the kind at the peak. Replaying
the store to the reconcilers (client-go's resync) needs no request: the operator does it.

The blocking client runs in a daemon thread of its own (a watch holds a connection for minutes,
which would starve a shared pool and delay exit); results are handed to the event loop, which is
the only place the store changes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from kubetasks import kube
from kubetasks.informer.store import Store

log = logging.getLogger(__name__)

PAGE_SIZE = 500
MAX_BACKOFF = 30.0
SHORT_WATCH_SECONDS = 1.0  # a watch that ends this fast with no event is a failure (client-go's check)
DECODE_DEPTH = 25_000  # frames: JSON nested as deep as the API server takes, with room to spare
DECODE_STACK_BYTES = 32 * 2**20  # address space reserved, not memory used (10,000 levels take < 8 MiB)


_seen_at = 0.0  # see seen_at()


def seen_at() -> float:
    """While a store applies a watch event (in its listeners, on the loop): when the reflector
    read that event off the wire (time.monotonic()), so that a latency can start where the
    operator first saw the change, before its hand-off to the loop. 0.0 at any other time."""
    return _seen_at


def _apply_event(fn: Callable[..., None], seen: float, *args: Any) -> None:
    global _seen_at
    _seen_at = seen
    try:
        fn(*args)
    finally:
        _seen_at = 0.0


@dataclass(frozen=True)
class Timing:
    """When a reflector lists and how long its watches last (seconds)."""

    relist_seconds: float = 6 * 3600  # the safety net: a full list after [T, 2T)
    watch_seconds: float = 300  # the server ends each watch after [T, 2T), client-go's minWatchTimeout
    idle_seconds: float = kube.WATCH_IDLE_SECONDS  # a watch silent this long (not even a bookmark) is reopened


class Reflector:
    def __init__(self, store: Store, resource: kube.Resource, namespace: str | None, label_selector: str,
                 loop: asyncio.AbstractEventLoop, timing: Timing = Timing(), api: ModuleType | Any = kube) -> None:
        self.store = store
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.loop = loop
        self.timing = timing
        self.api = api
        self.synced = asyncio.Event()
        self.lists = 0  # full lists done, for tests and metrics
        self.version: str | None = None  # the last resourceVersion seen; None: list next
        self.backoff_base = 0.5
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        where = self.namespace or "all namespaces"
        # The API server accepts JSON nested 10,000 deep (a payload, say); the decoder recurses
        # once per level. Too shallow a stack would make one such object stop the informer.
        sys.setrecursionlimit(max(sys.getrecursionlimit(), DECODE_DEPTH))
        size = threading.stack_size(DECODE_STACK_BYTES)
        try:
            self._thread = threading.Thread(target=self._run, name=f"reflector-{self.resource.plural}-{where}",
                                            daemon=True)
            self._thread.start()
        finally:
            threading.stack_size(size)

    def stop(self) -> None:
        self._stop.set()

    # In the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        unpaged = False  # the last list's continue token expired: list in one request
        relist_at = 0.0
        while not self._stop.is_set():
            listing = self.version is None or time.monotonic() >= relist_at
            try:
                if listing:
                    self.version = self._list(unpaged)
                    listing = unpaged = False
                    failures = 0
                    relist_at = time.monotonic() + self.timing.relist_seconds * (1 + random.random())
                if self._watch(relist_at):
                    failures = 0
                    continue
                failures += 1  # ended at once with nothing: a server that closes every watch
                error: Exception = RuntimeError("the watch ended at once with no event")
            except self.api.Gone as e:
                log.info("%s: watch expired (410 Gone: %s); listing again", self.resource.plural, e)
                self.version = None
                continue
            except Exception as e:
                if self.api.is_status(e, 410):  # a long list's continue token expired while paging
                    log.info("%s: %s expired (410); listing again%s", self.resource.plural,
                             "list" if listing else "watch", " in one request" if listing else "")
                    unpaged, self.version = listing, None
                    continue
                # A broken connection, a timeout, a hung or restarted server: resume from the
                # last version (or list again, if that is what failed).
                failures += 1
                error = e
            delay = min(MAX_BACKOFF, self.backoff_base * 2 ** min(failures, 6)) * (0.5 + random.random() / 2)
            log.warning("%s: list/watch failed (%s: %s); retrying in %.1fs", self.resource.plural,
                        type(error).__name__, str(error)[:200], delay)
            self._stop.wait(delay)

    def _list(self, unpaged: bool) -> str:
        self.lists += 1
        items, version = self.api.list_all(self.resource, self.namespace, self.label_selector,
                                           0 if unpaged else PAGE_SIZE, self.store.slim)
        self._deliver(self._replace, items, version)
        return str(version)

    def _watch(self, relist_at: float) -> bool:
        """Watches from ``self.version``, advancing it, until the watch ends; False when it
        ended at once with no event at all (not even a bookmark)."""
        assert self.version is not None
        began, events = time.monotonic(), 0
        seconds = min(relist_at - began, self.timing.watch_seconds * (1 + random.random()))
        for type_, obj in self.api.watch(self.resource, self.namespace, self.label_selector, self.version,
                                         max(1, int(seconds)), idle_seconds=self.timing.idle_seconds):
            if self._stop.is_set():
                return True
            events += 1
            self.version = (obj.get("metadata") or {}).get("resourceVersion") or self.version
            if type_ != "BOOKMARK":
                self._deliver(_apply_event, self.store.event, time.monotonic(), type_, self.store.slim(obj))
        return events > 0 or time.monotonic() - began >= SHORT_WATCH_SECONDS

    def _deliver(self, fn: Callable[..., None], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    # On the loop -------------------------------------------------------------------------
    def _replace(self, items: list[dict[str, Any]], version: str) -> None:
        self.store.replace(items, self.namespace, version)
        self.synced.set()
