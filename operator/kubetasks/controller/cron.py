"""Cron: creating a Task's scheduled runs at their ticks (the decisions are in core.schedule).

A tick's run has a deterministic name (``<task>-<unix minutes>``), so a restarted operator finds
the run it made instead of making a second one. Anyone who may create TaskRuns can take that name
first, so a run found there stands for the tick only when it is the one this Task would have
made: controlled by the Task (its UID), with the tick's labels and annotation and the Task's
payload. Otherwise it is not adopted: a Warning Event names it, and the tick runs under a name
qualified by the Task's UID (``<task>-<uid8>-<minutes>``), deterministic too. When that one is
taken as well, the tick is skipped, with a Warning Event.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from kubetasks import kube
from kubetasks.api.common import API_VERSION
from kubetasks.api.task import Task, TaskStatus
from kubetasks.api.taskrun import Phase, TaskRunSpec
from kubetasks.api.times import parse_time
from kubetasks.controller.cache import Cache, uid_of
from kubetasks.controller.conflicts import cancel_run, decide_again
from kubetasks.controller.queue import WorkQueue
from kubetasks.core.children import controlled_by
from kubetasks.core.naming import (
    ANNOTATION_SCHEDULED_AT, LABEL_INSTANCE, LABEL_SCHEDULED, LABEL_TASK, instance_of, label_value, scheduled_run_name,
)
from kubetasks.core.schedule import plan_schedule, runs_to_prune

log = logging.getLogger(__name__)

Body = dict[str, Any]


def task_uid(task: Task) -> str:
    return str(task.metadata.get("uid") or "")


def render_scheduled_run(task: Task, name: str, tick: datetime) -> Body:
    """The run of ``tick``, controlled by its Task: the garbage collector removes a Task's scheduled
    runs with it, as it does a CronJob's Jobs, and a run that merely has the name is told apart."""
    spec: Body = {"taskRef": task.name}
    if task.spec.payload is not None:
        spec["payload"] = task.spec.payload
    owner = {"apiVersion": API_VERSION, "kind": "Task", "name": task.name, "uid": task_uid(task),
             "controller": True, "blockOwnerDeletion": False}
    labels = {LABEL_TASK: label_value(task.task_id), LABEL_SCHEDULED: "true"}
    instance = instance_of({"metadata": task.metadata})
    if instance:
        labels[LABEL_INSTANCE] = instance  # the Task's operator instance runs its ticks
    return {"apiVersion": API_VERSION, "kind": "TaskRun",
            "metadata": {"name": name, "namespace": task.metadata["namespace"],
                         "labels": labels,
                         "annotations": {ANNOTATION_SCHEDULED_AT: tick.isoformat()},
                         "ownerReferences": [owner]},
            "spec": spec}


def _spec(body: Body) -> Body | None:
    """The run's spec with its defaults, cancel aside (cancelling a run does not make it another's)."""
    try:
        return TaskRunSpec.model_validate(body.get("spec") or {}).model_dump(exclude={"cancel"})
    except ValidationError:
        return None


def scheduled_mismatch(existing: Body, wanted: Body) -> str | None:
    """Why ``existing``, the run that holds the name of ``wanted`` (a :func:`render_scheduled_run`),
    is not that tick's run of the Task; None when it is. One line for an Event, no payload quoted."""
    meta, want = existing.get("metadata") or {}, wanted["metadata"]
    if not controlled_by(existing, want["ownerReferences"][0]["uid"]):
        return "it is not controlled by this Task"
    labels = meta.get("labels") or {}
    if any(labels.get(k) != v for k, v in want["labels"].items()):
        return "it lacks the labels of this Task's scheduled runs"
    if (meta.get("annotations") or {}).get(ANNOTATION_SCHEDULED_AT) != want["annotations"][ANNOTATION_SCHEDULED_AT]:
        return "it is not scheduled at this tick"
    spec = _spec(existing)
    if spec is None or spec != _spec(wanted):
        return "its spec is not the Task's (taskRef, payload or an override differs)"
    return None


