"""Flow control's admission (core.flow.admission_pass) over random histories (issue 19).

The model is the controller (controller/flow.py) reduced to its bookkeeping, at the core level:
two Tasks, some of them naming one TaskQueue, each with a total and/or a per-key limit, with or
without ``strictOrder`` and ``holdAcrossWaits``; runs with two concurrency keys and priorities.
Its truth is the stores': which runs have a Job (or a create in flight: an expectation), which
are in a durable wait, which wait to start, and what each run's status says. As in the
controller, the slots passed to the pure pass are derived from Jobs and expectations (a
``holdAcrossWaits`` limit is also held by a waiting run whose status says it has started), never
from a status phase; a waiter holding some of its limits across a wait is passed with ``held``,
and one holding all of them starts without a pass (FlowControl.try_start).

History events: create (one run, or two at the same instant: creation-time ties), a Job's end
with the run's end, a Job's end into a durable wait (sleep, retry backoff), a wait's end, a run
deleted or cancelled (waiting, sleeping or running), an operator restart (the served turns are
lost; holders and the line come back from the stores) and lost status writes (each start and
each wait writes the run's status; the write may be lost, then the status keeps the old attempt
until a later write lands).

Checked after every step:
- no limit is exceeded: runs with a Job or expectation, per limit, never above its capacity;
- holdAcrossWaits holds: runs with a Job, plus the started runs in a wait under such a limit,
  never above its capacity (a run that went into a wait keeps its slot; without the flag, the
  wait gives it up: a waiter is not held back by a sleeping run, see the next point);
- no waiter is stranded: each waiting run needs (does not already hold) a limit that is full,
  or, under ``strictOrder``, a strict limit a blocked run is stuck under (head of line);
- order: a run that starts has no run of its group (Task and key) waiting ahead of it by
  ``created − priority``, then creation time, then uid; under a strict limit, every run that
  starts comes, in the limit's line (least recently served group first, then that order),
  before every run under it left waiting;
- ``until`` (what try_start asks) decides a run as the full pass does;
and at the end every key is served: finishing what runs and waking what sleeps lets every run
start.

Two bugs these found, both fixed: a holdAcrossWaits lock taken from the status (one lost write
broke it: the controller now knows it from the run's Jobs, tests/unit/test_reconcile_flow.py), and
a waiter holding its lock stuck behind its group's head (the last test here).

Not modelled here: throttles (test_flow.test_a_throttle_never_starts_early), the controller's
events and its line's membership as its stores tell it (tests/unit/test_reconcile_flow.py drives
those against the fake API), a create in flight when the operator restarts, Task/queue spec
changes, and maxWaiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st

from kubetasks.api.flow import TaskQueueSpec
from kubetasks.api.task import TaskSpec
from kubetasks.core.flow import Limit, Waiter, admission_pass, group_of, limits_for, order_of

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
NS = "ns"
TASKS = ("t", "u")
KEYS = ("a", "b")


@dataclass
class Run:
    uid: str
    task: str
    key: str
    created: float
    priority: int
    limits: tuple[str, ...]
    state: str = "waiting"  # waiting (to start or resume) | running (a Job) | sleeping (a durable wait) | done
    attempts: int = 0  # Jobs created: the truth
    status_attempt: int = 0  # what its status says (lags after a lost write)

    @property
    def group(self) -> str:
        return group_of(NS, self.task, self.key)

    @property
    def order(self) -> tuple[float, float, str]:  # issue 19: created − priority, then created, then uid
        at = T0 + self.created
        return at - self.priority, at, self.uid


task_config = st.fixed_dictionaries({
    "limit": st.sampled_from([None, 1, 2, 3]),
    "perKey": st.sampled_from([None, 1, 2]),
    "holdAcrossWaits": st.booleans(),
    "strictOrder": st.booleans(),
    "queue": st.booleans(),
})
configs = st.tuples(st.tuples(task_config, task_config), st.integers(1, 3), st.booleans())

runs_at = st.integers(0, 40)
events = st.lists(st.one_of(
    st.tuples(st.just("create"), st.tuples(st.sampled_from(TASKS), st.sampled_from(KEYS), st.integers(-4, 4),
                                           st.integers(1, 2), st.booleans())),
    st.tuples(st.just("finish"), runs_at),
    st.tuples(st.just("wait"), st.tuples(runs_at, st.booleans())),  # (which, its status write lost)
    st.tuples(st.just("wake"), runs_at),
    st.tuples(st.just("leave"), runs_at),
    st.tuples(st.just("restart"), st.just(0)),
), max_size=50)


class Model:
    def __init__(self, tasks: tuple[dict, dict], queue_limit: int, queue_strict: bool) -> None:
        self.specs: dict[str, TaskSpec] = {}
        for name, cfg in zip(TASKS, tasks):
            fields: dict = {"image": "img:1", "command": ["true"]}
            if cfg["limit"] or cfg["perKey"]:
                fields["concurrency"] = {"limit": cfg["limit"], "perKey": cfg["perKey"],
                                         "holdAcrossWaits": cfg["holdAcrossWaits"], "strictOrder": cfg["strictOrder"]}
            if cfg["queue"]:
                fields["queue"] = "q"
            self.specs[name] = TaskSpec.model_validate(fields)
        self.queue = TaskQueueSpec(limit=queue_limit, strictOrder=queue_strict)
        self.limits: dict[str, Limit] = {}
        self.runs: dict[str, Run] = {}
        self.served: dict[str, int] = {}
        self.turn = 0
        self.clock = 0
        self.made = 0

    # The stores ----------------------------------------------------------------------------------
    def create(self, task: str, key: str, priority: int) -> None:
        limits = {lim.id: lim for lim in limits_for(task, self.specs[task], key, self.queue)}
        self.limits.update(limits)
        self.made += 1
        uid = f"{(self.made * 37) % 101:03d}"  # uids in another order than creation
        self.runs[uid] = Run(uid, task, key, self.clock, priority, tuple(limits))

    def unfinished(self, state: str | None = None) -> list[Run]:
        return sorted((r for r in self.runs.values() if r.state != "done" and (state is None or r.state == state)),
                      key=lambda r: r.uid)

    def holds(self, run: Run, lid: str) -> bool:
        """FlowControl._holds: a Job or an expectation; or, under holdAcrossWaits, a run that has
        started (its Jobs say so, as FlowControl._holds knows it)."""
        if run.state == "running":
            return True
        started = run.attempts
        return run.state != "done" and self.limits[lid].hold_across_waits and started > 0

    def used(self) -> dict[str, int]:
        return {lid: sum(1 for r in self.runs.values() if lid in r.limits and self.holds(r, lid)) for lid in self.limits}

    def start(self, run: Run, lost: bool) -> None:
        run.state, run.attempts = "running", run.attempts + 1
        if not lost:
            run.status_attempt = run.attempts

    # The controller's decisions --------------------------------------------------------------------
    def admit(self, lost: bool = False) -> None:
        for run in self.unfinished("waiting"):  # FlowControl.try_start: holds every limit it is under already
            if all(self.holds(run, lid) for lid in run.limits):
                self.start(run, lost)
        waiting = self.unfinished("waiting")
        groups: dict[str, list[Waiter]] = {}
        for run in waiting:
            groups.setdefault(run.group, []).append(
                Waiter(run.uid, run.uid, order_of(datetime.fromtimestamp(T0 + run.created, timezone.utc), run.priority,
                                                  run.uid), run.group, run.limits))
        for line in groups.values():
            line.sort(key=lambda w: w.order)
        held = {r.uid: frozenset(lid for lid in r.limits if self.holds(r, lid)) for r in waiting}
        used = self.used()
        decided = admission_pass(self.limits, used, groups, self.served, self.turn, held=held)
        for uid in list(self.runs)[::3]:  # try_start asks with until: the same answer for that run
            if self.runs[uid].state == "waiting":
                part = admission_pass(self.limits, used, groups, self.served, self.turn, until=uid, held=held)
                assert (uid in part.admitted) == (uid in decided.admitted), (uid, part, decided)
                assert part.admitted == decided.admitted[:len(part.admitted)]
        self.check_order(decided.admitted, held)
        for uid in decided.admitted:
            self.start(self.runs[uid], lost)
        self.served, self.turn = decided.served, self.turn + len(decided.admitted)

    # The properties --------------------------------------------------------------------------------
    def check_order(self, admitted: list[str], held: dict[str, frozenset[str]]) -> None:
        waiting = [r for r in self.unfinished("waiting") if r.uid not in admitted]
        for uid in admitted:  # priority with ageing, within a group
            run = self.runs[uid]
            if held[uid]:  # resuming with a lock it holds (holdAcrossWaits): ahead of those that wait for it
                continue
            ahead = [w.uid for w in waiting if w.group == run.group and w.order < run.order]
            assert not ahead, (uid, ahead)
        # Head of line under a strict limit: the limit's line is least recently served group first,
        # then order; a group's turn is the one it got at its last start (in this pass too).
        turns, key_of = dict(self.served), {}
        for turn, uid in enumerate(admitted, self.turn):
            run = self.runs[uid]
            key_of[uid] = (turns.get(run.group, -1), run.order)
            turns[run.group] = turn
        heads: dict[str, Run] = {}
        for w in sorted(waiting, key=lambda r: r.order):
            heads.setdefault(w.group, w)
        for lid, limit in self.limits.items():
            if not limit.strict:
                continue
            left = [(turns.get(w.group, -1), w.order) for w in heads.values() if lid in w.limits]
            late = [uid for uid in admitted if lid in self.runs[uid].limits and not held[uid] and left
                    and key_of[uid] > min(left)]
            assert not late, (lid, late, left)

    def check(self) -> None:
        used = self.used()
        for lid, limit in self.limits.items():
            jobs = sum(1 for r in self.unfinished("running") if lid in r.limits)
            assert jobs <= limit.capacity, (lid, jobs, limit.capacity)  # no limit exceeded
            if limit.hold_across_waits:  # and a started run keeps its slot through a wait
                locked = sum(1 for r in self.unfinished() if lid in r.limits and (r.state == "running" or r.attempts))
                assert locked <= limit.capacity, (lid, "holdAcrossWaits", locked, limit.capacity)
        full = {lid for lid, limit in self.limits.items() if used[lid] >= limit.capacity}
        waiting = self.unfinished("waiting")
        needs = {r.uid: [lid for lid in r.limits if not self.holds(r, lid)] for r in waiting}
        stuck: set[str] = set()
        stopped: set[str] = set()
        while True:  # the least fixpoint: a waiter needs a full limit, or a strict one a stuck waiter is under
            more = {r.uid for r in waiting if r.uid not in stuck and any(lid in full or lid in stopped
                                                                          for lid in needs[r.uid])}
            if not more:
                break
            stuck |= more
            stopped |= {lid for uid in more for lid in self.runs[uid].limits if self.limits[lid].strict}
        stranded = [(r.uid, needs[r.uid]) for r in waiting if r.uid not in stuck]
        assert not stranded, (stranded, used)


def play(config, history) -> Model:
    tasks, queue_limit, queue_strict = config
    m = Model(tasks, queue_limit, queue_strict)
    for kind, arg in history:
        m.clock += 1
        lost, writes = False, []
        if kind == "create":
            task, key, priority, count, lost = arg
            for _ in range(count):  # two at once: the same creation time
                m.create(task, key, priority)
        elif kind == "finish" and (running := m.unfinished("running")):
            running[arg % len(running)].state = "done"
        elif kind == "wait" and (running := m.unfinished("running")):  # its Job ended; the run sleeps
            run = running[arg[0] % len(running)]
            run.state = "sleeping"  # seen (and acted on: admit) before the run's own reconcile writes its status
            if not arg[1]:
                writes.append(run)
        elif kind == "wake" and (sleeping := m.unfinished("sleeping")):
            sleeping[arg % len(sleeping)].state = "waiting"
        elif kind == "leave" and (live := m.unfinished()):  # deleted or cancelled, whatever it was doing
            live[arg % len(live)].state = "done"
        elif kind == "restart":  # memory lost: the turns; holders and the line come back from the stores
            m.served, m.turn = {}, 0
        m.admit(lost)
        m.check()
        for run in writes:
            run.status_attempt = run.attempts
    for _ in range(400):  # every key is served: finish what runs, wake what sleeps
        if not m.unfinished("waiting") and not m.unfinished("sleeping"):
            break
        for run in m.unfinished("running")[:1] or m.unfinished("sleeping")[:1]:
            run.state = "done" if run.state == "running" else "waiting"
        m.admit()
        m.check()
    assert not m.unfinished("waiting"), [(r.uid, r.group, r.order) for r in m.unfinished("waiting")]
    return m


@settings(max_examples=250, deadline=None)
@given(configs, events)
def test_limits_hold_no_waiter_is_stranded_and_order_holds_over_random_histories(config, history):
    play(config, history)


strict_task = st.fixed_dictionaries({"limit": st.sampled_from([2, 3]), "perKey": st.just(1), "holdAcrossWaits": st.booleans(),
                                     "strictOrder": st.just(True), "queue": st.booleans()})
strict_configs = st.tuples(st.tuples(strict_task, task_config), st.integers(1, 3), st.booleans())


@settings(max_examples=150, deadline=None)
@given(strict_configs, events)
def test_head_of_line_order_holds_under_a_strict_limit_whose_runs_block_on_their_key(config, history):
    # The histories above seldom leave a head blocked by its key while its strict limit has room.
    play(config, history)


# The smallest history of a bug the properties found (issue 19), now fixed.
def test_a_run_holding_its_lock_is_not_stuck_behind_its_group():
    # concurrency {limit: 1, holdAcrossWaits} and a queue (not held across waits). r1 started and
    # is in a retry backoff, holding Task/t; r2, created later with priority 600, waits for
    # Task/t. r1's backoff ends: it needs only the queue, which has room, but r2 is its group's
    # head, blocked by Task/t, which r1 holds: it was a deadlock.
    limits = {"T": Limit("Task/t", "TaskLimit", 1, hold_across_waits=True), "Q": Limit("TaskQueue/q", "QueueLimit", 2)}
    at = datetime.fromtimestamp(T0, timezone.utc)
    r1 = Waiter("r1", "r1", order_of(at, 0, "r1"), "g", ("T", "Q"))
    r2 = Waiter("r2", "r2", order_of(at + timedelta(seconds=100), 600, "r2"), "g", ("T", "Q"))
    decided = admission_pass(limits, {"T": 1, "Q": 0}, {"g": [r2, r1]}, {}, 0, held={"r1": frozenset({"T"})})
    assert decided.admitted == ["r1"], decided
