"""``kubetasks dev``'s decisions (cli.dev carries them out): the instance a developer's runs belong
to, the environment of an attempt run as a local process, and what that process's end says.

A dev instance's runs are decided by the operator's own state machine (core.plan): retries, their
delays, durable sleeps, results and errors are the same. Only the way an attempt starts (a process
on the developer's machine, not a Job) and is observed (its exit code and report file, not a pod's
termination message) differ, and that is all this module knows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from kubetasks import protocol
from kubetasks.api.taskrun import Phase, TaskRun
from kubetasks.core.children import JOB_LOST
from kubetasks.core.naming import instance_of, label_value
from kubetasks.core.observe import PAUSED, AttemptObservation
from kubetasks.core.result_refs import REFUSED, UNREADABLE, Judged, check_bytes
from kubetasks.protocol import INVALID_REPORT, Report

# The image of a dev instance's Tasks: never pulled, since no operator runs a dev instance's runs.
# It is the version `kubectl get taskruns` shows for them ("dev").
DEV_IMAGE = "kubetasks-dev:dev"
NOT_IN_DEV = "NotSupportedInDev"
WAIT_NOT_IN_DEV = ("durable waits (children, tokens, events) are not supported by kubetasks dev yet: "
                   "deploy the task (kubetasks deploy) to run it")


def dev_instance(user: str) -> str:
    """The default instance of a developer's runs: ``dev-<user>``, as a label value."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", user).strip("-_.").lower() or "user"
    return label_value(f"dev-{cleaned}").rstrip("-_.")


def instance_problem(instance: str, operator_instance: str | None) -> str | None:
    """Why ``instance`` cannot be a dev instance; None when it can. ``operator_instance``:
    $KUBETASKS_INSTANCE_ID, an operator's, which would run its runs too."""
    if not _LABEL_VALUE.fullmatch(instance):
        return f"instance {instance!r} is not a label value (1 to 63 letters, digits, '-', '_' or '.')"
    if instance == operator_instance:
        return (f"instance {instance!r} is $KUBETASKS_INSTANCE_ID, an operator's: its runs would run twice; "
                "pick another with --instance")
    return None


_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def taken_tasks(live: Mapping[str, Mapping[str, Any] | None], instance: str) -> list[str]:
    """The Tasks (name -> the object in the cluster, None: not there) that another instance runs:
    applying the dev instance's would take them from their operator."""
    return [f"task/{name} (instance {instance_of(body) or 'default'})" for name, body in live.items()
            if body is not None and instance_of(body) != instance]


def attempt_env(job: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The environment the task container of ``job`` (core.render.render_job) gets, as values, and
    the names of the variables a local process cannot be given (``valueFrom``: a Secret's, a
    field's), which the caller reports."""
    [container] = [c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "task"]
    env: dict[str, str] = {}
    missing: list[str] = []
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "valueFrom" in var:
            missing.append(var["name"])
    return env, missing


def observe_process(attempt: int, job_name: str, started: datetime, ended: datetime, exit_code: int,
                    report_text: str | None, timed_out: bool = False) -> AttemptObservation:
    """What an attempt run as a process did, as core.observe says it of a Job's pod: its exit code
    (a signal's is 128 + its number) and the report the runtime wrote. A durable wait ends the
    run: nothing in dev mode would start the attempt that follows it."""
    report = Report.decode(report_text)
    code = 128 - exit_code if exit_code < 0 else exit_code
    base = AttemptObservation(attempt=attempt, job_name=job_name, state="failed", start_time=started,
                              completion_time=ended, exit_code=code, reason="Error", report=report)
    if timed_out:
        return replace(base, state="timed_out", reason="DeadlineExceeded")
    if code != protocol.EXIT_SUCCESS:
        return base
    if report is not None and report.outcome == "failed":  # exit 0 with a failure report: not the runtime's
        return replace(base, reason=INVALID_REPORT)
    if report is not None and report.outcome == "waiting":
        return replace(base, exit_code=protocol.EXIT_PERMANENT, reason=NOT_IN_DEV,
                       report=Report(outcome="failed", error_type=NOT_IN_DEV, error_message=WAIT_NOT_IN_DEV))
    state = PAUSED.get(report.outcome, "succeeded") if report is not None else "succeeded"
    return replace(base, state=state, reason="Completed")


def with_result_ref(obs: AttemptObservation, judged: Judged, data: bytes | None) -> AttemptObservation:
    """A succeeded attempt whose result is kept by reference (core.result_refs), once its place is
    judged and read (``data``: the bytes there, None: nothing): believed only when they match."""
    problem = judged.refusal if judged.place is None else check_bytes(judged.place.ref, data)
    if judged.place is not None and problem is None:
        return replace(obs, result_ref=judged.place.ref)
    reason = REFUSED if judged.place is None else UNREADABLE
    return replace(obs, state="failed", reason=reason,
                   report=Report(outcome="failed", error_type=reason, error_message=problem))


def lost_attempts(run: TaskRun, seen: Mapping[int, AttemptObservation]) -> dict[int, AttemptObservation]:
    """The attempt the status says runs when this process did not run it: a dev process stopped
    (Ctrl-C) while it ran, so it is failed as lost, and the Task's retry policy decides what follows."""
    current = run.status.attempt
    if run.status.phase != Phase.RUNNING or current < 1 or current in seen:
        return {}
    name = next((a.job_name for a in run.status.attempts if a.attempt == current), "")
    return {current: AttemptObservation(attempt=current, job_name=name, state="failed", reason=JOB_LOST,
                                        message=f"attempt {current}: the kubetasks dev process that ran it "
                                                "stopped before it ended")}

