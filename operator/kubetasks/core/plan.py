"""The TaskRun state machine: from what is observed to what should be.

``plan_run`` is the whole policy of a run: when it starts, how attempts map to Jobs, when a
failure retries, and what its status says. The controller gathers a :class:`World`, calls it,
and carries out the :class:`Plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from kubetasks.api.common import ConditionStatus, RetryPolicy
from kubetasks.api.flow import WaitingFor
from kubetasks.api.durations import format_duration, parse_duration
from kubetasks.api.task import Task
from kubetasks.api.taskrun import AttemptRecord, ErrorInfo, Phase, StepRecord, TaskRun, TaskRunStatus
from kubetasks.api.version import TaskVersion
from kubetasks.api.times import parse_time
from kubetasks.core.backoff import effective_retry, next_attempt_at
from kubetasks.core.children import JOB_LOST
from kubetasks.core.conditions import condition, get_condition, set_condition
from kubetasks.core.dedup import duplicate_message
from kubetasks.core.echo import bounded, printable
from kubetasks.core.naming import job_name
from kubetasks.core.observe import (
    NEVER_STARTED, PERMANENT, AttemptObservation, StartProblem, same_problem, slept_by_checkpoint,
)
from kubetasks.core.trigger_policy import Refusal
from kubetasks.core.version import snapshot
from kubetasks.core.waits import waiting_message
from kubetasks.core.payload import payload_delivery_error, payload_error, schema_error

HISTORY = 20  # attempts kept in status
SUCCEEDED = "Succeeded"
RESULT_DROPPED = "ResultDropped"
__all__ = ["Event", "Plan", "World", "plan_run", "plan_failed", "plan_held", "start_problem_shown", "retries_left"]


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", bounded(self.message))  # every Event echoes printable text


@dataclass(frozen=True)
class World:
    now: datetime
    run: TaskRun
    task: Task | None
    attempts: dict[int, AttemptObservation] = field(default_factory=dict)
    duplicate_of: str | None = None  # the run that holds this run's idempotency key, when another
    duplicate_payload: str | None = None  # that run's payload digest, from its claim (None: not known)
    blocked: WaitingFor | None = None  # the flow-control limit that keeps its next attempt from starting now
    blocked_message: str = ""
    blocked_until: datetime | None = None  # when that limit lets it start (a throttle), if known
    steps: list[StepRecord] | None = None
    start_problem: StartProblem | None = None  # what keeps the current attempt's container from starting
    start_deadline: datetime | None = None  # when such an attempt fails instead of waiting on
    refusal: Refusal | None = None  # why this child run may not run (its parent's Task does not allow it)
    waiting_on: list[str] | None = None  # a waiting run's children not finished yet (core.waits); None: not read
    # The version to lock when the status has none (core.version): its first Job's, or its parent's.
    # ``task`` is then that version of the Task already (core.version.locked_task).
    version: TaskVersion | None = None


@dataclass
class Plan:
    status: TaskRunStatus
    start_attempt: int | None = None  # create the Job of this attempt (before writing the status)
    delete_jobs: bool = False  # delete every Job of the run (before writing the status)
    stop_job: str | None = None  # delete this Job, whose attempt failed before it started
    events: list[Event] = field(default_factory=list)
    requeue_at: datetime | None = None
    cancel_runs: list[str] = field(default_factory=list)  # child runs to cancel (before writing the status)


def failures(status: TaskRunStatus) -> int:
    """Attempts that count against maxAttempts: durable sleeps and waits do not."""
    return sum(1 for a in status.attempts if a.reason not in (None, "Completed", "Sleeping", "Waiting", "Succeeded"))


def not_before(run: TaskRun) -> datetime | None:
    if run.spec.not_before:
        return run.spec.not_before
    created = parse_time(run.metadata.get("creationTimestamp"))
    if run.spec.delay and created:
        return created + parse_duration(run.spec.delay)
    return None


def plan_run(world: World) -> Plan:
    # An attempt whose pod went before its report was read may have slept: the checkpoint says.
    latest = max([world.run.status.attempt, *world.attempts])
    world = replace(world, attempts={n: slept_by_checkpoint(o, world.steps, followed=n < latest)
                                     for n, o in world.attempts.items()})
    run, now = world.run, world.now
    status = run.status.model_copy(deep=True)
    status.observed_generation = run.metadata.get("generation")  # type: ignore[assignment]
    if world.steps is not None:
        status.steps = world.steps
    plan = Plan(status=status)
    if status.phase.finished:
        return plan
    status.waiting_for = None  # said again below while it waits
    was_waiting, status.waiting_on = status.phase == Phase.WAITING, None

    status.attempt = max([status.attempt, *world.attempts])
    if status.attempt and status.task_version is None:  # its first Job's write was lost: the Job tells
        status.task_version = world.version
    world = replace(world, attempts={n: _never_started(world, o) for n, o in world.attempts.items()})
    for seen in world.attempts.values():
        if seen.reason == JOB_LOST and not any(a.attempt == seen.attempt and a.reason for a in status.attempts):
            plan.events.append(Event("Warning", JOB_LOST, seen.message or f"attempt {seen.attempt} was lost"))
        _record(status, seen)

    if run.spec.cancel:
        plan.delete_jobs = True
        plan.cancel_runs = list(world.waiting_on or [])  # the children it waits for go with it
        return _finish(plan, world, Phase.CANCELLED, "Cancelled", "cancelled by request")

    if world.duplicate_of is not None and status.attempt == 0:
        status.duplicate_of = world.duplicate_of
        return _finish(plan, world, Phase.DUPLICATE, "Deduplicated",
                       duplicate_message(run, world.duplicate_of, world.duplicate_payload))

    if status.attempt == 0:
        if world.task is None:
            return _task_not_found(plan, world, Phase.PENDING)
        return _before_first_attempt(plan, world)

    obs = world.attempts.get(status.attempt)
    if obs is None or obs.state == "active":
        # A Job of an attempt newer than the status says: the next attempt was started and the
        # status write that says so was lost (the operator died in between). It runs: never
        # started again under the next number.
        started_since = obs is not None and status.attempt > run.status.attempt
        if status.phase in (Phase.RETRYING, Phase.SLEEPING) and not started_since:
            return _after_pause(plan, world)
        if was_waiting and not started_since:  # its Job is gone (its TTL): the wait goes on all the same
            return _after_wait(plan, world)
        # Started: its Job exists (or was just created). A Job that vanishes is observed as lost,
        # never created again under the same attempt number.
        if obs and obs.start_time and not status.start_time:
            status.start_time = obs.start_time
        if obs and world.start_problem:
            return _not_started(plan, world, obs, world.start_problem)
        return _waiting(plan, world, Phase.RUNNING, "Running", f"attempt {status.attempt} is running")
    if obs.state == "succeeded":
        status.error = None  # an earlier attempt's failure stays in its attempts entry
        if obs.report:
            status.result_ref = obs.result_ref  # verified by controller.results; an unverified ref never gets here
            status.result = None if obs.result_ref else obs.report.result
        if obs.dropped_result:  # a plain command's message that is not a result: said, not guessed at
            plan.events.append(Event("Warning", RESULT_DROPPED,
                                     f"attempt {obs.attempt} succeeded, but {obs.dropped_result}: the run has no result"))
        return _finish(plan, world, Phase.SUCCEEDED, SUCCEEDED, f"attempt {obs.attempt} succeeded", end=obs.completion_time)
    if obs.state == "sleeping":
        status.wake_at = obs.report.wake_at if obs.report else now
        return _after_pause(plan, world)
    if obs.state == "waiting":
        return _after_wait(plan, world)
    if obs.state == "timed_out":
        limit = f" ({world.task.spec.max_duration})" if world.task else ""
        status.error = ErrorInfo(type="DeadlineExceeded",
                                 message=f"attempt {obs.attempt} ran past maxDuration{limit} and was killed")
        return _finish(plan, world, Phase.TIMED_OUT, "TimedOut", status.error.message, end=obs.completion_time)
    return _after_failure(plan, world, obs)


def _never_started(world: World, obs: AttemptObservation) -> AttemptObservation:
    """An attempt that never started, as what it was: a failed start, not TimedOut nor JobLost.
    Its Job's deadline (maxDuration) ended it, once its pod is gone; or its Job is gone (the
    operator deletes it at the start deadline, and its status write may be lost after that: it
    died, or met a conflict). Known when the status showed its container not starting, or the
    last look saw it on its way (``world.start_problem``), or the status already recorded it so
    (this reconcile and every later one: a retry is then what follows). Its pod, when still
    there, may no longer say why (the kubelet killed a container that never ran: NotStarted)."""
    run = world.run
    lost = obs.reason == JOB_LOST
    unexplained = obs.state == "failed" and obs.reason == NEVER_STARTED.reason
    if obs.state != "timed_out" and not lost and not unexplained:
        return obs
    known = next((a for a in run.status.attempts if a.attempt == obs.attempt), None)
    if known is not None and known.reason not in (None, "DeadlineExceeded", JOB_LOST) and known.exit_code is None:
        return replace(obs, state="failed", reason=known.reason, message=known.message)
    waited = (start_problem_shown(run) or world.start_problem) if obs.attempt == run.status.attempt else None
    if waited is None:
        return obs
    what = "had not started when its Job was deleted" if lost else "did not start before maxDuration"
    return replace(obs, state="failed", reason=waited.reason, message=f"its container {what} ({waited.reason})")


def plan_failed(run: TaskRun, now: datetime, reason: str, message: str, status: TaskRunStatus | None = None) -> Plan:
    """A permanent, explained failure of the run as it stands: the API server refused what an
    attempt needs (InvalidSpec), or reconciling it raised an error no retry can mend."""
    plan = Plan(status=(status or run.status).model_copy(deep=True))
    plan.status.error = ErrorInfo(type=reason, message=bounded(message))
    return _finish(plan, World(now=now, run=run, task=None), Phase.FAILED, reason, plan.status.error.message)


TRACEBACK_LIMIT = 8192


def _before_first_attempt(plan: Plan, world: World) -> Plan:
    run, task = world.run, world.task
    assert task is not None
    # A Task whose payloadSchema cannot be used (its status says Ready=False) fails its runs at
    # once: no payload could be checked against it, and waiting would not mend it.
    error = schema_error(task.spec.payload_schema)
    if error:
        message = bounded(f"Task {task.name!r} is not ready: {error}")
        plan.status.error = ErrorInfo(type="InvalidTask", message=message)
        return _finish(plan, world, Phase.FAILED, "InvalidTask", message)
    if world.refusal:
        plan.status.error = ErrorInfo(type=world.refusal.reason, message=bounded(world.refusal.message))
        return _finish(plan, world, Phase.FAILED, world.refusal.reason, world.refusal.message)
    error = payload_error(task.spec.payload_schema, run.spec.payload)
    if error:
        plan.status.error = ErrorInfo(type="InvalidPayload", message=bounded(error))
        return _finish(plan, world, Phase.FAILED, "InvalidPayload", error)
    error = payload_delivery_error(run.spec.payload, uses_runtime=bool(task.spec.entrypoint))
    if error:
        plan.status.error = ErrorInfo(type="PayloadTooLarge", message=bounded(error))
        return _finish(plan, world, Phase.FAILED, "PayloadTooLarge", error)
    start = not_before(run)
    if start and world.now < start:
        plan.requeue_at = start
        plan.status.waiting_for = WaitingFor(reason="Delayed")
        return _waiting(plan, world, Phase.DELAYED, "Delayed", f"waiting until {start.isoformat()}")
    return _start(plan, world, 1)


def _task_not_found(plan: Plan, world: World, phase: Phase) -> Plan:
    run = world.run
    return _waiting(plan, world, phase, "TaskNotFound",
                    f"Task {run.spec.task_ref!r} does not exist in namespace {run.namespace!r}")


def _start(plan: Plan, world: World, attempt: int) -> Plan:
    if world.task is None:  # deleted between attempts: wait for it to come back
        return _task_not_found(plan, world, plan.status.phase)
    status = plan.status
    if world.blocked is not None:  # a limit has no room: it waits (Queued before its first attempt)
        status.waiting_for = world.blocked
        plan.requeue_at = world.blocked_until
        phase = Phase.QUEUED if attempt == 1 else plan.status.phase
        return _waiting(plan, world, phase, world.blocked.reason, world.blocked_message or world.blocked.reason)
    status.attempt = attempt
    status.next_retry_at = None
    status.wake_at = None
    status.start_time = status.start_time or world.now.replace(microsecond=0)
    plan.start_attempt = attempt
    # Locked as the first attempt starts, in the write that records it (core.version).
    status.task_version = status.task_version or world.version or snapshot(world.task)
    # Recorded with the write that says Running (one status write fewer); the Job's own times
    # replace these when the attempt ends.
    started = AttemptRecord(attempt=attempt, job_name=job_name(world.run.name, attempt),
                            start_time=world.now.replace(microsecond=0),
                            task_generation=status.task_version.generation)
    status.attempts = sorted([*(a for a in status.attempts if a.attempt != attempt), started],
                             key=lambda a: a.attempt)[-HISTORY:]
    return _waiting(plan, world, Phase.RUNNING, "Running", f"attempt {attempt} is running")


def _not_started(plan: Plan, world: World, obs: AttemptObservation, problem: StartProblem) -> Plan:
    """The attempt's container cannot start (no image, no Secret, no node...). A problem no wait
    can mend (``problem.permanent``) fails the attempt and the run at once. One that may heal is
    said in the status while the start deadline lasts, then fails the attempt, retried by policy;
    a retry made from the same Task that shows the same problem fails when it is seen: the wait
    between attempts was its chance to heal."""
    what = f"{problem.reason}: {problem.message}" if problem.message else problem.reason
    deadline = world.start_deadline
    again = _as_before(world.run, obs.attempt, problem)
    if problem.permanent or again or (deadline is not None and world.now >= deadline):
        plan.stop_job = obs.job_name
        when = ("cannot start" if problem.permanent
                else f"did not start, as attempt {obs.attempt - 1} of the same Task did not" if again
                else "did not start by the start deadline")
        failed = replace(obs, state="failed", reason=problem.reason, completion_time=world.now,
                         message=f"its container {when}: {what}")
        _record(plan.status, failed)
        return _after_failure(plan, world, failed, cannot_start=problem.permanent)
    message = f"attempt {obs.attempt} has not started: {what}"
    if deadline is not None:
        plan.requeue_at = deadline
        message += f" (it fails at {deadline.isoformat()} unless it starts)"
    old = get_condition(world.run.status.conditions, SUCCEEDED)
    if old is None or old.reason != problem.reason:
        plan.events.append(Event("Warning", problem.reason, bounded(message)))
    return _waiting(plan, world, Phase.RUNNING, problem.reason, message)


def _as_before(run: TaskRun, attempt: int, problem: StartProblem) -> bool:
    """Whether the attempt before this one failed to start with the same problem, both made from
    the same generation of the Task: nothing has changed that a full start deadline would wait for."""
    records = {a.attempt: a for a in run.status.attempts}
    before, now = records.get(attempt - 1), records.get(attempt)
    return (before is not None and now is not None and before.exit_code is None
            and same_problem(before.reason, problem.reason)
            and before.task_generation is not None and before.task_generation == now.task_generation)


def start_problem_shown(run: TaskRun) -> StartProblem | None:
    """The start problem the run's status shows for its running attempt, if it shows one: the
    status remembers it across operator restarts, and after the pods are gone."""
    shown = get_condition(run.status.conditions, SUCCEEDED)
    if run.status.phase != Phase.RUNNING or shown is None or shown.reason in ("Running", "TaskNotFound"):
        return None
    # Its message is the condition's own: not repeated.
    return StartProblem(shown.reason, "", permanent=shown.reason in PERMANENT)


def _after_pause(plan: Plan, world: World) -> Plan:
    """Retrying or Sleeping: start the next attempt once the wait is over."""
    status = plan.status
    due = status.wake_at if status.wake_at else status.next_retry_at
    if due is None or world.now >= due:
        return _start(plan, world, status.attempt + 1)
    plan.requeue_at = due
    if status.wake_at:
        return _waiting(plan, world, Phase.SLEEPING, "Sleeping", f"sleeping until {due.isoformat()}")
    return _waiting(plan, world, Phase.RETRYING, "Retrying",
                    f"attempt {status.attempt + 1} starts at {due.isoformat()}")


def _after_wait(plan: Plan, world: World) -> Plan:
    """Waiting for child runs (core.waits): the next attempt starts once none is left unfinished.
    No pod waits, and no slot is held (slots are held by Jobs that run)."""
    status = plan.status
    if world.waiting_on is None:  # what it waits for was not read: it is, next time
        plan.requeue_at = world.now + timedelta(seconds=5)
        return _waiting(plan, world, Phase.WAITING, "Waiting", "waiting for its child runs")
    if not world.waiting_on:
        return _start(plan, world, status.attempt + 1)
    status.waiting_on = list(world.waiting_on)
    return _waiting(plan, world, Phase.WAITING, "Waiting", waiting_message(world.waiting_on))


def _after_failure(plan: Plan, world: World, obs: AttemptObservation, cannot_start: bool = False) -> Plan:
    """A failed attempt: retried by policy, unless retrying cannot help (a permanent exit code, a
    container that ``cannot_start`` or whose reason is a :data:`PERMANENT` start problem)."""
    status = plan.status
    if world.task is None and world.run.spec.retry is None:
        return _task_not_found(plan, world, status.phase)  # its retry policy is the Task's
    policy = effective_retry(world.run, world.task)
    report = obs.report
    detail = obs.reason or "Error"
    if obs.exit_code is not None:
        detail += f" (exit code {obs.exit_code})"
    message = report.error_message if report and report.error_message else summary(obs)
    status.error = ErrorInfo(type=(report.error_type if report else None) or obs.reason or "Error",
                             message=bounded(f"attempt {obs.attempt} failed: {detail}" + (f": {message}" if message else "")),
                             traceback=bounded(report.traceback, TRACEBACK_LIMIT, keep_end=True) if report and report.traceback else None)
    cannot_start = cannot_start or (obs.exit_code is None and obs.reason in PERMANENT)
    permanent = obs.exit_code in policy.permanent_exit_codes
    chose_to_stop = report is not None and report.skip_retrying  # the task's catch_error (runtime.lifecycle)
    retryable = (obs.reason if obs.reason == "OOMKilled" else "Error") in policy.retry_on
    failed = failures(status)
    if cannot_start or permanent or chose_to_stop or not retryable or failed >= policy.max_attempts:
        why = ("not retried: it cannot start until its Task changes" if cannot_start
               else "not retried: its catch_error hook chose to skip retrying" if chose_to_stop  # exit 78 too
               else "permanent failure" if permanent
               else "not retried" if not retryable
               else f"all {policy.max_attempts} attempts failed")
        reason = JOB_LOST if obs.reason == JOB_LOST else "Failed"
        return _finish(plan, world, Phase.FAILED, reason, f"{status.error.message} ({why})", end=obs.completion_time)
    if status.next_retry_at is None or plan.status.phase != Phase.RETRYING:
        failed_at = obs.completion_time or world.now
        status.next_retry_at = (chosen_retry_at(report.retry_at, failed_at) if report and report.retry_at
                                else next_attempt_at(policy, failed, failed_at, seed=str(world.run.metadata.get("uid", ""))))
        delay = format_duration(status.next_retry_at - failed_at)
        plan.events.append(Event("Warning", "AttemptFailed", f"{status.error.message}; retrying in {delay}"))
    return _after_pause(plan, world)


# A retry time the task chose (catch_error's retry_at or retry_delay) is the task's word, so it is
# bounded: never before the failure, never more than a day after it (a forged or mistaken
# far-future time would park the run out of sight; a day covers any rate limit's reset).
CHOSEN_RETRY_LIMIT = timedelta(days=1)


def chosen_retry_at(retry_at: datetime, failed_at: datetime) -> datetime:
    return min(max(retry_at, failed_at), failed_at + CHOSEN_RETRY_LIMIT)


def retries_left(policy: RetryPolicy, status: TaskRunStatus) -> int:
    """How many attempts may still follow a failure of the attempt being started: 0 tells its pod
    this attempt is the last (its on_failure hooks run when it fails; runtime.lifecycle)."""
    if "Error" not in policy.retry_on:
        return 0
    return max(policy.max_attempts - failures(status) - 1, 0)


def _waiting(plan: Plan, world: World, phase: Phase, reason: str, message: str) -> Plan:
    plan.status.phase = phase
    return _set(plan, world, "Unknown", reason, message)


def summary(obs: AttemptObservation) -> str | None:
    """One line on why a plain attempt failed; its attempts entry keeps the whole log tail."""
    if obs.reason == "OOMKilled":
        return "the container exceeded its memory limit"
    lines = [line.strip() for line in (obs.message or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


def _finish(plan: Plan, world: World, phase: Phase, reason: str, message: str,
            end: datetime | None = None) -> Plan:
    status = plan.status
    status.phase = phase
    status.next_retry_at = None
    status.wake_at = None
    status.completion_time = (end or world.now).replace(microsecond=0)
    if status.start_time:
        status.duration = format_duration(status.completion_time - status.start_time)
    return _set(plan, world, "True" if phase == Phase.SUCCEEDED else "False", reason, message)


def _set(plan: Plan, world: World, state: ConditionStatus, reason: str, message: str) -> Plan:
    status = plan.status
    old = get_condition(world.run.status.conditions, SUCCEEDED)
    message = bounded(message)
    status.conditions = set_condition(
        status.conditions, condition(SUCCEEDED, state, reason, message, world.now, status.observed_generation))
    if old is None or old.reason != reason or old.status != state:
        # Events for what needs a look or ends the run; progress (Running, Queued...) is in status.
        warning = state == "False" or reason == "TaskNotFound"
        if warning or state == "True":
            plan.events.append(Event("Warning" if warning else "Normal", reason, message))
    return plan


def _record(status: TaskRunStatus, obs: AttemptObservation) -> None:
    """Adds or updates the history entry of an observed attempt."""
    message = None
    if obs.report and obs.report.error_message:
        message = bounded(f"{obs.report.error_type}: {obs.report.error_message}")
    elif obs.state == "failed" and obs.message is not None:
        message = printable(obs.message)
    elif obs.dropped_result:
        message = bounded(f"{RESULT_DROPPED}: {obs.dropped_result}")
    reason = {"succeeded": "Succeeded", "sleeping": "Sleeping", "waiting": "Waiting",
              "active": None}.get(obs.state, obs.reason)
    known = next((a for a in status.attempts if a.attempt == obs.attempt), None)
    if obs.state == "active" and known is not None and known.job_name == obs.job_name:
        return  # recorded when it started; nothing new until it ends
    record = AttemptRecord(attempt=obs.attempt, job_name=obs.job_name, start_time=obs.start_time,
                           completion_time=obs.completion_time, exit_code=obs.exit_code, reason=reason,
                           message=message, task_generation=known.task_generation if known else None)
    others = [a for a in status.attempts if a.attempt != obs.attempt]
    status.attempts = sorted([*others, record], key=lambda a: a.attempt)[-HISTORY:]


def plan_held(world: World, phase: Phase, reason: str, message: str, *, until: datetime | None = None,
              waiting_for: WaitingFor | None = None, superseded_by: str | None = None) -> Plan:
    """A run held before its first attempt by flow control (core.debounce, core.overlap): it waits
    (``phase`` Delayed until ``until``, saying what for) or ends Superseded, Skipped or Cancelled.
    Its end is policy doing what it was asked, not a fault: a Normal Event."""
    status = world.run.status.model_copy(deep=True)
    status.observed_generation = world.run.metadata.get("generation")  # type: ignore[assignment]
    status.waiting_for = waiting_for
    plan = Plan(status=status, requeue_at=until)
    if not phase.finished:
        return _waiting(plan, world, phase, reason, message)
    status.superseded_by = superseded_by
    _finish(plan, world, phase, reason, message)
    plan.events = [replace(e, type="Normal") for e in plan.events]
    return plan
