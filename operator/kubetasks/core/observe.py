"""What happened to an attempt, read off its Job and pod (plain dicts, as the API returns them)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from kubetasks.api.storage import BlobRef
from kubetasks.api.taskrun import StepRecord
from kubetasks.api.times import parse_time
from kubetasks.core.naming import LABEL_ATTEMPT
from kubetasks.core.results import plain_result, runs_runtime
from kubetasks.protocol import INVALID_REPORT, Report

State = Literal["active", "succeeded", "failed", "sleeping", "waiting", "timed_out"]
PAUSED: dict[str, State] = {"sleeping": "sleeping", "waiting": "waiting"}  # report outcomes that end an attempt well


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
    dropped_result: str | None = None  # why a plain command's termination message is not its result
    result_ref: BlobRef | None = None  # the report's resultRef, once the operator read and verified it


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


@dataclass(frozen=True)
class StartProblem:
    """Why an attempt's container has not started: the pod's waiting reason (ImagePullBackOff,
    CreateContainerConfigError...), why it is not scheduled (Unschedulable), or what the pod's or
    Job's Events say (FailedCreatePodSandBox, PodNotCreated). ``permanent``: it cannot heal
    without a change to the Task (see :data:`PERMANENT`), so neither waiting nor a retry helps."""

    reason: str
    message: str
    permanent: bool = False


NEVER_STARTED = StartProblem("NotStarted", "its container was still being created when its time ran out")
# Waiting reasons of a container that is on its way: not a problem, however long they last.
_STARTING = (None, "ContainerCreating", "PodInitializing")
# Waiting reasons no wait and no retry can mend: the image name cannot be parsed, or it must not
# be pulled and is not on the node. Everything else may heal on its own (a registry back, a Secret
# created, a node added) and keeps the start deadline; PodNotCreated is permanent when its cause is
# a missing ServiceAccount (:func:`pod_not_created`).
PERMANENT = frozenset({"InvalidImageName", "ErrImageNeverPull"})
# Reasons that are one problem for a retry's comparison: kubelet alternates between them.
_SAME = {"ErrImagePull": "ImagePullBackOff", "CreateContainerError": "CreateContainerConfigError"}


def same_problem(a: str | None, b: str | None) -> bool:
    """Whether two start problems' reasons name the same trouble (ErrImagePull is ImagePullBackOff)."""
    return a is not None and b is not None and _SAME.get(a, a) == _SAME.get(b, b)


def started(pods: list[dict[str, Any]]) -> bool:
    """Whether the task container of any of the pods has run (or runs). A container killed before
    it ran is terminated too, but without a start time."""
    def ran(state: dict[str, Any]) -> bool:
        return "running" in state or bool((state.get("terminated") or {}).get("startedAt"))
    return any(ran(cs.get("state") or {}) or ran(cs.get("lastState") or {})
               for pod in pods for cs in (pod.get("status") or {}).get("containerStatuses") or []
               if cs.get("name") == "task")


def start_problem(pods: list[dict[str, Any]]) -> StartProblem | None:
    """What keeps the attempt's container from starting, or None (started, or starting normally)."""
    if started(pods):
        return None
    for pod in pods:
        status = pod.get("status") or {}
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if cs.get("name") == "task" and waiting.get("reason") not in _STARTING:
                reason = _reason(waiting["reason"])
                return StartProblem(reason, str(waiting.get("message") or ""), reason in PERMANENT)
        for c in status.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                return StartProblem(_reason(c.get("reason") or "Unschedulable"), str(c.get("message") or ""))
    return None


