"""The planner honours what a task's catch_error hook reported (runtime.lifecycle -> protocol.Report)."""

from datetime import timedelta

import pytest
from hypothesis import given, strategies as st

from kubetasks.api import Phase
from kubetasks.api.common import RetryPolicy
from kubetasks.core.plan import CHOSEN_RETRY_LIMIT, chosen_retry_at, retries_left
from kubetasks.protocol import Report
from tests.unit.test_plan import NOW, advance, obs, run, task

T = task(retry={"maxAttempts": 3, "minDelay": "2s", "factor": 2})


def failed(attempt, code=1, end=NOW, **report):
    return obs(attempt, "failed", end=end, exit_code=code, reason="Error",
               report=Report("failed", error_type="RuntimeError", error_message="boom", **report))


@pytest.mark.parametrize("code", [1, 78])  # the runtime exits 78; a Task may not list 78 as permanent
def test_skip_retrying_fails_the_run_at_once_with_attempts_left_and_says_why(code):
    _, r = advance(run(), task=T)
    plan, r = advance(r, task=T, attempts={1: failed(1, code=code, skip_retrying=True)})
    assert r.status.phase == Phase.FAILED and plan.start_attempt is None
    assert "catch_error hook chose to skip retrying" in r.status.conditions[0].message


def test_retry_at_sets_the_next_attempt_instead_of_the_backoff():
    _, r = advance(run(), task=T)
    at = NOW + timedelta(seconds=30)
    plan, r = advance(r, task=T, attempts={1: failed(1, retry_at=at)})
    assert r.status.phase == Phase.RETRYING and r.status.next_retry_at == at and plan.requeue_at == at


def test_a_retry_time_is_still_bounded_by_max_attempts():
    _, r = advance(run(), task=task(retry={"maxAttempts": 1}))
    _, r = advance(r, task=task(retry={"maxAttempts": 1}), attempts={1: failed(1, retry_at=NOW + timedelta(seconds=5))})
    assert r.status.phase == Phase.FAILED


def test_a_forged_far_future_or_past_time_is_bounded_to_a_day_after_the_failure_and_not_before_it():
    _, r = advance(run(), task=T)
    _, far = advance(r, task=T, attempts={1: failed(1, retry_at=NOW + timedelta(days=3650))})
    assert far.status.next_retry_at == NOW + CHOSEN_RETRY_LIMIT
    plan, past = advance(r, task=T, attempts={1: failed(1, retry_at=NOW - timedelta(days=1))})
    assert plan.start_attempt == 2  # due at once


@given(st.integers(-10**8, 10**8))
def test_chosen_retry_at_is_always_within_the_bound(seconds):
    at = chosen_retry_at(NOW + timedelta(seconds=seconds), NOW)
    assert NOW <= at <= NOW + CHOSEN_RETRY_LIMIT


def test_retries_left_counts_failures_not_sleeps_and_is_zero_when_errors_do_not_retry():
    _, r = advance(run(), task=T)
    assert retries_left(RetryPolicy(max_attempts=3), r.status) == 2
    _, r = advance(r, task=T, attempts={1: failed(1)})
    assert retries_left(RetryPolicy(max_attempts=3), r.status) == 1
    assert retries_left(RetryPolicy(max_attempts=3, retry_on=["OOMKilled"]), r.status) == 0


def test_the_report_round_trips_its_decision_and_ignores_forged_ones():
    at = NOW + timedelta(seconds=7)
    assert Report.decode(Report("failed", error_message="x", retry_at=at).encode()).retry_at == at
    assert Report.decode(Report("failed", error_message="x", skip_retrying=True).encode()).skip_retrying
    for forged in ('{"skip": "yes"}', '{"at": 12}', '{"at": "soon"}', '[1]', '"skip"'):
        text = '{"kubetasks": 1, "outcome": "failed", "retry": %s}' % forged
        decoded = Report.decode(text)
        assert decoded is not None and not decoded.skip_retrying and decoded.retry_at is None
    success = Report.decode('{"kubetasks": 1, "outcome": "succeeded", "retry": {"skip": true}}')
    assert success is not None and not success.skip_retrying  # only a failure carries a decision
