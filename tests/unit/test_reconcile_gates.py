"""Debounce and overlap through the run reconciler, against the fake API server: what is written,
that one Job is made for a debounced burst, and that a restart decides the same."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.unit.test_reconcile_runs import NS, World, task, taskrun

T0 = datetime.now(timezone.utc)


@pytest.fixture(autouse=True)
def _t0() -> None:
    """Runs are made a minute before each test (a module-level time would age while others run)."""
    global T0
    T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=60)


def at(body: dict[str, Any], seconds: float) -> dict[str, Any]:
    body["metadata"]["creationTimestamp"] = (T0 + timedelta(seconds=seconds)).isoformat()
    return body


def debounced(name: str, seconds: float, mode: str = "leading", delay: str = "3s", **spec: Any) -> dict[str, Any]:
    return at(taskrun(name, debounce={"key": "k", "delay": delay, "maxDelay": "2h", "mode": mode},
                      payload={"n": name}, **spec), seconds)


def test_a_debounced_burst_makes_one_job_and_the_others_follow_it():
    runs = [debounced(f"r{i}", i, delay="1h") for i in range(4)]  # created 1 s apart, long since
    w = World(task(), *runs)
    w.settle(*(f"r{i}" for i in range(4)))
    assert w.status("r0")["phase"] == "Delayed"
    assert w.status("r0")["waitingFor"] == {"reason": "Debounced", "limit": "Debounce/t/k"}
    for i in (1, 2, 3):
        assert w.status(f"r{i}")["phase"] == "Superseded" and w.status(f"r{i}")["supersededBy"] == "r0"
    assert ("r1", "Normal", "Superseded") in [e[:3] for e in w.api.events]
    assert w.api.created() == []
    w.restart()  # nothing in memory: the same from the stores
    w.settle("r0")
    assert w.status("r0")["phase"] == "Delayed" and w.api.created() == []


def test_the_survivor_starts_when_the_key_is_quiet_and_says_no_longer_why_it_waited():
    w = World(task(), debounced("r0", 0, delay="90s"), debounced("r1", 1, delay="90s"))
    w.settle("r0", "r1")
    assert w.status("r0")["phase"] == "Delayed"
    assert w.reconcile("r0") == T0 + timedelta(seconds=91)  # the requeue: delay after the newest
    for name in ("r0", "r1"):  # time passes: both were made two minutes earlier
        earlier = T0 - timedelta(seconds=120) + timedelta(seconds=int(name[1]))
        w.api.update("TaskRun", NS, name, metadata={"creationTimestamp": earlier.isoformat()})
    w.api.deliver(w.op.cache)
    w.settle("r0")
    assert w.status("r0")["phase"] == "Running" and "waitingFor" not in w.status("r0")
    assert w.api.created() == ["r0-1"]


def test_trailing_keeps_the_last_payload():
    w = World(task(), *(debounced(f"r{i}", i, mode="trailing", delay="1s") for i in range(3)))
    w.settle("r0", "r1", "r2")
    assert w.api.created() == ["r2-1"]
    assert [w.status(f"r{i}").get("supersededBy") for i in range(2)] == ["r2", "r2"]


def test_an_idempotency_key_wins_over_a_debounce_key():
    w = World(task(), debounced("a", 0, delay="1h", idempotencyKey="x"), debounced("b", 1, delay="1h", idempotencyKey="x"))
    w.settle("a", "b")
    assert w.status("a")["phase"] == "Delayed"
    assert w.status("b")["phase"] == "Duplicate" and w.status("b")["duplicateOf"] == "a"


def test_overlap_skip_and_cancel_new():
    for policy, phase in (("skip", "Skipped"), ("cancelNew", "Cancelled")):
        w = World(task(overlap=policy), at(taskrun("old", concurrencyKey="k"), 0), at(taskrun("new", concurrencyKey="k"), 1),
                  at(taskrun("other", concurrencyKey="j"), 2))
        w.settle("new", "old", "other")
        assert w.status("new")["phase"] == phase and "'old'" in w.status("new")["conditions"][0]["message"]
        assert sorted(w.api.created()) == ["old-1", "other-1"]


def test_overlap_cancel_running_cancels_the_older_run_by_its_uid():
    w = World(task(overlap="cancelRunning"), at(taskrun("old", concurrencyKey="k"), 0))
    w.settle("old")
    assert w.status("old")["phase"] == "Running"
    w.api.add(at(taskrun("new", concurrencyKey="k"), 1))
    w.api.deliver(w.op.cache)
    w.settle("new", "old")
    assert w.api.objects[("TaskRun", NS, "old")]["spec"]["cancel"] is True
    assert w.status("old")["phase"] == "Cancelled" and w.status("new")["phase"] == "Running"
    assert ("old", "Normal", "OverlapCancelled") in [e[:3] for e in w.api.events]
    assert sorted(w.api.created()) == ["new-1", "old-1"] and [j["metadata"]["name"] for j in w.api.jobs()] == ["new-1"]
