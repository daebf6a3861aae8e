"""The TaskRun state machine, with plain values and a fixed clock."""

from datetime import datetime, timedelta, timezone

from kubetasks.api.flow import WaitingFor
from kubetasks.api import Phase, StepRecord, Task, TaskRun
from kubetasks.core.children import lost
from kubetasks.core.observe import AttemptObservation
from kubetasks.core.plan import World, bounded, plan_failed, plan_run
from kubetasks.protocol import Report

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
CREATED = (NOW - timedelta(seconds=5)).isoformat()


def task(**spec):
    return Task.model_validate({"metadata": {"name": "hello", "namespace": "ns"},
                                "spec": {"image": "img:1", **spec}})


def run(status=None, **spec):
    return TaskRun.model_validate({
        "metadata": {"name": "r1", "namespace": "ns", "uid": "u1", "generation": 1, "creationTimestamp": CREATED},
        "spec": {"taskRef": "hello", **spec}, "status": status or {}})


def obs(attempt, state, end=NOW, **kw):
    return AttemptObservation(attempt=attempt, job_name=f"r1-{attempt}", state=state,
                              start_time=end - timedelta(seconds=3), completion_time=None if state == "active" else end, **kw)


def advance(world_run, **kw):
    """Applies a plan's status to the run, as the API server would."""
    plan = plan_run(World(now=kw.pop("now", NOW), run=world_run, **kw))
    return plan, world_run.model_copy(update={"status": plan.status})


def test_a_new_run_starts_attempt_one():
    plan, r = advance(run(), task=task())
    assert plan.start_attempt == 1
    assert r.status.phase == Phase.RUNNING and r.status.attempt == 1
    assert r.status.conditions[0].status == "Unknown" and r.status.conditions[0].reason == "Running"
    assert plan.events == []  # progress is in status; Events are for what ends a run or needs a look


def test_success_records_result_duration_and_condition():
    _, r = advance(run(), task=task())
    plan, r = advance(r, task=task(), attempts={1: obs(1, "succeeded", report=Report("succeeded", result={"n": 1}))})
    assert r.status.phase == Phase.SUCCEEDED and r.status.result == {"n": 1}
    assert r.status.completion_time == NOW and r.status.duration == "0s"
    assert r.status.attempts[0].reason == "Succeeded"
    assert r.status.conditions[0].status == "True"
    again, _ = advance(r, task=task())
    assert again.start_attempt is None and again.events == []  # finished runs are left alone


def test_failures_retry_with_backoff_then_fail_after_max_attempts():
    t = task(retry={"maxAttempts": 3, "minDelay": "2s", "factor": 2})
    _, r = advance(run(), task=t)
    plan, r = advance(r, task=t, attempts={1: obs(1, "failed", exit_code=1, reason="Error")})
    assert r.status.phase == Phase.RETRYING and r.status.next_retry_at == NOW + timedelta(seconds=2)
    assert plan.requeue_at == NOW + timedelta(seconds=2) and plan.start_attempt is None
    assert "AttemptFailed" in [e.reason for e in plan.events]
    # Too early: still waiting. On time: attempt 2.
    plan, r = advance(r, task=t, now=NOW + timedelta(seconds=1), attempts={1: obs(1, "failed", exit_code=1, reason="Error")})
    assert plan.start_attempt is None and r.status.phase == Phase.RETRYING
    plan, r = advance(r, task=t, now=NOW + timedelta(seconds=2), attempts={1: obs(1, "failed", exit_code=1, reason="Error")})
    assert plan.start_attempt == 2 and r.status.phase == Phase.RUNNING
    later = NOW + timedelta(seconds=10)
    failed = {1: obs(1, "failed", exit_code=1, reason="Error"), 2: obs(2, "failed", end=later, exit_code=1, reason="Error")}
    _, r = advance(r, task=t, now=later, attempts=failed)
    assert r.status.next_retry_at == later + timedelta(seconds=4)  # exponential: 2s, then 4s
    _, r = advance(r, task=t, now=later + timedelta(seconds=4), attempts=failed)
    failed[3] = obs(3, "failed", end=later + timedelta(seconds=9), exit_code=1, reason="Error")
    plan, r = advance(r, task=t, now=later + timedelta(seconds=9), attempts=failed)
    assert r.status.phase == Phase.FAILED and r.status.attempt == 3
    assert "all 3 attempts failed" in r.status.conditions[0].message
    assert [a.attempt for a in r.status.attempts] == [1, 2, 3]


