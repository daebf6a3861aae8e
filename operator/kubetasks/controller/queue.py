"""A work queue in the manner of client-go's: keys, not events.

A key (namespace, name) is queued at most once, never processed by two workers at once, and
re-queued when it was added again while being processed. The reconciler returns when to look at
the key again (a datetime or seconds, as controller-runtime's ``Result{RequeueAfter}``), or
raises :class:`Requeue` for an expected wait; any other exception retries the key with
exponential backoff. ``add_after`` wakes a key at a time without a sleeping handler.

The queue knows when it last made progress, so liveness can tell a stuck operator (items
waiting, none done for a while: every worker hung) from an idle one. Its clock starts when its
workers do: keys queued while the informers still list (a standby promoted after minutes, lists
that take minutes) are waiting for the workers to exist, not for hung ones.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Generic, TypeVar

from kubetasks.informer.reflector import seen_at

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
When = datetime | float | None
# In a reconcile: when (time.monotonic()) the event or timer that woke its key came: a watch
# event from when the reflector read it (before the hand-off to the loop), else when it was queued.
WOKEN_AT: ContextVar[float] = ContextVar("woken_at", default=0.0)


class Requeue(Exception):
    """Look at this key again after ``delay`` seconds: an expected wait, not a failure."""

    def __init__(self, delay: float, why: str) -> None:
        super().__init__(why)
        self.delay = delay


class WorkQueue(Generic[K]):
    def __init__(self, name: str, reconcile: Callable[[K], Awaitable[When]], workers: int = 8) -> None:
        self.name = name
        self._reconcile = reconcile
        self._workers = workers
        # (0 for a first-come key, 1 for the rest; order of adding; key): see add(first=True)
        self._queue: asyncio.PriorityQueue[tuple[int, int, K]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._first: set[K] = set()  # queued keys with a first-come entry
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[K, int] = {}
        self._woken: dict[K, float] = {}  # key -> when it was first added since a worker last took it
        self._tasks: list[asyncio.Task[None]] = []
        self.last_progress: float | None = None  # when a worker last finished a key; None until started

    def __len__(self) -> int:
        return len(self._queued)

    def stalled(self, seconds: float) -> bool:
        """Keys are waiting and no worker has finished one for ``seconds`` (since the workers
        started, at first): no verdict before they start."""
        if self.last_progress is None:
            return False
        return bool(self._queued) and time.monotonic() - self.last_progress > seconds

    def add(self, key: K, first: bool = False) -> None:
        """Queues the key. ``first``: ahead of the keys queued without it (a new run, whose Job
        waits on this reconcile, before status updates of runs already going)."""
        self._woken.setdefault(key, seen_at() or time.monotonic())
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued or (first and key not in self._first):
            self._queued.add(key)  # a key already queued gets a second entry: the first taken wins
            self._queue.put_nowait((0 if first else 1, next(self._order), key))
            if first:
                self._first.add(key)

    def add_after(self, key: K, when: datetime | float) -> None:
        """Adds the key at ``when`` (a datetime, or seconds from now); the earliest wake-up wins."""
        delay = (when - datetime.now(timezone.utc)).total_seconds() if isinstance(when, datetime) else when
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop yet (informers fill the stores before the workers start)
            delay = 0
        if delay <= 0:
            self.add(key)
            return
        at = loop.time() + delay
        current = self._timers.get(key)
        if current and current[0] <= at:
            return
        if current:
            current[1].cancel()
        self._timers[key] = (at, loop.call_at(at, self._fire, key))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def start(self) -> None:
        self.last_progress = time.monotonic()
        self._tasks = [asyncio.create_task(self._work(), name=f"{self.name}-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, timer in self._timers.values():
            timer.cancel()

    async def _work(self) -> None:
        while True:
            _, _, key = await self._queue.get()
            if key not in self._queued:
                continue  # the later entry of a key that was taken at its first
            self._queued.discard(key)
            self._first.discard(key)
            self._processing.add(key)
            WOKEN_AT.set(self._woken.pop(key, time.monotonic()))
            try:
                when = await self._reconcile(key)
                self._failures.pop(key, None)
                if when is not None:
                    self.add_after(key, when)
            except asyncio.CancelledError:
                raise
            except Requeue as r:
                log.debug("%s: %s again in %.1fs: %s", self.name, key, r.delay, r)
                self.add_after(key, r.delay)
            except Exception:
                # Transient API errors and bugs alike: retry with backoff rather than drop the key.
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(0.5 * 2 ** (failures - 1), 60.0)
                log.exception("%s: reconciling %s failed (%d times); retrying in %.1fs",
                              self.name, key, failures, delay)
                self.add_after(key, delay)
            finally:
                self.last_progress = time.monotonic()
                self._processing.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)
            # A reconcile that never awaited, and a queue never empty, would otherwise keep this
            # worker from ever giving the event loop back (no I/O, no timers, no signals).
            await asyncio.sleep(0)


class TokenBucket:
    """At most ``rate`` actions a second on average, ``burst`` at once (client-go's rate limiter):
    for work that can wait and must not crowd the API server in a burst."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens, self._at = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
