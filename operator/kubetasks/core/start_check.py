"""When to look at the pods of an attempt that has not started, and what to blame when it does not.

An attempt whose Job has a ready pod started. One that has not, :data:`START_CHECK` seconds after
the Job controller made its pods (or half the Task's maxDuration, so the status says why before
the Job's deadline ends it), has its pods read: once now and then, sooner while its container is
on its way (ContainerCreating: kubelet's retries pass through it too), every
:data:`START_CHECK_EVERY` seconds once a problem is known. Past the start deadline, a container
still not started is a failed start all the same (:data:`~kubetasks.core.observe.NEVER_STARTED`).

The reconciler reads the world (the Job, the last look, the status), asks :func:`plan_start_check`
whether to read the pods, reads them when told, and asks :func:`judge_start` what they show.
Every time to look again is in the future: a time already past would re-queue the run at once, a
hot loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubetasks.api.times import parse_time
from kubetasks.core.observe import NEVER_STARTED, StartProblem, job_ending, job_ready, start_problem, started

START_CHECK = 20.0  # seconds after its Job's pods were created before they are read, if none is ready
START_CHECK_EVERY = 60.0  # seconds between reads once a problem is known (or the Job has no pods yet)


@dataclass(frozen=True)
class Look:
    """The last read of an attempt's pods: when, and what kept its container from starting."""
    at: datetime
    seen: StartProblem | None


@dataclass(frozen=True)
class StartCheck:
    problem: StartProblem | None = None  # what keeps the attempt from starting, as known now
    deadline: datetime | None = None  # when not having started fails the attempt
    again: datetime | None = None  # when to look again
    read_pods: bool = False  # read the pods now, and :func:`judge_start` them
    first: float = START_CHECK  # seconds after the pods were made before the first read
    started: bool = False  # the attempt started (or has no Job to wait for): forget the last look


def look_again(now: datetime, when: datetime, deadline: datetime | None) -> datetime:
    """``when``, not past the deadline while it is ahead, and never sooner than a second from now."""
    if deadline is not None and now < deadline:
        when = min(when, deadline)
    return max(when, now + timedelta(seconds=1))


def plan_start_check(now: datetime, job: dict[str, Any] | None, start_deadline: float,
                     max_duration: float | None, last: Look | None, shown: StartProblem | None) -> StartCheck:
    """What to do about the current attempt's start. ``job``: its Job while the attempt is active
    (None otherwise); ``last``: the last read of its pods by this process; ``shown``: the problem
    the run's status shows (what a restarted operator remembers)."""
    created = parse_time(((job or {}).get("metadata") or {}).get("creationTimestamp"))
    if job is None or created is None or job_ready(job):
        return StartCheck(started=True)
    if job_ending(job):  # its pods are going: what was seen stands until the Job's outcome
        return StartCheck(problem=(last.seen if last else None) or shown)
    deadline = created + timedelta(seconds=start_deadline)
    pods_made = parse_time((job.get("status") or {}).get("startTime"))
    if pods_made is None:  # the Job controller has not got to it: no pod to look at, nothing to blame
        return StartCheck(again=look_again(now, now + timedelta(seconds=START_CHECK_EVERY), deadline))
    first = START_CHECK if max_duration is None else min(START_CHECK, max_duration / 2)
    if now < pods_made + timedelta(seconds=first):
        return StartCheck(deadline=deadline, again=look_again(now, pods_made + timedelta(seconds=first), deadline),
                          first=first)
    seen = last.seen if last else None
    wait = timedelta(seconds=START_CHECK_EVERY if seen else max(1.0, first / 2))
    # Looked lately (and, past the deadline, after it): what was seen still holds.
    if last and now < last.at + wait and (now < deadline or last.at >= deadline or seen):
        return StartCheck(problem=seen, deadline=deadline, again=look_again(now, last.at + wait, deadline), first=first)
    return StartCheck(problem=seen, deadline=deadline, read_pods=True, first=first)


def judge_start(now: datetime, check: StartCheck, pods: list[dict[str, Any]], job_name: str,
                last: Look | None, shown: StartProblem | None) -> tuple[Look, datetime]:
    """What the attempt's ``pods``, read now as ``check`` asked, show; and when to look again."""
    seen = last.seen if last else None
    # After a restart only the status remembers what was seen: its reason, not its message.
    problem = start_problem(pods) or (None if started(pods) else seen or shown)
    if not pods:  # its Job has tried for a while and made none
        problem = StartProblem("PodNotCreated", f"the Job controller has not created a pod for Job {job_name} "
                                                f"(kubectl describe job {job_name} says why)")
    elif problem is None and check.deadline is not None and now >= check.deadline and not started(pods):
        problem = NEVER_STARTED  # still on its way at the deadline: a start that failed all the same
    again = START_CHECK_EVERY if problem else max(1.0, check.first / 2)
    return Look(now, problem), look_again(now, now + timedelta(seconds=again), check.deadline)
