"""Reconciling one Task: its status (counts, machine, last run) and its cron schedule."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from kubetasks import kube
from kubetasks.api.machines import machine_label
from kubetasks.api.task import Task, TaskStatus
from kubetasks.api.taskrun import Phase
from kubetasks.controller import metrics
from kubetasks.controller.cache import Cache, Key
from kubetasks.controller.runs import status_patch
from kubetasks.core.conditions import condition, get_condition, set_condition
from kubetasks.core.observe import parse_time
from kubetasks.core.payload import payload_error

log = logging.getLogger(__name__)


def task_status(task: Task, runs: list[dict[str, Any]], now: datetime, problem: str | None) -> TaskStatus:
    """The Task's status, derived from its runs (pure)."""
    status = task.status.model_copy(deep=True)
    phases = [(r.get("status") or {}).get("phase", "Pending") for r in runs]
    status.runs = len(runs)
    status.succeeded = phases.count(Phase.SUCCEEDED.value)
    status.failed = sum(1 for p in phases if p in (Phase.FAILED.value, Phase.TIMED_OUT.value))
    status.machine = machine_label(task.spec.machine)
    created = [parse_time(r["metadata"].get("creationTimestamp")) for r in runs]
    status.last_run_time = max((c for c in created if c), default=status.last_run_time)
    durations = []
    for r in runs:
        s = r.get("status") or {}
        start, end = parse_time(s.get("startTime")), parse_time(s.get("completionTime"))
        if start and end and s.get("phase") == Phase.SUCCEEDED.value:
            durations.append((end - start).total_seconds())
    status.average_duration_seconds = round(sum(durations) / len(durations), 3) if durations else None
    status.observed_generation = task.metadata.get("generation")  # type: ignore[assignment]
    ready = condition("Ready", "False" if problem else "True", "InvalidSpec" if problem else "Ready",
                      problem or "the Task is valid", now, status.observed_generation)
    status.conditions = set_condition(status.conditions, ready)
    return status


def task_problem(task: Task) -> str | None:
    """What is wrong with a Task that the CRD schema could not catch."""
    if task.spec.schedule:
        from kubetasks.core.schedule import validate_schedule

        error = validate_schedule(task.spec.schedule, task.spec.timezone)
        if error:
            return error
        if task.spec.payload_schema is not None:
            error = payload_error(task.spec.payload_schema, task.spec.payload)
            if error:
                return f"spec.payload does not match spec.payloadSchema: {error}"
    return None


class TaskReconciler:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.enqueue: Any = None
        self.schedule: Any = None  # cron scheduling, see kubetasks.controller.cron

    async def reconcile(self, key: Key) -> None:
        body = self.cache.tasks.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        started = asyncio.get_running_loop().time()
        try:
            task = Task.model_validate(body)
        except ValidationError as e:
            await asyncio.to_thread(kube.post_event, body, "Warning", "InvalidSpec", str(e)[:1024])
            return
        now = datetime.now(timezone.utc)
        problem = task_problem(task)
        status = task_status(task, self.cache.runs_of_task(*key), now, problem)
        if self.schedule and task.spec.schedule and not problem:
            status = await self.schedule(task, status, now)
        old = body.get("status") or {}
        patch = status_patch(old, status.to_api())
        if patch:
            updated = await asyncio.to_thread(kube.patch_status, "tasks", key[0], key[1], patch)
            if updated:
                self.cache.put_task(updated)
        before = get_condition(task.status.conditions, "Ready")
        if problem and (before is None or before.message != problem):
            await asyncio.to_thread(kube.post_event, body, "Warning", "InvalidSpec", problem)
        waiting = sum(1 for r in self.cache.runs_of_task(*key) if (r.get("status") or {}).get("phase") == "Queued")
        metrics.QUEUED_RUNS.labels(task.task_id).set(waiting)
        metrics.RECONCILE_SECONDS.labels("task").observe(asyncio.get_running_loop().time() - started)
