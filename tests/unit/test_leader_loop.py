"""The election loop and watchdog (kubetasks.controller.leader) on a fake Lease API and a virtual clock."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest

from kubetasks.controller import leader
from kubetasks.controller.leader import Conflict, Elector, standby_liveness
from kubetasks.core.lease import LeaseRecord
from tests.conftest import free_port, wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Server:
    """The API server's copy of one Lease, with a resourceVersion per write."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0


class FakeLeases:
    """One replica's view of the Lease: records every call's timeout, fails on demand.

    ``fail``: None, "fail" (the request times out unapplied) or "applied" (the server applied
    it but the response was lost)."""

    def __init__(self, server: Server, clock: Clock) -> None:
        self.server, self.clock = server, clock
        self.fail: str | None = None
        self.calls: list[tuple[str, float, float]] = []  # (method, time sent, timeout)

    def _call(self, method: str, timeout: float) -> None:
        assert timeout > 0
        self.calls.append((method, self.clock(), timeout))
        if self.fail == "fail":
            raise TimeoutError("read timed out")

    def _lost_response(self) -> None:
        if self.fail == "applied":
            raise TimeoutError("read timed out (after the server applied it)")

    def get(self, timeout: float) -> tuple[LeaseRecord, str] | None:
        self._call("get", timeout)
        return None if self.server.record is None else (self.server.record, str(self.server.version))

    def create(self, record: LeaseRecord, timeout: float) -> None:
        self._call("create", timeout)
        if self.server.record is not None:
            raise Conflict("AlreadyExists")
        self.server.record, self.server.version = record, self.server.version + 1
        self._lost_response()

    def replace(self, record: LeaseRecord, resource_version: str, timeout: float) -> None:
        self._call("replace", timeout)
        if resource_version != str(self.server.version):
            raise Conflict("Conflict")
        self.server.record, self.server.version = record, self.server.version + 1
        self._lost_response()


def elector(server: Server, clock: Clock, identity: str, lost: list[str] | None = None) -> Elector:
    wall = lambda: datetime.fromtimestamp(clock(), timezone.utc)  # noqa: E731
    return Elector(FakeLeases(server, clock), identity, clock=clock, wall=wall,
                   on_lost=(lost if lost is not None else []).append)


def leases(e: Elector) -> FakeLeases:
    assert isinstance(e.leases, FakeLeases)
    return e.leases


def test_a_standby_creates_a_missing_lease_and_leads():
    server, clock = Server(), Clock()
    a = elector(server, clock, "a")
    a.step()
    assert a.elected.is_set() and a.renewed_at == clock.now
    assert server.record is not None and server.record.holder == "a"
    assert [m for m, *_ in leases(a).calls] == ["get", "create"]


def test_a_standby_waits_a_full_duration_after_the_last_change_it_saw():
    server, clock = Server(), Clock()
    a, b = elector(server, clock, "a"), elector(server, clock, "b")
    a.step()
    for _ in range(10):  # a renews every 2 s; b never gets in
        clock.now += 2
        a.step()
        b.step()
    assert not b.elected.is_set() and server.record is not None and server.record.holder == "a"
    last_write = clock.now
    a.stop()  # a dies
    while not b.elected.is_set():
        clock.now += 2
        b.step()
    assert clock.now - last_write >= leader.LEASE_SECONDS
    assert server.record.holder == "b" and server.record.transitions == 1


def test_a_lost_race_is_a_409_and_only_one_replica_leads():
    server, clock = Server(), Clock()
    a, b = elector(server, clock, "a"), elector(server, clock, "b")
    found = b.leases.get(5)  # b reads the empty Lease, then a creates it first
    a.step()
    assert found is None
    with pytest.raises(Conflict):
        b.leases.create(LeaseRecord("b"), 5)
    b.step()
    assert a.elected.is_set() and not b.elected.is_set()


def test_a_leader_stops_acting_before_another_replica_could_take_over():
    """An outage from just after a renewal: every request of the leader is timed to end by its
    renew deadline, the watchdog fires just past the deadline, and a standby that keeps reading
    through the outage cannot take the Lease until later still."""
    server, clock = Server(), Clock()
    lost: list[str] = []
    a, b = elector(server, clock, "a", lost), elector(server, clock, "b")
    a.step()
    b.step()
    renewed = a.renewed_at
    assert renewed is not None
    leases(a).fail = leases(b).fail = "fail"
    stopped_acting = None
    while stopped_acting is None:
        clock.now += 0.5
        if a.overdue():  # what the watchdog checks every 0.5 s
            stopped_acting = clock.now
        elif clock.now % 2 == 0:
            with contextlib.suppress(TimeoutError):  # at the deadline itself it sends nothing
                a.step()
    assert renewed + leader.RENEW_DEADLINE_SECONDS < stopped_acting <= renewed + leader.RENEW_DEADLINE_SECONDS + 0.5
    for _, sent, timeout in leases(a).calls[2:]:
        assert sent + timeout <= renewed + leader.RENEW_DEADLINE_SECONDS
    leases(b).fail = None
    b.step()
    assert not b.elected.is_set(), "the Lease has not expired yet for b"
    while not b.elected.is_set():
        clock.now += 2
        b.step()
    assert clock.now >= renewed + leader.LEASE_SECONDS > stopped_acting


