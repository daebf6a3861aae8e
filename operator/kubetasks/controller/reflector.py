"""Keeping a :class:`Store` in step with the API server, as client-go's Reflector does.

List (page by page), replace the store, then watch from the list's resourceVersion. A watch the
server ends, or one that goes quiet for too long (a stopped or partitioned API server), resumes
from the last version seen; 410 Gone, and every ``resync`` seconds, lists again and replaces the
store, which synthesizes deletes for whatever vanished meanwhile.

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
from typing import Any

from kubetasks import kube
from kubetasks.controller.store import Store

log = logging.getLogger(__name__)

WATCH_SECONDS = 300  # the server ends each watch after about this long (jittered, as client-go)
PAGE_SIZE = 500
MAX_BACKOFF = 30.0
DECODE_DEPTH = 25_000  # frames: JSON nested as deep as the API server takes, with room to spare
DECODE_STACK_BYTES = 32 * 2**20  # address space reserved, not memory used (10,000 levels take < 8 MiB)


class Reflector:
    def __init__(self, store: Store, resource: kube.Resource, namespace: str | None, label_selector: str,
                 loop: asyncio.AbstractEventLoop, resync_seconds: float = 300.0,
                 idle_seconds: float = 60.0) -> None:
        self.store = store
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.loop = loop
        self.resync_seconds = resync_seconds
        self.idle_seconds = idle_seconds
        self.synced = asyncio.Event()
        self.lists = 0  # full lists done, for tests and metrics
        self.on_relist: Callable[[], None] | None = None  # after each (re)list: client-go's resync
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
        version: str | None = None
        relist_at = 0.0
        while not self._stop.is_set():
            try:
                if version is None or time.monotonic() >= relist_at:
                    version = self._list()
                    relist_at = time.monotonic() + self.resync_seconds
                    failures = 0
                left = max(1, int(min(relist_at - time.monotonic(), WATCH_SECONDS * (1 + random.random()) / 2)))
                for type_, obj in kube.watch(self.resource, self.namespace, self.label_selector, version, left,
                                             idle_seconds=self.idle_seconds):
                    if self._stop.is_set():
                        return
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if type_ != "BOOKMARK":
                        self._deliver(self.store.event, type_, self.store.slim(obj))
                failures = 0
            except kube.Gone:
                log.info("%s: watch expired (410 Gone); listing again", self.resource.plural)
                version = None
            except Exception as e:  # a broken connection, a timeout, a hung or restarted server
                failures += 1
                delay = min(MAX_BACKOFF, 0.5 * 2 ** min(failures, 6)) * (0.5 + random.random() / 2)
                log.warning("%s: list/watch failed (%s: %s); retrying in %.1fs", self.resource.plural,
                            type(e).__name__, str(e)[:200], delay)
                self._stop.wait(delay)

    def _list(self) -> str:
        items, version = kube.list_all(self.resource, self.namespace, self.label_selector, PAGE_SIZE,
                                       self.store.slim)
        self._deliver(self._replace, items, version)
        return version

    def _deliver(self, fn: Callable[..., None], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    # On the loop -------------------------------------------------------------------------
    def _replace(self, items: list[dict[str, Any]], version: str) -> None:
        self.store.replace(items, self.namespace, version)
        self.lists += 1
        self.synced.set()
        if self.on_relist:
            self.on_relist()
