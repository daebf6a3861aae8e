"""client-go's election decisions, on plain values and a virtual (monotonic) clock."""

import random
from datetime import datetime, timedelta, timezone

import pytest

from kubetasks.core.lease import (Action, LeaseRecord, Observation, decide, expires_at, observe, released,
                                  renew_overdue, request_timeout)

WALL = datetime(2026, 1, 1, tzinfo=timezone.utc)
LEASE = 15


def held(holder: str, renewed: datetime = WALL, duration: int | None = LEASE, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder, duration, WALL - timedelta(hours=1), renewed, transitions)


def test_no_lease_is_acquired_with_zero_transitions():
    decision = decide(observe(None, None, 100.0), "me", 100.0, WALL, LEASE)
    assert decision.action is Action.ACQUIRE
    assert decision.record == LeaseRecord("me", LEASE, WALL, WALL, 0)


def test_a_released_lease_is_acquired_at_once_and_counts_a_transition():
    record = released(held("old"), WALL)
    assert record.holder is None and record.duration_seconds == 1
    decision = decide(observe(None, record, 100.0), "me", 100.0, WALL, LEASE)
    assert decision.action is Action.ACQUIRE and decision.record is not None
    assert (decision.record.holder, decision.record.transitions) == ("me", 4)


def test_another_holders_lease_is_waited_for_until_it_has_been_unchanged_for_its_duration():
    seen = observe(None, held("other", duration=20), 100.0)
    assert expires_at(seen, LEASE) == 120.0  # the record's own duration, not ours
    assert decide(seen, "me", 119.9, WALL, LEASE).action is Action.WAIT
    taken = decide(observe(seen, held("other", duration=20), 120.0), "me", 120.0, WALL, LEASE)
    assert taken.action is Action.ACQUIRE and taken.record is not None
    assert (taken.record.holder, taken.record.transitions, taken.record.acquire_time) == ("me", 4, WALL)


def test_expiry_counts_from_when_the_record_changed_not_from_its_renew_time():
    # renewTime says "a day ago" (a skewed clock), but we only just saw it: still held.
    stale_looking = held("other", renewed=WALL - timedelta(days=1))
    assert decide(observe(None, stale_looking, 100.0), "me", 100.0, WALL, LEASE).action is Action.WAIT
    # ...and a renewTime "in the future" does not keep it alive once it stops changing.
    future = held("other", renewed=WALL + timedelta(days=1))
    seen = observe(observe(None, future, 100.0), future, 110.0)
    assert seen.changed_at == 100.0
    assert decide(seen, "me", 115.0, WALL, LEASE).action is Action.ACQUIRE


def test_a_renewal_resets_the_observed_time():
    first = observe(None, held("other", renewed=WALL), 100.0)
    second = observe(first, held("other", renewed=WALL + timedelta(seconds=2)), 110.0)
    assert second.changed_at == 110.0
    assert decide(second, "me", 124.0, WALL, LEASE).action is Action.WAIT


def test_a_missing_duration_falls_back_to_ours():
    assert expires_at(observe(None, held("other", duration=None), 100.0), LEASE) == 115.0


def test_our_own_lease_is_renewed_keeping_acquire_time_and_transitions():
    mine = held("me", renewed=WALL, duration=30)
    later = WALL + timedelta(seconds=2)
    decision = decide(observe(None, mine, 100.0), "me", 100.0, later, LEASE)
    assert decision.action is Action.RENEW
    assert decision.record == LeaseRecord("me", LEASE, mine.acquire_time, later, 3)


def test_spec_round_trip_in_the_api_servers_microtime_format():
    record = LeaseRecord("me", LEASE, WALL, WALL + timedelta(microseconds=5), 2)
    spec = record.to_spec()
    assert spec == {"holderIdentity": "me", "leaseDurationSeconds": LEASE, "acquireTime": "2026-01-01T00:00:00.000000Z",
                    "renewTime": "2026-01-01T00:00:00.000005Z", "leaseTransitions": 2}
    assert LeaseRecord.from_spec(spec) == record
    # as the client returns it (isoformat), and client-go's released "" holder
    assert LeaseRecord.from_spec({"holderIdentity": "", "renewTime": "2026-01-01T00:00:00+00:00"}) == \
        LeaseRecord(None, None, None, WALL, 0)
    assert released(record, WALL).to_spec()["holderIdentity"] is None  # null clears it in a replace


def test_renew_deadline_and_request_timeouts():
    assert not renew_overdue(100.0, 110.0, 10)
    assert renew_overdue(100.0, 110.01, 10)
    assert request_timeout(None, 500.0, 10, 5) == 5  # a standby has no deadline
    assert request_timeout(100.0, 102.0, 10, 5) == 5
    assert request_timeout(100.0, 107.5, 10, 5) == pytest.approx(2.5)
    assert request_timeout(100.0, 111.0, 10, 5) < 0


def test_property_never_acquires_a_lease_another_holder_renewed_less_than_a_duration_ago():
    """Another holder renews at random times (stamping renewTime with a randomly skewed clock) and
    stops at 200 s; we read at random times and miss some reads. Whenever we decide to acquire,
    the holder's last write is at least a lease duration old in true time; and we do acquire."""
    for seed in range(500):
        rng = random.Random(seed)
        skew = timedelta(seconds=rng.uniform(-3600, 3600))
        duration = rng.choice([1, 5, 15, 60])
        writes = [0.0]
        seen: Observation | None = None
        t, acquired = 0.0, False
        while t < 300 and not acquired:
            t += rng.uniform(0.01, 4)
            if rng.random() < 0.3 and t < 200:
                writes.append(t)
            if rng.random() < 0.4:
                continue  # our read fails
            record = held("other", renewed=WALL + skew + timedelta(seconds=writes[-1]), duration=duration)
            seen = observe(seen, record, t)
            acquired = decide(seen, "me", t, WALL, LEASE).action is Action.ACQUIRE
            assert not acquired or t - writes[-1] >= duration, f"seed {seed}: took a Lease renewed at {writes[-1]} at {t}"
        assert acquired, f"seed {seed}: never acquired a Lease abandoned at 200 s"
