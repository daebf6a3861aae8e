"""Event waits of a waiting run (``ctx.step.wait_for_event``), carried out (core.event_waits
decides).

The candidates come from the TaskEvents store, oldest first; each is read whole (the store keeps
no data of a dispatched event) until the wait's match accepts one: a wait with no match reads one.
The chosen event, or the timeout, is written into the run's checkpoint ConfigMap before the run
resumes, once: a record there is the choice, and nothing is chosen again.
"""

from __future__ import annotations

import logging
from datetime import datetime

from kubetasks import kube
from kubetasks.api.taskrun import TaskRun
from kubetasks.controller.cache import Cache
from kubetasks.controller.conflicts import Call
from kubetasks.core.event_waits import accepts, candidates, entry, event_waits, received, timed_out
from kubetasks.core.naming import checkpoint_name
from kubetasks.protocol import Checkpoint, configmap_key, parse_checkpoints

log = logging.getLogger(__name__)


class EventWaits:
    def __init__(self, cache: Cache, call: Call) -> None:
        self.cache = cache
        self.call = call

    async def pending(self, run: TaskRun, uid: str, attempt: int, now: datetime) -> tuple[list[str], datetime | None]:
        """The entries of the event waits still to come, and when the first of them times out.
        A wait that an event (or its timeout) ends has that written into the checkpoints first."""
        configmap = checkpoint_name(run.name, uid)
        records = parse_checkpoints(await self.call("get_configmap_data", run.namespace, configmap))
        waiting, check_at, decided = [], None, {}
        for wait in event_waits(records, attempt):
            outcome: Checkpoint | None = None
            for body in candidates(self.cache.events_named(run.namespace, wait.event), wait):
                whole = await self.call("get", kube.TASKEVENTS, run.namespace, body["metadata"]["name"])
                if whole is not None and accepts(wait, whole):
                    outcome = received(wait, whole, attempt, now)
                    break
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
        return waiting, check_at
