"""Debounce and overlap before a run's first attempt: the cache's runs of the key, the decisions of
core.debounce and core.overlap, and the writes they call for.

Called by the run reconciler once plan_run has decided a run that is not started, not cancelled and
whose Task is known may go on (its idempotency claim made: a Duplicate never gets here). Level-
triggered: every verdict is taken afresh from the cache on each reconcile, so a restart decides
the same. Cancelling older runs (overlap: cancelRunning) patches their ``spec.cancel`` with their
uid as a precondition (a run re-created under the name is not touched); the run reconciler's
cancel path then deletes their Jobs and says Cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from kubetasks.api.flow import WaitingFor
from kubetasks.api.taskrun import Phase
from kubetasks.controller.cache import Body, Cache, uid_of
from kubetasks.controller.conflicts import Call, cancel_run
from kubetasks.core import debounce, overlap
from kubetasks.core.plan import Event, Plan, World, plan_held

log = logging.getLogger(__name__)

PostEvent = Callable[[Body, Event], Awaitable[None]]


class Gates:
    def __init__(self, cache: Cache, call: Call, event: PostEvent) -> None:
        self.cache = cache
        self._call = call
        self._event = event

    async def admit(self, world: World, plan: Plan) -> Plan:
        """The plan to carry out for a run not yet started: ``plan`` (plan_run's), or one that holds
        it (Delayed: Debounced) or ends it (Superseded, Skipped, Cancelled)."""
        run, task = world.run, world.task
        assert task is not None
        ns, name = run.namespace, run.name
        if run.spec.debounce is not None:
            verdict = debounce.decide(self.cache.debounce_group(ns, run.spec.task_ref, run.spec.debounce.key),
                                      lambda n: self.cache.superseded_into(ns, n), name, world.now)
            if verdict is not None:
                log.debug("%s/%s: debounce %s (survivor %s, start %s)", ns, name, verdict.action, verdict.survivor,
                          verdict.start_at)
            if verdict is not None and verdict.action == "supersede":
                return plan_held(world, Phase.SUPERSEDED, debounce.SUPERSEDED, verdict.message,
                                 superseded_by=verdict.survivor)
            if verdict is not None and verdict.action == "wait":
                return plan_held(world, Phase.DELAYED, debounce.REASON, verdict.message, until=verdict.start_at,
                                 waiting_for=WaitingFor(reason=debounce.REASON, limit=verdict.limit))
        if task.spec.overlap == "queue":
            return plan  # the default: the limits decide (no look at the key's runs on this hot path)
        judged = overlap.decide(task.spec.overlap, self.cache.overlapping(ns, run.spec.task_ref,
                                                                          run.spec.concurrency_key or ""), name,
                                self._began)
        log.debug("%s/%s: overlap %s: %s", ns, name, task.spec.overlap, judged)
        if judged is not None and judged.judgement.action == "skip":
            return plan_held(world, Phase.SKIPPED, "Skipped", judged.message)
        if judged is not None and judged.judgement.action == "cancel":
            return plan_held(world, Phase.CANCELLED, "OverlapCancelled", judged.message)
        for older, uid in judged.cancel if judged is not None else ():
            await self._cancel(ns, older, uid, judged.message if judged else "")
        return plan

    def _began(self, body: Body) -> bool:
        """Started, by its status or by its Jobs (a status write that failed after the create, or
        a create in flight): what the cache knows, the same after a restart."""
        uid = uid_of(body) or ""
        return overlap.began(body) or bool(self.cache.jobs_of_run(uid)) or bool(self.cache.expected_attempts(uid))

    async def _cancel(self, ns: str, name: str, uid: str, why: str) -> None:
        """Cancels an older run of the key (overlap: cancelRunning), only the one seen (its uid)."""
        if not await cancel_run(self._call, ns, name, uid):
            return  # deleted, or another run now has the name: nothing of ours to cancel
        log.info("%s/%s: %s", ns, name, why)
        body = self.cache.runs.get((ns, name))
        if body is not None:
            await self._event(body, Event("Normal", "OverlapCancelled", why))