def test_oom_is_reported_and_retried_and_permanent_codes_are_not():
    t = task()
    _, r = advance(run(), task=t)
    _, oom = advance(r, task=t, attempts={1: obs(1, "failed", exit_code=137, reason="OOMKilled")})
    assert oom.status.phase == Phase.RETRYING and oom.status.attempts[0].reason == "OOMKilled"
    assert "OOMKilled (exit code 137)" in oom.status.error.message
    assert oom.status.error.message.endswith("the container exceeded its memory limit")
    report = Report("failed", error_type="AbortTaskRun", error_message="bad input")
    _, perm = advance(r, task=t, attempts={1: obs(1, "failed", exit_code=78, reason="Error", report=report)})
    assert perm.status.phase == Phase.FAILED and "permanent failure" in perm.status.conditions[0].message
    assert perm.status.error.type == "AbortTaskRun"


def test_a_plain_failure_is_summed_up_by_its_last_log_line_and_success_clears_the_error():
    t = task()
    _, r = advance(run(), task=t)
    tail = "starting\nTraceback (most recent call last):\n  ...\nValueError: no such file\n"
    _, r = advance(r, task=t, attempts={1: obs(1, "failed", exit_code=1, reason="Error", message=tail)})
    assert r.status.error.message == "attempt 1 failed: Error (exit code 1): ValueError: no such file"
    assert r.status.attempts[0].message == tail  # the whole tail stays with the attempt
    attempts = {1: obs(1, "failed", exit_code=1, reason="Error", message=tail), 2: obs(2, "succeeded")}
    _, r = advance(r, task=t, now=NOW + timedelta(minutes=1), attempts=attempts)
    _, r = advance(r, task=t, now=NOW + timedelta(minutes=1), attempts=attempts)
    assert r.status.phase == Phase.SUCCEEDED and r.status.error is None


def test_oom_not_retried_when_the_policy_says_so():
    t = task(retry={"retryOn": ["Error"]})
    _, r = advance(run(), task=t)
    _, r = advance(r, task=t, attempts={1: obs(1, "failed", exit_code=137, reason="OOMKilled")})
    assert r.status.phase == Phase.FAILED


def test_timeout_is_terminal():
    t = task(maxDuration="5s")
    _, r = advance(run(), task=t)
    _, r = advance(r, task=t, attempts={1: obs(1, "timed_out", reason="DeadlineExceeded")})
    assert r.status.phase == Phase.TIMED_OUT and r.status.error.type == "DeadlineExceeded"


def test_cancel_deletes_the_active_job():
    _, r = advance(run(), task=task())
    r = r.model_copy(update={"spec": r.spec.model_copy(update={"cancel": True})})
    plan, r = advance(r, task=task(), attempts={1: obs(1, "active")})
    assert r.status.phase == Phase.CANCELLED and plan.delete_jobs  # all of the run's Jobs, first


def test_cancel_before_any_job_still_deletes_whatever_may_exist():
    r = run(cancel=True)  # a Job may have been created from an earlier view of the run
    plan, r = advance(r, task=task())
    assert r.status.phase == Phase.CANCELLED and plan.delete_jobs and plan.start_attempt is None


def test_delay_holds_the_run_until_due():
    plan, r = advance(run(delay="1m"), task=task())
    assert r.status.phase == Phase.DELAYED and plan.start_attempt is None
    assert plan.requeue_at == datetime.fromisoformat(CREATED) + timedelta(minutes=1)
    plan, r = advance(r, task=task(), now=plan.requeue_at)
    assert plan.start_attempt == 1


def test_unknown_task_waits_with_a_reason_and_a_warning():
    plan, r = advance(run(), task=None)
    assert r.status.phase == Phase.PENDING and r.status.conditions[0].reason == "TaskNotFound"
    assert plan.events[0].type == "Warning"
    plan, _ = advance(r, task=None)
    assert plan.events == []  # no repeated Events for the same state