def test_a_leader_that_sees_another_holder_gives_up_at_once():
    server, clock = Server(), Clock()
    lost: list[str] = []
    a = elector(server, clock, "a", lost)
    a.step()
    assert server.record is not None
    server.record, server.version = LeaseRecord("intruder", 15), server.version + 1
    clock.now += 2
    a.step()
    assert lost == ["the Lease is now held by intruder"] and a.stopped.is_set()


def test_a_write_applied_but_unanswered_is_picked_up_as_ours_on_the_next_read():
    server, clock = Server(), Clock()
    a = elector(server, clock, "a")
    leases(a).fail = "applied"
    with pytest.raises(TimeoutError):
        a.step()  # the create landed, but we never heard
    assert not a.elected.is_set() and a.renewed_at is None
    leases(a).fail = None
    clock.now += 2
    a.step()
    assert a.elected.is_set() and a.renewed_at == clock.now
    assert [m for m, *_ in leases(a).calls] == ["get", "create", "get", "replace"]


def test_property_at_most_one_replica_acts_through_random_faults():
    """Three replicas on one virtual clock, 0.5 s ticks: random failed requests, lost responses,
    outages and restarts. A replica acts from its election until the watchdog (or a foreign holder)
    stops it; at no tick do two act. And after the faults end, someone leads."""
    for seed in range(40):
        rng = random.Random(seed)
        server, clock = Server(), Clock()
        start = clock.now
        replicas: dict[str, tuple[Elector, list[float]]] = {}  # identity -> (elector, [next round])
        n = 0

        def spawn() -> None:
            nonlocal n
            n += 1
            replicas[f"r{n}"] = (elector(server, clock, f"r{n}"), [clock.now])

        for _ in range(3):
            spawn()
        outages = [(start + s, start + s + rng.uniform(5, 40)) for s in sorted(rng.uniform(0, 300) for _ in range(3))]
        while clock.now < start + 400:
            clock.now += 0.5
            faulty = clock.now < start + 340
            down = any(a <= clock.now < b for a, b in outages)
            for name, (e, _) in list(replicas.items()):
                if e.elected.is_set() and e.overdue():
                    e._lose("overdue")
                if e.stopped.is_set():  # exited: the pod restarts as a new replica
                    del replicas[name]
                    spawn()
            for e, next_round in list(replicas.values()):
                if clock.now < next_round[0]:
                    continue
                roll = rng.random()
                leases(e).fail = "fail" if down or (faulty and roll < 0.15) else \
                    "applied" if faulty and roll < 0.25 else None
                try:
                    e.step()
                except (TimeoutError, Conflict):
                    next_round[0] = clock.now + (leader.REQUEST_TIMEOUT_SECONDS if leases(e).fail else 0)
                next_round[0] = max(next_round[0], clock.now) + leader.RETRY_SECONDS
            acting = [name for name, (e, _) in replicas.items() if e.elected.is_set() and not e.stopped.is_set()]
            assert len(acting) <= 1, f"seed {seed}: {acting} act together at {clock.now - start}s"
        assert acting, f"seed {seed}: no leader 60 s after the faults ended"


def test_the_loop_survives_any_exception_and_then_leads(monkeypatch):
    monkeypatch.setattr(leader, "RETRY_SECONDS", 0.01)
    server, clock = Server(), Clock()
    errors = iter([RuntimeError("bug"), KeyError("spec"), TimeoutError("down"), ConnectionResetError()] * 3)

    class Flaky(FakeLeases):
        def get(self, timeout: float) -> tuple[LeaseRecord, str] | None:
            error = next(errors, None)
            if error:
                raise error
            return super().get(timeout)

    e = Elector(Flaky(server, clock), "a", clock=clock, on_lost=lambda reason: None)
    loop = threading.Thread(target=e.run, daemon=True)
    loop.start()
    try:
        assert e.elected.wait(5), "elected once the API answers"
        assert loop.is_alive()
    finally:
        e.stop()
        loop.join(5)
    assert not loop.is_alive()


def test_the_watchdog_thread_ends_leadership_past_the_deadline(monkeypatch):
    monkeypatch.setattr(leader, "WATCHDOG_SECONDS", 0.01)
    server, clock = Server(), Clock()
    lost: list[str] = []
    e = elector(server, clock, "a", lost)
    e.step()
    dog = threading.Thread(target=e.watchdog, daemon=True)
    dog.start()
    clock.now += leader.RENEW_DEADLINE_SECONDS
    time.sleep(0.1)
    assert not lost, "exactly at the deadline it still leads"
    clock.now += 0.1
    wait_until("the watchdog fires", lambda: lost, timeout=5, interval=0.01)
    dog.join(5)
    assert lost == [f"no renewal of the Lease for over {leader.RENEW_DEADLINE_SECONDS}s"]


def test_standby_liveness_answers_500_once_the_election_loop_is_dead():
    port = free_port()
    alive = [True]
    with standby_liveness(f"http://127.0.0.1:{port}/healthz", healthy=lambda: alive[0]):
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
        alive[0] = False
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert e.value.code == 500
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert e.value.code == 404
