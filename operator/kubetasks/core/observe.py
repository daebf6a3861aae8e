"""What happened to an attempt, read off its Job and pod (plain dicts, as the API returns them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from kubetasks.core.naming import LABEL_ATTEMPT
from kubetasks.protocol import Report

State = Literal["active", "succeeded", "failed", "sleeping", "timed_out"]


@dataclass(frozen=True)
class AttemptObservation:
    attempt: int
    job_name: str
    state: State
    start_time: datetime | None = None
    completion_time: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None  # OOMKilled, Error, DeadlineExceeded, Completed
    report: Report | None = None
    message: str | None = None  # raw termination message of commands that do not speak the protocol


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def _terminated(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The termination record of the task container of the newest finished pod."""
    finished = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if cs.get("name") == "task" and term:
                finished.append(term)
    return max(finished, key=lambda t: str(t.get("finishedAt") or ""), default=None)


def observe_attempt(job: dict[str, Any], pods: list[dict[str, Any]]) -> AttemptObservation:
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    attempt = int((meta.get("labels") or {}).get(LABEL_ATTEMPT, "0"))
    term = _terminated(pods)
    exit_code = term.get("exitCode") if term else None
    report = Report.decode(term.get("message")) if term else None
    raw_message = term.get("message") if term and report is None else None
    base = dict(attempt=attempt, job_name=meta.get("name", ""), start_time=parse_time(status.get("startTime")),
                exit_code=exit_code, report=report, message=(raw_message or "").strip()[-1024:] or None)

    complete, failed = _condition(job, "Complete"), _condition(job, "Failed")
    if complete:
        end = parse_time(status.get("completionTime")) or parse_time(complete.get("lastTransitionTime"))
        state: State = "sleeping" if report and report.outcome == "sleeping" else "succeeded"
        return AttemptObservation(state=state, completion_time=end, reason="Completed", **base)
    if failed:
        end = parse_time(failed.get("lastTransitionTime"))
        if failed.get("reason") == "DeadlineExceeded":
            return AttemptObservation(state="timed_out", completion_time=end, reason="DeadlineExceeded", **base)
        reason = (term or {}).get("reason") or "Error"
        return AttemptObservation(state="failed", completion_time=end, reason=reason, **base)
    return AttemptObservation(state="active", **base)
