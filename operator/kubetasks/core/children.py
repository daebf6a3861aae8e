"""Which objects are a run's, and what its attempts are, from the Jobs it owns.

A child is matched by its controller ownerReference's UID, as Kubernetes' garbage collector and
controller-runtime's ``IsControlledBy`` do, never by name alone: a Job that merely has the name
a run would give its attempt (left by a deleted run of the same name, or made by someone else)
is not that run's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kubetasks.api.taskrun import Phase, TaskRunStatus
from kubetasks.core.observe import AttemptObservation, observe_attempt, succeeded_pod

Body = dict[str, Any]
JOB_LOST = "JobLost"
POD_ENDED = frozenset({"Succeeded", "Failed"})


def controller_uid(body: Body) -> str | None:
    """The UID of the object's controller (its managing owner), if it has one."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def controlled_by(body: Body, uid: str) -> bool:
    return controller_uid(body) == uid


def job_finished(job: Body) -> bool:
    """The Job ended (Complete or Failed): its pods run no more."""
    return any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
               for c in (job.get("status") or {}).get("conditions") or [])


def job_succeeded(job: Body) -> bool:
    """The Job ended Complete."""
    return any(c.get("status") == "True" and c.get("type") == "Complete"
               for c in (job.get("status") or {}).get("conditions") or [])


def attempt_ended(job: Body, pods: list[Body]) -> bool:
    """The attempt is over: its Job ended, or its pod succeeded (``pods``: the Job's, from the pod
    informer), which ends it before the Job says so (core.observe.succeeded_pod)."""
    return job_finished(job) or succeeded_pod(job, pods) is not None


def attempt_succeeded(job: Body, pods: list[Body]) -> bool:
    """The attempt succeeded: its Job is Complete, or its pod succeeded."""
    return job_succeeded(job) or succeeded_pod(job, pods) is not None


def pod_phase(pod: Body | None) -> str | None:
    return ((pod or {}).get("status") or {}).get("phase")


def pod_turned(old: Body | None, new: Body | None, phases: Iterable[str]) -> bool:
    """A pod's watch event that brings it into one of ``phases``: ``new`` is in one, ``old`` (None
    when the pod is first seen) was not. Each transition is acted on once, not at every update."""
    phases = frozenset(phases)
    return new is not None and pod_phase(new) in phases and pod_phase(old) not in phases


def pods_ended(pods: Iterable[Body]) -> bool:
    """Whether there are pods and each has ended (Succeeded or Failed): what a finished Job's pods
    show once a pod watch has caught up with them (the Job's own event can come first)."""
    phases = [pod_phase(p) for p in pods]
    return bool(phases) and all(phase in POD_ENDED for phase in phases)


def observe_attempts(status: TaskRunStatus, jobs: Iterable[Body], gone: Iterable[Body] = (),
                     expected: Iterable[int] = (), pods: dict[str, list[Body]] | None = None,
                     ) -> dict[int, AttemptObservation]:
    """The run's attempts, by number.

    ``jobs`` are the live Jobs the run controls; ``gone`` the last known states of those deleted
    since (tombstones); ``expected`` the attempts whose Job was created but is not seen yet;
    ``pods`` the pods of finished Jobs by Job name (for exit codes and termination messages).
    A Job deleted before it finished, and the current attempt of a Running run whose Job is
    nowhere, are *lost*: a failed attempt, never started again under the same number.
    """
    pods = pods or {}
    attempts: dict[int, AttemptObservation] = {}
    for job in gone:
        obs = observe_attempt(job, pods.get(job["metadata"]["name"], []))
        if obs.state == "active":
            obs = lost(obs.attempt, obs.job_name, "was deleted before it finished")
        attempts[obs.attempt] = obs
    for job in jobs:
        obs = observe_attempt(job, pods.get(job["metadata"]["name"], []))
        attempts[obs.attempt] = obs
    current = status.attempt
    if (current and current not in attempts and current not in set(expected) and status.phase == Phase.RUNNING
            and not _ended(status, current)):
        name = next((a.job_name for a in status.attempts if a.attempt == current), "")
        attempts[current] = lost(current, name, "is gone and its outcome was never recorded")
    return attempts


def lost(attempt: int, job_name: str, how: str) -> AttemptObservation:
    what = f"the Job {job_name!r}" if job_name else "its Job"
    return AttemptObservation(attempt=attempt, job_name=job_name, state="failed", reason=JOB_LOST,
                              message=f"attempt {attempt}: {what} {how}")


def _ended(status: TaskRunStatus, attempt: int) -> bool:
    return any(a.attempt == attempt and a.reason for a in status.attempts)
