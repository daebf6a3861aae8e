"""A Task's status, derived from its runs, and what is wrong with a Task (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from kubetasks.api.machines import machine_label
from kubetasks.api.task import Task, TaskStatus
from kubetasks.api.taskrun import Phase
from kubetasks.api.times import parse_time
from kubetasks.core.conditions import condition, set_condition
from kubetasks.core.events import subscription_errors
from kubetasks.core.payload import payload_error, schema_error


INVALID_FILTER = "InvalidFilter"


class Problem(NamedTuple):
    """What is wrong with a Task: the Ready condition's reason and message."""

    reason: str  # InvalidPayloadSchema, InvalidSpec, INVALID_FILTER
    message: str

    @property
    def stops_schedule(self) -> bool:
        """A subscription's filter that does not compile skips that subscription only: the Task's
        cron ticks (and its other runs) go on."""
        return self.reason != INVALID_FILTER


def task_status(task: Task, runs: list[dict[str, Any]], now: datetime, problem: Problem | None) -> TaskStatus:
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
    ready = condition("Ready", "False" if problem else "True", problem.reason if problem else "Ready",
                      problem.message if problem else "the Task is valid", now, status.observed_generation)
    status.conditions = set_condition(status.conditions, ready)
    return status


def task_problem(task: Task) -> Problem | None:
    """What is wrong with a Task that the CRD schema could not catch. A payloadSchema that cannot
    be used (a remote $ref, a pattern RE2 refuses, not a JSON Schema at all) is one: its runs fail
    InvalidTask at once (see ``kubetasks.core.plan``)."""
    error = schema_error(task.spec.payload_schema)
    if error:
        return Problem("InvalidPayloadSchema", error)
    if task.spec.schedule:
        from kubetasks.core.schedule import validate_schedule

        error = validate_schedule(task.spec.schedule, task.spec.timezone)
        if error:
            return Problem("InvalidSpec", error)
        if task.spec.payload_schema is not None:
            error = payload_error(task.spec.payload_schema, task.spec.payload)
            if error:
                return Problem("InvalidSpec", f"spec.payload does not match spec.payloadSchema: {error}")
    filters = subscription_errors(task)
    if filters:
        return Problem(INVALID_FILTER, "; ".join(filters) + ". Events do not start this Task through that "
                                        "subscription until it is fixed (CEL over data, event and id).")
    return None
