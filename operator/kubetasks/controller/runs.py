"""Reconciling one TaskRun: read the world from the cache, plan, carry out the plan."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from kubetasks import kube
from kubetasks.api.task import Task
from kubetasks.api.taskrun import Phase, TaskRun
from kubetasks.controller import metrics
from kubetasks.controller.cache import Cache, Key
from kubetasks.core.naming import LABEL_TASK
from kubetasks.core.observe import AttemptObservation, observe_attempt
from kubetasks.core.plan import HOLDS_SLOT, Event, Plan, World, plan_rejected, plan_run
from kubetasks.core.render import machine_for_attempt, render_job, render_run_identity

log = logging.getLogger(__name__)


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch from one status to another: fields that disappeared are set to null."""
    patch = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


def _created(body: dict[str, Any]) -> tuple[str, str]:
    return str(body["metadata"].get("creationTimestamp", "")), body["metadata"]["name"]


class RunReconciler:
    def __init__(self, cache: Cache, on_finished: Any) -> None:
        self.cache = cache
        self.on_changed = on_finished  # called with (namespace, task) when a run's phase changes
        self._task_locks: dict[Key, asyncio.Lock] = {}
        self.enqueue: Any = None  # set by the operator: WorkQueue of runs

    async def reconcile(self, key: Key) -> None:
        body = self.cache.runs.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        try:
            run = TaskRun.model_validate(body)
        except ValidationError as e:
            await asyncio.to_thread(kube.post_event, body, "Warning", "InvalidSpec", str(e).splitlines()[0])
            return
        if run.status.phase.finished and run.status.observed_generation == run.metadata.get("generation"):
            return
        task_body = self.cache.tasks.get((key[0], run.spec.task_ref))
        task = Task.model_validate(task_body) if task_body else None
        if task and task.spec.concurrency and run.status.attempt == 0:
            # Admission to a concurrency slot is serialised per Task, and the cache is updated
            # before the lock is released, so two workers never hand out the same slot.
            lock = self._task_locks.setdefault((key[0], run.spec.task_ref), asyncio.Lock())
            async with lock:
                await self._reconcile(key, run, task)
        else:
            await self._reconcile(key, run, task)

    async def _reconcile(self, key: Key, run: TaskRun, task: Task | None) -> None:
        started = asyncio.get_running_loop().time()
        world = World(now=datetime.now(timezone.utc), run=run, task=task,
                      attempts=await self._observe(key),
                      original=self._original(run),
                      slots_free=self._slots_free(run, task))
        if world.attempts and any(o.state != "active" for o in world.attempts.values()):
            world = await self._with_steps(world)
        plan = plan_run(world)
        await self._apply(key, run, task, plan)
        metrics.RECONCILE_SECONDS.labels("taskrun").observe(asyncio.get_running_loop().time() - started)

    async def _observe(self, key: Key) -> dict[int, AttemptObservation]:
        attempts = {}
        for job in self.cache.jobs_of_run(key):
            pods: list[dict[str, Any]] = []
            finished = any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
                           for c in (job.get("status") or {}).get("conditions") or [])
            if finished:
                uid = job["metadata"]["uid"]
                if uid not in self.cache.terminations:
                    self.cache.terminations[uid] = await asyncio.to_thread(
                        kube.list_pods, key[0], f"job-name={job['metadata']['name']}")
                pods = self.cache.terminations[uid]
            obs = observe_attempt(job, pods)
            attempts[obs.attempt] = obs
        return attempts

    async def _with_steps(self, world: World) -> World:
        from kubetasks.runtime.checkpoints import steps_from_configmap
        from kubetasks.core.naming import checkpoint_name

        data = await asyncio.to_thread(kube.get_configmap_data, world.run.namespace, checkpoint_name(world.run.name))
        if data is None:
            return world
        return World(**{**world.__dict__, "steps": steps_from_configmap(data)})

    def _original(self, run: TaskRun) -> TaskRun | None:
        """The earliest run of the same Task with the same idempotency key, when not this one."""
        if not run.spec.idempotency_key:
            return None
        same = [b for b in self.cache.runs_of_task(run.namespace, run.spec.task_ref)
                if b["spec"].get("idempotencyKey") == run.spec.idempotency_key]
        first = min(same, key=_created, default=None)
        if first is None or first["metadata"]["name"] == run.name:
            return None
        return TaskRun.model_validate(first)

    def _slots_free(self, run: TaskRun, task: Task | None) -> int | None:
        if task is None or not task.spec.concurrency or run.status.attempt:
            return None
        runs = self.cache.runs_of_task(run.namespace, run.spec.task_ref)
        holding = sum(1 for b in runs if (b.get("status") or {}).get("phase") in HOLDS_SLOT)
        waiting = sorted((b for b in runs if not (b.get("status") or {}).get("attempt")
                          and (b.get("status") or {}).get("phase", "Pending") in ("Pending", "Queued")),
                         key=_created)
        ahead = next((i for i, b in enumerate(waiting) if b["metadata"]["name"] == run.name), 0)
        return task.spec.concurrency - holding - ahead

    async def _apply(self, key: Key, run: TaskRun, task: Task | None, plan: Plan) -> None:
        body = self.cache.runs[key]
        old_status = body.get("status") or {}
        new_status = plan.status.to_api()
        patch = status_patch(old_status, new_status)
        if task and (body["metadata"].get("labels") or {}).get(LABEL_TASK) != task.task_id:
            await asyncio.to_thread(kube.patch_labels, "taskruns", key[0], key[1], {LABEL_TASK: task.task_id})
        if patch:
            updated = await asyncio.to_thread(kube.patch_status, "taskruns", key[0], key[1], patch)
            if updated is None:
                return
            self.cache.put_run(updated)  # write-through: the next admission decision sees it
        if plan.start_attempt and task:
            await self._start_attempt(run, task, plan)
        for job in plan.delete_jobs:
            await asyncio.to_thread(kube.delete_job, key[0], job)
        for event in plan.events:
            await self._event(body, event)
        if plan.requeue_at:
            self.enqueue.add_after(key, plan.requeue_at)
        metrics.attempts_finished(run.spec.task_ref, old_status, plan.status)
        old_phase = old_status.get("phase", Phase.PENDING)
        if plan.status.phase != old_phase:
            metrics.phase_changed(run.spec.task_ref, plan.status.phase, old_phase, plan.status)
            self.on_changed(key[0], run.spec.task_ref, key[1])

    async def _start_attempt(self, run: TaskRun, task: Task, plan: Plan) -> None:
        attempt = plan.start_attempt
        assert attempt is not None
        if attempt == 1 or not plan.status.attempts:
            for obj in render_run_identity(run, task):
                await asyncio.to_thread(kube.create, obj)
        previous = next((a.reason for a in plan.status.attempts if a.attempt == attempt - 1), None)
        job = render_job(run, task, attempt, machine_for_attempt(run, task, previous))
        try:
            if await asyncio.to_thread(kube.create, job):
                metrics.ATTEMPTS_STARTED.labels(task.task_id).inc()
        except Exception as e:
            if not kube.is_status(e, 400, 422):
                raise
            # The API server refused the Job (a bad quantity, say): a permanent, explained failure.
            message = f"the Job for attempt {attempt} was rejected: {getattr(e, 'body', e)}"[:1024]
            rejected = plan_rejected(run, plan.status, datetime.now(timezone.utc), message)
            await self._apply((run.namespace, run.name), run, None, rejected)

    async def _event(self, body: dict[str, Any], event: Event) -> None:
        try:
            await asyncio.to_thread(kube.post_event, body, event.type, event.reason, event.message)
        except Exception:  # an Event is a courtesy: never fail a reconcile over one
            log.warning("could not post event %s on %s", event.reason, body["metadata"].get("name"), exc_info=True)

