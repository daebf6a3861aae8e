"""Cron: creating a Task's scheduled runs at their ticks (the decisions are in core.schedule)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from kubetasks import kube
from kubetasks.api.common import API_VERSION
from kubetasks.api.task import Task, TaskStatus
from kubetasks.api.taskrun import Phase
from kubetasks.controller.cache import Cache
from kubetasks.controller.queue import WorkQueue
from kubetasks.core.naming import ANNOTATION_SCHEDULED_AT, LABEL_SCHEDULED, LABEL_TASK, label_value
from kubetasks.core.observe import parse_time
from kubetasks.core.schedule import plan_schedule, runs_to_prune

log = logging.getLogger(__name__)


def render_scheduled_run(task: Task, name: str, tick: datetime) -> dict[str, Any]:
    spec: dict[str, Any] = {"taskRef": task.name}
    if task.spec.payload is not None:
        spec["payload"] = task.spec.payload
    return {"apiVersion": API_VERSION, "kind": "TaskRun",
            "metadata": {"name": name, "namespace": task.metadata["namespace"],
                         "labels": {LABEL_TASK: label_value(task.task_id), LABEL_SCHEDULED: "true"},
                         "annotations": {ANNOTATION_SCHEDULED_AT: tick.isoformat()}},
            "spec": spec}


class Scheduler:
    def __init__(self, cache: Cache, task_queue: WorkQueue, run_queue: WorkQueue) -> None:
        self.cache = cache
        self.task_queue = task_queue
        self.run_queue = run_queue

    async def __call__(self, task: Task, status: TaskStatus, now: datetime) -> TaskStatus:
        ns = str(task.metadata["namespace"])
        scheduled = [r for r in self.cache.runs_of_task(ns, task.name)
                     if (r["metadata"].get("labels") or {}).get(LABEL_SCHEDULED) == "true"]
        active = [r["metadata"]["name"] for r in scheduled
                  if not Phase((r.get("status") or {}).get("phase", "Pending")).finished]
        created = parse_time(task.metadata.get("creationTimestamp")) or now
        decision = plan_schedule(task.spec, task.name, status.last_schedule_time, created, now, active)

        for name in decision.cancel:
            await asyncio.to_thread(kube.patch_spec, "taskruns", ns, name, {"spec": {"cancel": True}})
        if decision.create and decision.run_name:
            # Created before lastScheduleTime is recorded: a restart in between finds the same
            # deterministic name taken (409) instead of creating the tick twice.
            await asyncio.to_thread(kube.create, render_scheduled_run(task, decision.run_name, decision.create))
            active = sorted({*active, decision.run_name})
        new_tick = decision.last_schedule_time != status.last_schedule_time
        if decision.skip_reason and new_tick:
            body = self.cache.tasks.get((ns, task.name))
            if body:
                await asyncio.to_thread(kube.post_event, body, "Normal", "SkippedTick", decision.skip_reason)

        history = [(r["metadata"]["name"], (r.get("status") or {}).get("phase"),
                    parse_time((r.get("status") or {}).get("completionTime"))) for r in scheduled]
        for name in runs_to_prune(history, task.spec.successful_runs_history_limit, task.spec.failed_runs_history_limit):
            await asyncio.to_thread(kube.delete_custom, "taskruns", ns, name)

        if decision.requeue_at:
            self.task_queue.add_after((ns, task.name), decision.requeue_at)
        return status.model_copy(update={"last_schedule_time": decision.last_schedule_time,
                                         "next_schedule_time": decision.requeue_at,
                                         "active_runs": active})