def test_invalid_payload_fails_at_once_with_the_reason():
    t = task(payloadSchema={"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}})
    plan, r = advance(run(payload={"url": 3}), task=t)
    assert r.status.phase == Phase.FAILED and plan.start_attempt is None
    assert r.status.conditions[0].reason == "InvalidPayload" and "url" in r.status.error.message


def test_a_rejected_job_fails_the_run_keeping_its_attempt():
    plan, r = advance(run(), task=task())
    rejected = plan_failed(r, NOW, "InvalidSpec", "the Job for attempt 1 was rejected: bad nodeSelector", plan.status)
    s = rejected.status
    assert s.phase == Phase.FAILED and s.attempt == 1 and s.completion_time == NOW
    assert s.error.type == "InvalidSpec" and "nodeSelector" in s.error.message
    assert (s.conditions[0].status, s.conditions[0].reason) == ("False", "InvalidSpec")
    assert [(e.type, e.reason) for e in rejected.events] == [("Warning", "InvalidSpec")]
    assert rejected.start_attempt is None and plan_run(World(now=NOW, run=r.model_copy(update={"status": s}),
                                                             task=task())).start_attempt is None


def test_a_run_a_limit_holds_back_waits_queued_and_says_which_limit():
    full = WaitingFor(reason="KeyLimit", limit="Task/t/key/acme")
    plan, r = advance(run(), task=task(concurrency=1), blocked=full, blocked_message="waiting for a slot of Task/t/key/acme")
    assert r.status.phase == Phase.QUEUED and plan.start_attempt is None and r.status.waiting_for == full
    assert r.status.conditions[0].reason == "KeyLimit" and "Task/t/key/acme" in r.status.conditions[0].message
    plan, r = advance(r, task=task(concurrency=1))
    assert plan.start_attempt == 1 and r.status.waiting_for is None


def test_a_retry_a_limit_holds_back_keeps_its_phase_and_waits_for_its_slot():
    throttled = WaitingFor(reason="TaskLimit", limit="Task/t")
    plan, r = advance(run(), task=task())
    failed = r.model_copy(update={"status": r.status.model_copy(update={
        "phase": Phase.RETRYING, "next_retry_at": NOW - timedelta(seconds=1)})})
    plan, r = advance(failed, task=task(), blocked=throttled)
    assert r.status.phase == Phase.RETRYING and plan.start_attempt is None and r.status.waiting_for == throttled


def test_a_run_whose_key_another_run_holds_ends_duplicate_of_its_own():
    plan, r = advance(run(idempotencyKey="k"), task=task(), duplicate_of="r0")
    assert plan.start_attempt is None and not plan.delete_jobs
    assert r.status.duplicate_of == "r0" and r.status.phase == Phase.DUPLICATE and r.status.attempt == 0
    cond = r.status.conditions[0]
    assert (cond.status, cond.reason) == ("False", "Deduplicated") and "r0" in cond.message
    assert r.status.result is None and r.status.completion_time == NOW


def test_a_started_run_is_never_turned_into_a_duplicate():
    _, r = advance(run(idempotencyKey="k"), task=task())
    plan, r = advance(r, task=task(), attempts={1: obs(1, "active")}, duplicate_of="r0")
    assert r.status.phase == Phase.RUNNING and r.status.duplicate_of is None


def test_durable_sleep_does_not_count_as_a_failure():
    t = task(retry={"maxAttempts": 1})
    _, r = advance(run(), task=t)
    wake = NOW + timedelta(seconds=30)
    sleeping = {1: obs(1, "sleeping", report=Report("sleeping", wake_at=wake))}
    plan, r = advance(r, task=t, attempts=sleeping)
    assert r.status.phase == Phase.SLEEPING and r.status.wake_at == wake and plan.requeue_at == wake
    plan, r = advance(r, task=t, attempts=sleeping, now=wake)
    assert plan.start_attempt == 2 and r.status.phase == Phase.RUNNING and r.status.wake_at is None
    done = {**sleeping, 2: obs(2, "succeeded", end=wake + timedelta(seconds=1))}
    _, r = advance(r, task=t, attempts=done, now=wake + timedelta(seconds=1))
    assert r.status.phase == Phase.SUCCEEDED


def test_a_sleep_whose_pod_went_before_its_report_was_read_is_known_from_the_checkpoint():
    t = task(entrypoint="app:nap", retry={"maxAttempts": 1})
    _, r = advance(run(), task=t)
    wake = NOW + timedelta(minutes=5)
    fetched = StepRecord(name="fetch", attempt=1, duration_seconds=0.2, completed_at=NOW - timedelta(seconds=2))
    nap = StepRecord(name="nap", attempt=1, wake_at=wake)
    no_report = {1: obs(1, "succeeded")}  # its Job is Complete; its pod was gone: no termination message
    plan, r = advance(r, task=t, attempts=no_report, steps=[fetched, nap])
    assert r.status.phase == Phase.SLEEPING and r.status.wake_at == wake and plan.requeue_at == wake
    assert r.status.attempts[-1].reason == "Sleeping" and r.status.completion_time is None
    plan, r = advance(r, task=t, attempts=no_report, steps=[fetched, nap], now=wake)
    assert plan.start_attempt == 2  # woken on time, not a failure (maxAttempts 1)
    woke = StepRecord(name="nap", attempt=2, duration_seconds=300.0, completed_at=wake + timedelta(seconds=1))
    done = {**no_report, 2: obs(2, "succeeded", end=wake + timedelta(seconds=2))}
    _, r = advance(r, task=t, attempts=done, steps=[fetched, woke], now=wake + timedelta(seconds=2))
    assert r.status.phase == Phase.SUCCEEDED
    assert [a.reason for a in r.status.attempts] == ["Sleeping", "Succeeded"]  # attempt 1's entry stays a sleep


def test_without_a_sleep_the_checkpoint_leaves_a_reportless_success_a_success():
    t = task(entrypoint="app:nap")
    _, r = advance(run(), task=t)
    # A sleep left pending by an earlier attempt that this one skipped woke before this one started.
    stale = StepRecord(name="nap", attempt=1, wake_at=NOW - timedelta(minutes=1))
    for steps in ([], [stale], None):
        _, done = advance(r, task=t, attempts={1: obs(1, "succeeded")}, steps=steps)
        assert done.status.phase == Phase.SUCCEEDED


def test_restart_after_job_creation_but_before_status_write_adopts_the_job():
    # The operator died after creating r1-1 but before recording attempt 1: it must not start again.
    plan, r = advance(run(), task=task(), attempts={1: obs(1, "active")})
    assert plan.start_attempt is None and r.status.attempt == 1 and r.status.phase == Phase.RUNNING


def test_a_started_attempt_is_never_started_again():
    # The Job is created before the status says Running; a Running attempt with no Job in view is
    # the observer's to call lost (see core.children), never the planner's to re-create.
    _, r = advance(run(), task=task())
    plan, r = advance(r, task=task())
    assert plan.start_attempt is None and r.status.phase == Phase.RUNNING


def test_a_lost_job_is_a_failed_attempt_that_retries_per_policy():
    t = task(retry={"maxAttempts": 2, "minDelay": "1s"})
    _, r = advance(run(), task=t)
    plan, r = advance(r, task=t, attempts={1: lost(1, "r1-1", "was deleted before it finished")})
    assert r.status.phase == Phase.RETRYING and r.status.attempts[0].reason == "JobLost"
    assert [e.reason for e in plan.events][:1] == ["JobLost"]
    plan, r = advance(r, task=t, now=NOW + timedelta(seconds=2))
    assert plan.start_attempt == 2


def test_a_lost_job_with_no_attempts_left_fails_the_run_with_that_reason():
    t = task(retry={"maxAttempts": 1})
    _, r = advance(run(), task=t)
    plan, r = advance(r, task=t, attempts={1: lost(1, "r1-1", "is gone")})
    assert r.status.phase == Phase.FAILED and r.status.error.type == "JobLost"
    assert r.status.conditions[0].reason == "JobLost"
    again, _ = advance(r, task=t)  # the lost attempt is history, not started again
    assert again.start_attempt is None


def test_a_running_attempt_finishes_even_when_its_task_is_deleted_meanwhile():
    _, r = advance(run(), task=task())
    plan, r = advance(r, task=None, attempts={1: obs(1, "succeeded")})
    assert r.status.phase == Phase.SUCCEEDED


def test_a_failure_after_the_task_was_deleted_waits_for_the_task_and_its_policy():
    _, r = advance(run(), task=task())
    plan, r = advance(r, task=None, attempts={1: obs(1, "failed", exit_code=1, reason="Error")})
    assert r.status.phase == Phase.RUNNING and r.status.conditions[0].reason == "TaskNotFound"
    assert plan.start_attempt is None
    plan, r = advance(r, task=task(retry={"maxAttempts": 1}), attempts={1: obs(1, "failed", exit_code=1, reason="Error")})
    assert r.status.phase == Phase.FAILED


def test_a_payload_too_large_for_a_command_task_fails_at_once_naming_the_limit():
    big = {"blob": "x" * (300 * 1024)}
    plan, r = advance(run(payload=big), task=task(command=["cat"]))
    assert r.status.phase == Phase.FAILED and plan.start_attempt is None
    assert r.status.conditions[0].reason == "PayloadTooLarge" and "at most" in r.status.error.message
    plan, r = advance(run(payload=big), task=task(entrypoint="m:f"))  # the runtime reads it from the TaskRun
    assert plan.start_attempt == 1


def test_a_started_attempt_is_recorded_with_the_running_write_and_not_rewritten_while_active():
    plan, r = advance(run(), task=task())
    assert [(a.attempt, a.job_name, a.start_time) for a in r.status.attempts] == [(1, "r1-1", NOW)]
    again, r2 = advance(r, task=task(), attempts={1: obs(1, "active")})
    assert r2.status.attempts == r.status.attempts  # no status write while it runs


def test_messages_are_bounded_and_tracebacks_keep_their_end():
    assert bounded("x" * 5000).endswith("...") and len(bounded("x" * 5000)) == 1024
    tb = "Traceback\n" + "  frame\n" * 3000 + "ValueError: the cause"
    assert bounded(tb, 8192, keep_end=True).endswith("ValueError: the cause") and len(bounded(tb, 8192, True)) == 8192
    failed = plan_failed(run(), NOW, "ReconcileError", "OverflowError: " + "date value out of range " * 100)
    assert failed.status.phase == Phase.FAILED and len(failed.status.conditions[0].message) <= 1024


def test_an_attempt_the_status_shows_waiting_to_start_is_not_timed_out_by_its_deadline():
    from kubetasks.core.observe import StartProblem

    r = run()
    plan, r = advance(r, task=task(retry={"maxAttempts": 1}))
    waiting = StartProblem("ErrImageNeverPull", 'image "x" is not present')
    plan, r = advance(r, task=task(retry={"maxAttempts": 1}), attempts={1: obs(1, "active")}, start_problem=waiting)
    assert r.status.phase == Phase.RUNNING and r.status.conditions[0].reason == "ErrImageNeverPull"
    plan, r = advance(r, task=task(retry={"maxAttempts": 1}), attempts={1: obs(1, "timed_out", reason="DeadlineExceeded")})
    assert r.status.phase == Phase.FAILED and r.status.attempts[0].reason == "ErrImageNeverPull"
    plan, ran = advance(run(), task=task(), attempts={1: obs(1, "timed_out", reason="DeadlineExceeded")})
    assert ran.status.phase == Phase.TIMED_OUT


def test_a_start_problem_no_wait_can_mend_fails_the_attempt_and_the_run_at_once():
    from kubetasks.core.observe import StartProblem

    t = task(retry={"maxAttempts": 3})
    _, r = advance(run(), task=t)
    never = StartProblem("ErrImageNeverPull", 'image "x:1" is not present', permanent=True)
    plan, r = advance(r, task=t, attempts={1: obs(1, "active")}, start_problem=never,
                      start_deadline=NOW + timedelta(seconds=300))  # the deadline is far: not waited for
    assert plan.stop_job == "r1-1" and plan.start_attempt is None
    assert r.status.phase == Phase.FAILED and r.status.attempt == 1 and r.status.attempts[0].reason == "ErrImageNeverPull"
    assert "cannot start" in r.status.attempts[0].message
    assert "cannot start until its Task changes" in r.status.conditions[0].message
    assert r.status.error.type == "ErrImageNeverPull"


def test_an_attempt_ended_by_maxduration_before_it_started_is_retried_then_never_timed_out():
    """The issue's case: an Event said "retrying in 1s" and the run then ended TimedOut."""
    from kubetasks.core.observe import StartProblem

    t = task(retry={"maxAttempts": 2, "minDelay": "1s"}, maxDuration="10s")
    _, r = advance(run(), task=t)
    pull = StartProblem("ImagePullBackOff", 'Back-off pulling image "x:1"')
    _, r = advance(r, task=t, attempts={1: obs(1, "active")}, start_problem=pull)
    timed_out = {1: obs(1, "timed_out", reason="DeadlineExceeded")}  # its pod is gone: nothing to read
    plan, r = advance(r, task=t, attempts=timed_out)
    assert r.status.phase == Phase.RETRYING and r.status.attempts[0].reason == "ImagePullBackOff"
    assert any("retrying in 1s" in e.message for e in plan.events)
    plan, r = advance(r, task=t, attempts=timed_out)  # the next look at the same Job
    assert r.status.phase == Phase.RETRYING and plan.events == []
    plan, r = advance(r, task=t, attempts=timed_out, now=NOW + timedelta(seconds=1))
    assert plan.start_attempt == 2 and r.status.phase == Phase.RUNNING


def test_a_start_problem_the_status_showed_names_an_attempt_whose_killed_pod_no_longer_does():
    """CI's case: the pull error showed while the attempt waited; at maxDuration the kubelet
    killed the container that never ran, and its pod said only NotStarted (exit code 137)."""
    from kubetasks.core.observe import StartProblem

    t = task(retry={"maxAttempts": 2, "minDelay": "1s"}, maxDuration="20s")
    _, r = advance(run(), task=t)
    _, r = advance(r, task=t, attempts={1: obs(1, "active")}, start_problem=StartProblem("ErrImagePull", "no such host"))
    killed = {1: obs(1, "failed", reason="NotStarted", message="its container was still being created")}
    plan, r = advance(r, task=t, attempts=killed)
    assert r.status.phase == Phase.RETRYING and r.status.attempts[0].reason == "ErrImagePull", r.status.attempts
    assert "did not start before maxDuration (ErrImagePull)" in r.status.error.message
    plan, r = advance(r, task=t, attempts=killed)  # the next look at the same Job: what it recorded holds
    assert r.status.attempts[0].reason == "ErrImagePull" and plan.events == []
    # nothing shown while it waited: a start that failed all the same, said so
    _, fresh = advance(run(), task=t)
    _, fresh = advance(fresh, task=t, attempts=killed)
    assert fresh.status.attempts[0].reason == "NotStarted" and fresh.status.phase == Phase.RETRYING


def test_a_retry_of_a_start_that_failed_fails_at_first_sight_unless_its_task_changed():
    from kubetasks.api import Task
    from kubetasks.core.observe import StartProblem

    def gen(n):
        return Task.model_validate({"metadata": {"name": "hello", "namespace": "ns", "generation": n},
                                    "spec": {"image": "img:1", "retry": {"maxAttempts": 3, "minDelay": "1s"}}})

    deadline = NOW + timedelta(seconds=300)
    pull = StartProblem("ErrImagePull", "failed to pull: no such host")
    _, r = advance(run(), task=gen(1))
    assert r.status.attempts[0].task_generation == 1
    _, r = advance(r, task=gen(1), attempts={1: obs(1, "active")},  # waits its deadline: it may heal
                   start_problem=StartProblem("ImagePullBackOff", "Back-off"), start_deadline=deadline)
    assert r.status.phase == Phase.RUNNING
    _, r = advance(r, task=gen(1), attempts={1: obs(1, "active")}, start_problem=pull, now=deadline,
                   start_deadline=deadline)
    assert r.status.phase == Phase.RETRYING and r.status.attempts[0].task_generation == 1
    failed = {1: obs(1, "failed", reason="ErrImagePull")}
    later = deadline + timedelta(seconds=5)
    plan, r = advance(r, task=gen(1), attempts=failed, now=later)
    assert plan.start_attempt == 2
    retried = {**failed, 2: obs(2, "active", end=later)}
    second = later + timedelta(seconds=300)
    changed, _ = advance(r.model_copy(deep=True, update={"status": r.status.model_copy(deep=True, update={
        "attempts": [r.status.attempts[0], r.status.attempts[1].model_copy(update={"task_generation": 2})]})}),
        task=gen(2), attempts=retried, start_problem=pull, now=later + timedelta(seconds=20), start_deadline=second)
    assert changed.status.phase == Phase.RUNNING and changed.stop_job is None  # a changed Task waits its deadline
    plan, r = advance(r, task=gen(1), attempts=retried, start_problem=pull, now=later + timedelta(seconds=20),
                      start_deadline=second)
    assert plan.stop_job == "r1-2" and r.status.phase == Phase.RETRYING  # the same Task, the same problem
    assert "as attempt 1 of the same Task did not" in r.status.attempts[1].message


def test_an_attempt_last_seen_on_its_way_when_maxduration_ended_it_never_started():
    """Its pod gone before it said why: the last look (on its way) says it did not start."""
    from kubetasks.core.observe import NEVER_STARTED

    t = task(retry={"maxAttempts": 2, "minDelay": "1s"}, maxDuration="8s")
    _, r = advance(run(), task=t)
    plan, r = advance(r, task=t, attempts={1: obs(1, "timed_out", reason="DeadlineExceeded")},
                      start_problem=NEVER_STARTED)
    assert r.status.phase == Phase.RETRYING and r.status.attempts[0].reason == "NotStarted"
    plan, ran = advance(run(), task=t, attempts={1: obs(1, "timed_out", reason="DeadlineExceeded")})
    assert ran.status.phase == Phase.TIMED_OUT  # nothing says it did not start: it ran