def _newest_warning(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    def when(e: dict[str, Any]) -> str:
        return str((e.get("series") or {}).get("lastObservedTime") or e.get("lastTimestamp") or e.get("eventTime")
                   or (e.get("metadata") or {}).get("creationTimestamp") or "")
    return max((e for e in events if e.get("type") == "Warning" and e.get("reason")), key=when, default=None)


def event_problem(events: list[dict[str, Any]]) -> StartProblem | None:
    """What a pod's Warning Events say keeps it from starting, when its container status does not:
    a sandbox that could not be created (FailedCreatePodSandBox), a volume that could not be
    mounted (FailedMount)... The newest Warning names it."""
    event = _newest_warning([e for e in events if _blocks_start(str(e.get("reason") or ""))])
    return StartProblem(_reason(event["reason"]), str(event.get("message") or "")) if event else None


# Warnings the pod's status says better: the scheduler's verdict is its PodScheduled condition (an
# old FailedScheduling outlives the pod's scheduling), a pull's is its waiting reason.
_SAID_BY_STATUS = frozenset({"FailedScheduling", "Failed", "BackOff"})


def _blocks_start(reason: str) -> bool:
    """A kubelet Warning that keeps a pod from starting (FailedCreatePodSandBox, FailedMount,
    FailedAttachVolume, NetworkNotReady...), not one it starts in spite of (MissingClusterDNS)."""
    return (reason.startswith("Failed") or reason == "NetworkNotReady") and reason not in _SAID_BY_STATUS


_NO_ACCOUNT = re.compile(r'serviceaccount "([^"]+)" not found', re.IGNORECASE)


def pod_not_created(job_name: str, events: list[dict[str, Any]], no_account: str | None = None) -> StartProblem:
    """Why the Job controller made no pod for a Job, from the Job's Events (FailedCreate) or the
    ServiceAccount its pods run as, found missing (``no_account``). A missing ServiceAccount is
    named, and permanent: the pod is refused until the Task names one that exists. Other
    refusals (a quota, a policy) may heal."""
    event = _newest_warning(events)
    said = str(event.get("message") or "") if event else ""
    found = _NO_ACCOUNT.search(said)
    account = found.group(1) if found else no_account
    if account:
        return StartProblem("PodNotCreated", f"ServiceAccount {account!r} does not exist: the Job controller "
                                             f"cannot create a pod for Job {job_name}" + (f" ({said})" if said else ""),
                            permanent=True)
    why = f": {said}" if said else f" (kubectl describe job {job_name} says why)"
    return StartProblem("PodNotCreated", f"the Job controller has not created a pod for Job {job_name}{why}")


def _reason(text: object) -> str:
    """A reason as a condition may carry it (CamelCase, no spaces)."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "", str(text))[:64].lstrip("0123456789_")
    return cleaned or "NotStarted"


def job_ending(job: dict[str, Any]) -> bool:
    """Whether the Job has failed a pod or is on its way to an end (its deadline passed, say):
    its pods are going away, so they no longer say anything about a start."""
    status = job.get("status") or {}
    return bool(status.get("failed") or _condition(job, "FailureTarget") or _condition(job, "SuccessCriteriaMet")
                or _condition(job, "Failed"))


def job_ready(job: dict[str, Any]) -> bool:
    """Whether the Job's container has started: a pod of it is ready or succeeded. (A failed
    pod says nothing: the Job's deadline fails pods that never started.)"""
    status = job.get("status") or {}
    return bool(status.get("ready") or status.get("succeeded") or _condition(job, "Complete"))


# The Job controller's label on each pod it makes (1.27+): the uid of the Job, not only its name.
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"


def succeeded_pod(job: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Job's pod that ended Succeeded, if any. An attempt's Job has one pod and backoffLimit 0
    (core.render), so that pod's success is the attempt's: the Job's Complete follows, a second
    or more later (the Job controller batches pod updates for a second, then writes its status
    three times under its client's rate limit). Only the Job's own pods count, matched by the uid
    their label carries: a deleted Job of the same name had pods of that name too."""
    uid = (job.get("metadata") or {}).get("uid")
    return next((p for p in pods if uid and ((p.get("metadata") or {}).get("labels") or {}).get(JOB_UID_LABEL) == uid
                 and (p.get("status") or {}).get("phase") == "Succeeded"), None)


def observe_attempt(job: dict[str, Any], pods: list[dict[str, Any]]) -> AttemptObservation:
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    attempt = int((meta.get("labels") or {}).get(LABEL_ATTEMPT, "0"))
    complete, failed = _condition(job, "Complete"), _condition(job, "Failed")
    succeeded = None if complete or failed else succeeded_pod(job, pods)  # over before its Job says so
    pods = [succeeded] if succeeded is not None else pods
    term = _terminated(pods)
    exit_code = term.get("exitCode") if term else None
    text = term.get("message") if term else None
    runtime = runs_runtime(pods)  # only the runtime's message is a Report; a plain command's is its result
    report = Report.decode(text) if runtime else None
    raw_message = text if report is None else None
    base = dict(attempt=attempt, job_name=meta.get("name", ""), start_time=parse_time(status.get("startTime")),
                exit_code=exit_code, report=report, message=(raw_message or "").strip()[-1024:] or None)

    if complete or succeeded is not None:
        end = (parse_time(status.get("completionTime")) or parse_time(complete.get("lastTransitionTime"))
               if complete else parse_time((term or {}).get("finishedAt")))
        if term and not runtime:
            plain = plain_result(text)
            if plain.dropped:
                return AttemptObservation(state="succeeded", completion_time=end, reason="Completed",
                                          **{**base, "dropped_result": plain.dropped})
            result = Report(outcome="succeeded", result=plain.value) if (text or "").strip() else None
            return AttemptObservation(state="succeeded", completion_time=end, reason="Completed",
                                      **{**base, "report": result})
        if report and report.outcome == "failed":  # exit 0 with a failure report: not the runtime's
            return AttemptObservation(state="failed", completion_time=end, reason=INVALID_REPORT, **base)
        state: State = PAUSED.get(report.outcome, "succeeded") if report else "succeeded"
        return AttemptObservation(state=state, completion_time=end, reason="Completed", **base)
    if failed:
        end = parse_time(failed.get("lastTransitionTime"))
        if failed.get("reason") == "DeadlineExceeded":
            if pods and not started(pods):  # maxDuration counts what ran: this never started
                problem = start_problem(pods) or NEVER_STARTED  # the run's status may know better (plan)
                # A container killed before it ran has the kubelet's 137, not an exit of its own.
                return AttemptObservation(state="failed", completion_time=end, reason=problem.reason,
                                          **{**base, "exit_code": None, "message": problem.message[-1024:] or None})
            return AttemptObservation(state="timed_out", completion_time=end, reason="DeadlineExceeded", **base)
        reason = (term or {}).get("reason") or "Error"
        return AttemptObservation(state="failed", completion_time=end, reason=reason, **base)
    return AttemptObservation(state="active", **base)


def slept_by_checkpoint(obs: AttemptObservation, steps: Sequence[StepRecord] | None,
                        followed: bool = False) -> AttemptObservation:
    """An attempt whose Job completed but whose report was never read (its pod was gone first:
    garbage-collected, evicted, its node removed) slept when another attempt ``followed`` it (a
    success ends the run: only a sleep goes on); it waits when the checkpoint holds a wait for
    child runs that this attempt wrote and nobody completed; it slept when the checkpoint holds a sleep not
    yet over that it could have begun: one that wakes after the attempt started. A sleep left
    pending by an earlier attempt and skipped by this one woke before this attempt started (the
    operator starts the next attempt at its wake time): not counted."""
    if obs.state != "succeeded" or obs.report is not None:
        return obs
    if followed:
        return replace(obs, state="sleeping")  # its wake time is past: only its history entry needs it
    if not steps:
        return obs
    if any(s.completed_at is None and s.waiting_on is not None and s.attempt == obs.attempt for s in steps):
        return replace(obs, state="waiting", report=Report(outcome="waiting"))  # it wrote a wait, then ended well
    wakes = [s.wake_at for s in steps if s.completed_at is None and s.wake_at is not None
             and (obs.start_time is None or s.wake_at > obs.start_time)]
    if not wakes:
        return obs
    return replace(obs, state="sleeping", report=Report(outcome="sleeping", wake_at=max(wakes)))
