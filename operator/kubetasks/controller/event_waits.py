"""Event waits of a waiting run (``ctx.step.wait_for_event``), carried out (core.event_waits
decides).

The candidates come from the TaskEvents store, oldest first; each is read whole (the store keeps
no data of a dispatched event) until the wait's match accepts one: a wait with no match reads one.
The chosen event, or the timeout, is written into the run's checkpoint ConfigMap before the run
resumes, once: a record there is the choice, and nothing is chosen again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import datetime

from kubetasks import kube
from kubetasks.api.taskrun import TaskRun
from kubetasks.controller.cache import Cache, uid_of
from kubetasks.controller.conflicts import Call
from kubetasks.core.event_waits import accepts, candidates, entry, event_waits, received, timed_out
from kubetasks.core.naming import checkpoint_name
from kubetasks.protocol import Checkpoint, configmap_key, parse_checkpoints

log = logging.getLogger(__name__)
REFUSALS_KEPT = 100_000


class EventWaits:
    def __init__(self, cache: Cache, call: Call) -> None:
        self.cache = cache
        self.call = call
        self._refused: OrderedDict[tuple[str, str, str], None] = OrderedDict()  # (run uid, step key, event uid)

    async def pending(self, run: TaskRun, uid: str, attempt: int, now: datetime, data: dict[str, str] | None,
                      ) -> tuple[list[str], datetime | None, bool]:
        """Of the run's checkpoints ``data``, the entries of the event waits still to come, when the
        first of them times out, and whether an outcome was written: a wait that an event (or its
        timeout) ends has that written into the checkpoints first."""
        configmap = checkpoint_name(run.name, uid)
        records = parse_checkpoints(data)
        waiting, check_at, decided = [], None, {}
        for wait in event_waits(records, attempt):
            outcome: Checkpoint | None = None
            for body in candidates(self.cache.events_named(run.namespace, wait.event), wait):
                seen = (uid, wait.key, uid_of(body) or "")
                if seen in self._refused:
                    continue
                whole = await self.call("get", kube.TASKEVENTS, run.namespace, body["metadata"]["name"])
                if whole is None or uid_of(whole) != uid_of(body):
                    continue  # deleted (retention) or sent again since: the watch tells
                if await asyncio.to_thread(accepts, wait, whole):  # CEL over up to 64 KiB: off the loop
                    outcome = received(wait, whole, attempt, now)
                    break
                self._refuse(seen)
            if outcome is None and wait.timeout_at is not None and wait.timeout_at <= now:
                outcome = timed_out(wait, attempt, now)
            if outcome is None:
                waiting.append(entry(wait.event, wait.key))
                check_at = min(filter(None, (check_at, wait.timeout_at)), default=None)
            else:
                decided[configmap_key(outcome.key)] = outcome.encode()
                log.info("%s/%s: step %s: %s", run.namespace, run.name, wait.key, outcome.result.get("phase"))
        if decided:
            await self.call("merge_patch", kube.CONFIGMAPS, run.namespace, configmap, {"data": decided})
        return waiting, check_at, bool(decided)

    def _refuse(self, seen: tuple[str, str, str]) -> None:
        self._refused[seen] = None
        while len(self._refused) > REFUSALS_KEPT:
            self._refused.popitem(last=False)
