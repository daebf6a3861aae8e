"""Reconciling one Task: its status (counts, machine, last run) and its cron schedule."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from kubetasks import kube
from kubetasks.api.task import Task
from kubetasks.controller import metrics
from kubetasks.controller.cache import Cache, Key, uid_of
from kubetasks.controller.conflicts import write_status
from kubetasks.controller.flow import FlowControl
from kubetasks.controller.queues import task_holders
from kubetasks.core.status_patch import status_patch
from kubetasks.core.conditions import get_condition
from kubetasks.core.retention import beyond_history
from kubetasks.core.task_status import task_problem, task_status

log = logging.getLogger(__name__)


class TaskReconciler:
    def __init__(self, cache: Cache, api: ModuleType | Any = kube) -> None:
        self.cache = cache
        self.api = api
        self.schedule: Any = None  # cron scheduling, see kubetasks.controller.cron
        self.flow: FlowControl | None = None  # who holds its concurrency slots (set by the operator)

    async def reconcile(self, key: Key) -> None:
        body = self.cache.tasks.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        started = asyncio.get_running_loop().time()
        try:
            task = Task.model_validate(body)
        except ValidationError as e:
            await asyncio.to_thread(self.api.post_event, body, "Warning", "InvalidSpec", str(e)[:1024])
            return
        now = datetime.now(timezone.utc)
        # Off the event loop: checking a payloadSchema is bounded, but a large one takes a while.
        problem = await asyncio.to_thread(task_problem, task)
        runs = self.cache.runs_of_task(*key)
        status = task_status(task, runs, now, problem)
        if self.flow is not None:
            status.holders = task_holders(self.flow, *key)
        if self.schedule and task.spec.schedule and (problem is None or not problem.stops_schedule):
            status = await self.schedule(task, status, now)
        patch = status_patch(body.get("status") or {}, status.to_api())
        if patch:
            # Onto this Task (its uid) as it was read: its cron ticks (lastScheduleTime) are decisions.
            await write_status(self.api, self.cache.tasks, kube.TASKS, key, uid_of(body) or "",
                               body["metadata"].get("resourceVersion"), patch)
        before = get_condition(task.status.conditions, "Ready")
        if problem and (before is None or before.message != problem.message):
            await asyncio.to_thread(self.api.post_event, body, "Warning", problem.reason, problem.message)
        for name in beyond_history(runs, task.spec.retention):
            run = self.cache.runs.get((key[0], name))
            await asyncio.to_thread(self.api.delete, kube.TASKRUNS, key[0], name, (run or {}).get("metadata", {}).get("uid"))
        metrics.QUEUED_RUNS.labels(task.task_id).set(
            sum(1 for r in runs if (r.get("status") or {}).get("phase") == "Queued"))
        metrics.RECONCILE_SECONDS.labels("task").observe(asyncio.get_running_loop().time() - started)
