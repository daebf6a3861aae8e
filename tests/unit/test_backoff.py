from datetime import datetime, timedelta, timezone

import pytest

from kubetasks.api.common import RetryPolicy
from kubetasks.core.backoff import next_attempt_at, retry_delay, schedule


def test_exponential_doubles_from_min_delay_and_stops_at_max_delay():
    policy = RetryPolicy(max_attempts=6, backoff="exponential", factor=2, min_delay="1s", max_delay="5s")
    assert [d.total_seconds() for d in schedule(policy)] == [1, 2, 4, 5, 5]


def test_linear_and_fixed():
    linear = RetryPolicy(max_attempts=4, backoff="linear", factor=1, min_delay="2s", max_delay="1h")
    assert [d.total_seconds() for d in schedule(linear)] == [2, 4, 6]
    fixed = RetryPolicy(max_attempts=4, backoff="fixed", min_delay="3s")
    assert [d.total_seconds() for d in schedule(fixed)] == [3, 3, 3]


def test_jitter_is_bounded_and_deterministic_per_seed():
    policy = RetryPolicy(min_delay="10s", max_delay="1m", jitter=0.5, backoff="fixed")
    delays = {retry_delay(policy, 1, seed=f"uid-{i}").total_seconds() for i in range(50)}
    assert all(5 <= d <= 15 for d in delays)
    assert len(delays) > 10  # it does vary between runs...
    assert retry_delay(policy, 1, "uid-1") == retry_delay(policy, 1, "uid-1")  # ...but not between restarts


def test_next_attempt_at_adds_the_delay_to_the_failure_time():
    failed = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert next_attempt_at(RetryPolicy(min_delay="2s"), 2, failed) == failed + timedelta(seconds=4)


def test_failures_count_from_one():
    with pytest.raises(ValueError):
        retry_delay(RetryPolicy(), 0)