class Scheduler:
    def __init__(self, cache: Cache, task_queue: WorkQueue, run_queue: WorkQueue,
                 api: ModuleType | Any = kube) -> None:
        self.cache = cache
        self.task_queue = task_queue
        self.run_queue = run_queue
        self.api = api

    async def _call(self, fn: str, *args: Any) -> Any:
        return await asyncio.to_thread(getattr(self.api, fn), *args)

    async def __call__(self, task: Task, status: TaskStatus, now: datetime) -> TaskStatus:
        ns, uid = str(task.metadata["namespace"]), task_uid(task)
        # Only the runs this Task controls are its scheduled runs: a run that carries the label but
        # not the owner is someone else's, never counted, cancelled (Replace) or pruned.
        scheduled = [r for r in self.cache.runs_of_task(ns, task.name)
                     if (r["metadata"].get("labels") or {}).get(LABEL_SCHEDULED) == "true" and controlled_by(r, uid)]
        active = [r["metadata"]["name"] for r in scheduled
                  if not Phase((r.get("status") or {}).get("phase", "Pending")).finished]
        created = parse_time(task.metadata.get("creationTimestamp")) or now
        decision = plan_schedule(task.spec, task.name, status.last_schedule_time, created, now, active)
        due = decision.last_schedule_time if decision.last_schedule_time != status.last_schedule_time else None
        if due is not None and scheduled_run_name(task.name, due, uid) in active:
            # The due tick already runs under its qualified name (its plain name is squatted): that
            # run is this tick's, not another active one to wait for or cancel.
            qualified, plain = scheduled_run_name(task.name, due, uid), scheduled_run_name(task.name, due)
            decision = plan_schedule(task.spec, task.name, status.last_schedule_time, created, now,
                                     [plain if n == qualified else n for n in active])

        for name in decision.cancel:
            await self._cancel(ns, name)
        if decision.create and decision.run_name:
            # Created before lastScheduleTime is recorded: a restart in between finds the same
            # deterministic name taken (409) instead of creating the tick twice.
            made = await self._create_tick(task, decision.create, decision.run_name)
            if made:
                active = sorted({*active, made})
        new_tick = decision.last_schedule_time != status.last_schedule_time
        if decision.skip_reason and new_tick:
            await self._event(task, "Normal", "SkippedTick", decision.skip_reason)

        history = [(r["metadata"]["name"], (r.get("status") or {}).get("phase"),
                    parse_time((r.get("status") or {}).get("completionTime"))) for r in scheduled]
        for name in runs_to_prune(history, task.spec.successful_runs_history_limit, task.spec.failed_runs_history_limit):
            # Only the run seen finished: one re-created under its name meanwhile is not pruned (409).
            await self._call("delete", kube.TASKRUNS, ns, name, uid_of(self.cache.runs.get((ns, name))))

        if decision.requeue_at:
            self.task_queue.add_after((ns, task.name), decision.requeue_at)
        return status.model_copy(update={"last_schedule_time": decision.last_schedule_time,
                                         "next_schedule_time": decision.requeue_at,
                                         "active_runs": active})

    async def _cancel(self, ns: str, name: str) -> None:
        """Cancels the run that was seen active (Replace), only as it was seen (its uid and
        version): one re-created or changed meanwhile is a conflict, and the Task is decided again."""
        run = self.cache.runs.get((ns, name)) or {}
        uid = uid_of(run) or ""
        try:  # deleted, or another run under the name by now: nothing of the one seen to cancel
            await cancel_run(self._call, ns, name, uid, (run.get("metadata") or {}).get("resourceVersion"))
        except Exception as e:
            if kube.is_conflict(e):
                await decide_again(self.api, self.cache.runs, kube.TASKRUNS, (ns, name), uid)
            raise

    async def _create_tick(self, task: Task, tick: datetime, name: str) -> str | None:
        """Creates the run of ``tick``; the name of the run that stands for it, or None when both
        its names are held by runs not this Task's (the tick is skipped)."""
        ns = str(task.metadata["namespace"])
        qualified = scheduled_run_name(task.name, tick, task_uid(task))
        known = self.cache.runs.get((ns, qualified))
        # An earlier look at this tick found the plain name taken and made the qualified run: go
        # straight to it (verified below all the same), without a second Warning about the first.
        candidates = (qualified,) if known is not None and controlled_by(known, task_uid(task)) else (name, qualified)
        taken: list[str] = []
        for candidate in candidates:
            wanted = render_scheduled_run(task, candidate, tick)
            created, existing = await self._call("create_or_get", wanted)
            if existing is None:  # deleted between the conflict and the read: once more
                created, existing = await self._call("create_or_get", wanted)
            if created:
                return candidate
            why = scheduled_mismatch(existing, wanted) if existing is not None else "it keeps vanishing"
            if why is None:
                return candidate
            taken.append(f"{candidate} ({why})")
            log.warning("cron %s/%s: TaskRun %s holds the name of the tick at %s: %s", ns, task.name, candidate,
                        tick.isoformat(), why)
            if candidate == name:
                await self._event(task, "Warning", "TickNameTaken",
                                  f"TaskRun {name} holds the name of the tick at {tick.isoformat()} but is not this "
                                  f"Task's scheduled run: {why}. It is not adopted; the tick runs as {qualified}.")
        await self._event(task, "Warning", "SkippedTick",
                          f"skipped the tick at {tick.isoformat()}: both its names are held by runs that are not "
                          f"this Task's: {'; '.join(taken)}")
        return None

    async def _event(self, task: Task, type_: str, reason: str, message: str) -> None:
        body = self.cache.tasks.get((str(task.metadata["namespace"]), task.name))
        if not body:
            return
        try:
            await self._call("post_event", body, type_, reason, message)
        except Exception:  # an Event is a courtesy: never fail a tick over one
            log.warning("could not post event %s on Task %s", reason, task.name, exc_info=True)
