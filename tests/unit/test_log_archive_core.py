"""core.log_archive: retry with backoff while the store is down, give up at the deadline, and the
outcome waits for every upload under way."""

from hypothesis import given, strategies as st

from kubetasks.core.log_archive import (MAX_DELAY, State, Upload, after_store_failure, failure_message,
                                        held_job_ttl, job_ttl, outcome_may_be_written)


def test_backoff_doubles_up_to_a_cap():
    delays = [after_store_failure(Upload(first_try=0.0, failures=n), now=1.0, deadline=1e9).at - 1.0
              for n in range(1, 9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_last_try_at_the_deadline_then_give_up():
    upload = Upload(first_try=100.0, failures=7)
    assert after_store_failure(upload, now=390.0, deadline=300.0).at == 400.0  # not 420: the deadline
    late = after_store_failure(upload, now=400.0, deadline=300.0)
    assert late.give_up and late.at == 400.0


@given(first=st.floats(0, 1e6), failures=st.integers(1, 60), elapsed=st.floats(0, 1e4),
       deadline=st.floats(1, 3600))
def test_never_waits_past_the_deadline_nor_tries_in_the_past(first, failures, elapsed, deadline):
    now = first + elapsed
    step = after_store_failure(Upload(first_try=first, failures=failures), now, deadline)
    assert step.give_up == (now >= first + deadline)
    if not step.give_up:
        assert now < step.at <= first + deadline
        assert step.at - now <= MAX_DELAY + 1e-6  # floats: now + delay - now may round up


def test_outcome_waits_for_uploads_under_way_only():
    done, gave_up, none = Upload(0, state=State.ARCHIVED), Upload(0, state=State.GAVE_UP), Upload(0, state=State.NO_LOG)
    assert outcome_may_be_written([])
    assert outcome_may_be_written([None, done, gave_up, none])
    assert not outcome_may_be_written([done, Upload(0)])


def test_failure_message_says_how_long_and_why():
    message = failure_message(2, Upload(0, 9, State.GAVE_UP, "connection refused", last_failure=301.2), 300)
    assert message == ("the log of attempt 2 was not archived: the object store failed for 301 s, past the limit "
                       "of 300 s (9 tries): connection refused")


def test_a_jobs_ttl_outlives_its_logs_read_and_while_the_store_refuses_the_uploads_last_try():
    assert job_ttl(5) == 30 and job_ttl(86400) == 86400 and job_ttl(None) is None
    assert held_job_ttl(30, 300.0) == 360
    assert held_job_ttl(86400, 300.0) is None and held_job_ttl(None, 300.0) is None  # never lowered
