"""Flow control's decisions (core.flow): limits, the admission pass, GCRA; and, over random
histories, the properties issue 19 asks for."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, settings, strategies as st

from kubetasks.api.task import TaskSpec
from kubetasks.core.flow import (
    Limit, Throttle, Waiter, admission_pass, domain_of, group_of, limits_for, order_of, throttle_room,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()


def spec(**fields) -> TaskSpec:
    return TaskSpec.model_validate({"image": "img:1", "command": ["true"], **fields})


def waiter(uid: str, group: str, limits: tuple[str, ...], created: float = 0.0, priority: int = 0) -> Waiter:
    return Waiter(uid, uid, (T0 + created - priority, T0 + created, uid), group, limits)


def groups_of(*waiters: Waiter) -> dict[str, list[Waiter]]:
    out: dict[str, list[Waiter]] = {}
    for w in waiters:
        out.setdefault(w.group, []).append(w)
    return {g: sorted(ws, key=lambda w: w.order) for g, ws in out.items()}


def test_a_task_names_its_limits_by_what_they_count():
    s = spec(concurrency={"limit": 20, "perKey": 2}, queue="shared", throttle={"limit": 5, "period": "10s"})
    from kubetasks.api.flow import TaskQueueSpec
    limits = limits_for("t", s, "acme", TaskQueueSpec(limit=3))
    assert [(lim.id, lim.reason, lim.capacity) for lim in limits] == [
        ("Task/t", "TaskLimit", 20), ("Task/t/key/acme", "KeyLimit", 2), ("TaskQueue/shared", "QueueLimit", 3),
        ("Throttle/t", "Throttled", 0)]
    assert limits[3].throttle == Throttle(2.0, 1, 10.0, task="t", key=None)
    per_key = limits_for("t", spec(throttle={"limit": 5, "period": "10s", "perKey": True}), "acme", None)
    assert per_key[0].id == "Throttle/t/key/acme" and per_key[0].throttle.key == "acme", per_key
    assert domain_of("ns", "t", s) == "ns/queue/shared" and domain_of("ns", "t", spec()) == "ns/task/t"
    # A queue that does not exist holds the runs back: its absence is what they wait for.
    assert limits_for("t", spec(queue="gone"), None, None)[0].capacity == 0
    assert limits_for("t", spec(), "k", None) == []


def test_priority_is_a_time_offset_and_ties_go_to_the_older_then_the_uid():
    assert order_of(datetime.fromtimestamp(T0 + 600, timezone.utc), 600, "b") < \
        order_of(datetime.fromtimestamp(T0 + 1, timezone.utc), 0, "a")
    same = datetime.fromtimestamp(T0, timezone.utc)
    assert order_of(same, 0, "a") < order_of(same, 0, "b")


def test_least_recently_served_key_goes_first_so_a_noisy_key_cannot_starve_others():
    limits = {"T": Limit("Task/t", "TaskLimit", 1)}
    noisy = [waiter(f"a{i}", "a", ("T",), created=i) for i in range(5)]
    quiet = waiter("b0", "b", ("T",), created=10)
    decided = admission_pass(limits, {"T": 0}, groups_of(*noisy, quiet), {"a": 7}, turn=8)
    assert decided.admitted == ["b0"]  # 'a' was served at turn 7, 'b' never
    decided = admission_pass(limits, {"T": 0}, groups_of(*noisy, quiet), {"a": 7, "b": 9}, turn=10)
    assert decided.admitted == ["a0"]


def test_a_blocked_head_holds_back_its_group_only_unless_strict():
    limits = {"T": Limit("Task/t", "TaskLimit", 2), "Ka": Limit("Task/t/key/a", "KeyLimit", 1),
              "Kb": Limit("Task/t/key/b", "KeyLimit", 1)}
    a1, b1 = waiter("a1", "a", ("T", "Ka"), created=0), waiter("b1", "b", ("T", "Kb"), created=1)
    decided = admission_pass(limits, {"Ka": 1}, groups_of(a1, b1), {}, 0)
    assert decided.admitted == ["b1"] and decided.blocked == {"a1": "Ka"}  # BestEffortFIFO
    strict = {**limits, "T": Limit("Task/t", "TaskLimit", 2, strict=True)}
    decided = admission_pass(strict, {"Ka": 1}, groups_of(a1, b1), {}, 0)
    assert decided.admitted == [] and decided.blocked == {"a1": "Ka", "b1": "Ka"}  # head of line


def test_gcra_spaces_starts_and_lets_a_burst_through_after_an_idle_spell():
    every_2s = Throttle(interval=2.0, burst=1, period=10.0)
    assert throttle_room([], T0, every_2s) == (1, T0 + 2.0)
    assert throttle_room([T0], T0 + 1.9, every_2s)[0] == 0
    assert throttle_room([T0], T0 + 2.0, every_2s)[0] == 1
    burst = Throttle(interval=2.0, burst=3, period=10.0)
    assert throttle_room([], T0, burst)[0] == 3
    assert throttle_room([T0, T0, T0], T0 + 1, burst)[0] == 0


# Properties over random histories -----------------------------------------------------------------
KEYS = ("a", "b", "c")
events = st.lists(st.one_of(
    st.tuples(st.just("create"), st.sampled_from(KEYS), st.integers(-600, 600)),
    st.tuples(st.just("finish"), st.integers(0, 50), st.just(0)),
    st.tuples(st.just("leave"), st.integers(0, 50), st.just(0)),
    st.tuples(st.just("restart"), st.just(""), st.just(0)),
), max_size=60)


class Model:
    """The controller reduced to its bookkeeping: holders per limit, the line per group."""

    def __init__(self, total: int, per_key: int) -> None:
        self.limits = {"T": Limit("Task/t", "TaskLimit", total)} | \
            {f"K{k}": Limit(f"Task/t/key/{k}", "KeyLimit", per_key) for k in KEYS}
        self.running: dict[str, str] = {}  # uid -> key
        self.waiting: dict[str, Waiter] = {}
        self.started: list[str] = []
        self.served: dict[str, int] = {}
        self.turn = 0
        self.clock = 0

    def used(self) -> dict[str, int]:
        used = {"T": len(self.running)}
        for k in KEYS:
            used[f"K{k}"] = sum(1 for key in self.running.values() if key == k)
        return used

    def admit(self) -> None:
        decided = admission_pass(self.limits, self.used(), groups_of(*self.waiting.values()), self.served, self.turn)
        for uid in decided.admitted:  # as the woken runs' reconciles take their slots
            w = self.waiting.pop(uid)
            self.running[uid] = w.group
            self.started.append(uid)
            # Priority with ageing: no run of its key still waiting was ahead of it.
            assert all(o.order > w.order for o in self.waiting.values() if o.group == w.group)
        self.served, self.turn = decided.served, self.turn + len(decided.admitted)

    def check(self) -> None:
        used = self.used()
        assert all(used[lid] <= limit.capacity for lid, limit in self.limits.items())
        free = {lid: limit.capacity - used[lid] for lid, limit in self.limits.items()}
        for w in self.waiting.values():  # nobody stranded: every waiter is held back by a full limit
            assert any(free[lid] <= 0 for lid in w.limits), (w, free)


@settings(max_examples=300, deadline=None)
@given(events, st.integers(1, 4), st.integers(1, 3))
def test_no_limit_is_exceeded_no_waiter_is_stranded_and_every_key_is_served(history, total, per_key):
    m = Model(total, per_key)
    for kind, arg, priority in history:
        m.clock += 1
        if kind == "create":
            uid = f"r{m.clock:03d}"
            m.waiting[uid] = waiter(uid, arg, ("T", f"K{arg}"), created=m.clock, priority=priority)
        elif kind == "finish" and m.running:
            del m.running[sorted(m.running)[arg % len(m.running)]]
        elif kind == "leave" and m.waiting:  # deleted or cancelled while it waited
            del m.waiting[sorted(m.waiting)[arg % len(m.waiting)]]
        elif kind == "restart":  # memory lost: the turns; holders and line come back from the stores
            m.served, m.turn = {}, 0
        m.admit()
        m.check()
    # Every key is eventually served: finishing what runs lets every waiter start.
    for _ in range(200):
        if not m.waiting:
            break
        del m.running[min(m.running)]
        m.admit()
        m.check()
    assert not m.waiting


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 60, allow_nan=False), min_size=1, max_size=40), st.integers(1, 5), st.integers(1, 3))
def test_a_throttle_never_starts_early(ticks, limit, burst):
    throttle = Throttle(interval=10.0 / limit, burst=burst, period=10.0)
    starts: list[float] = []
    for now in sorted(T0 + t for t in ticks):
        room, _ = throttle_room(starts, now, throttle)
        starts += [now] * room
    # GCRA: over any span, at most burst + span / interval starts.
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            assert j - i + 1 <= burst + (starts[j] - first) / throttle.interval + 1e-9


def test_group_names_carry_the_namespace_task_and_key():
    assert group_of("ns", "t", None) == "ns/t/" and group_of("ns", "t", "k") == "ns/t/k"


def test_a_run_holding_some_of_its_slots_across_a_wait_needs_room_only_in_the_others():
    limits = {"T": Limit("Task/t", "TaskLimit", 1, hold_across_waits=True), "Q": Limit("TaskQueue/q", "QueueLimit", 2)}
    r = waiter("r", "g", ("T", "Q"))
    assert admission_pass(limits, {"T": 1, "Q": 1}, groups_of(r), {}, 0, held={"r": frozenset({"T"})}).admitted == ["r"]
    assert admission_pass(limits, {"T": 1, "Q": 1}, groups_of(r), {}, 0).blocked == {"r": "T"}
