"""Flow control (issue 19) on the real cluster: concurrency keys, priority, throttle, and the
admission model under faults (a lost status write, a woken waiter deleted, a durable sleep, the
operator SIGKILLed mid-burst).

Every count comes from watches (``Timeline``), never a sampled list. The attempts holding slots
at once are replayed from the Job and pod watches' events in etcd revision order (``Slots``): an
attempt holds its slot from its Job's ADDED until its pod ends, its Job finishes (Complete or
Failed), is being deleted, or is gone, whichever comes first: the operator's own definition
(controller.flow), and a start it made after seeing a slot freed has a later revision than the
event that freed it. Start times are the times Job ADDED events arrived here (milliseconds).

Fast runs are kept on the kwok nodes (they complete pods at once); runs that must hold a slot
for a while sleep in real pods and are cancelled or deleted when the test has seen enough.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from kubetasks.core.children import job_finished
from tests.conftest import KWOK_PLACEMENT, JobWatch, apply, create, kube_api, kubectl, label, wait_until
from tests.integration.test_faults import (
    GROUP, VERSION, all_runs, attempt_problems, custom_api, operator_restored, wait_all,
)
from tests.integration.test_recreate import HOLD_LABEL, HoldingWebhook, registered, serving_tls
from tests.integration.test_runtime import sdk_task
from tests.integration.test_taskruns import status, task, taskrun

pytestmark = pytest.mark.cluster
HOLD_FOREVER = "import time; time.sleep(300)"  # a slot holder, cancelled or deleted by the test


# Watching --------------------------------------------------------------------------------------
POD_ENDED = ("Succeeded", "Failed")


class Seen(NamedTuple):
    at: float  # time.time() when the event arrived
    type: str  # ADDED, MODIFIED, DELETED
    kind: str  # Job, Pod, TaskRun
    name: str
    uid: str
    owner: str | None  # the controlling owner's uid (a Job's TaskRun, a pod's Job)
    active: bool  # a Job: unfinished, not being deleted; a pod: not ended; a TaskRun: not being deleted
    rv: int  # its resourceVersion: the etcd revision, an order across kinds that arrival times are not
    obj: dict[str, Any]


def controller_of(meta: dict[str, Any]) -> str | None:
    return next((o.get("uid") for o in meta.get("ownerReferences") or [] if o.get("controller")), None)


class Timeline(JobWatch):
    """JobWatch that also keeps every watch event on the namespace's Jobs, with its arrival time."""

    KIND = "Job"

    def __init__(self, namespace: str) -> None:
        super().__init__(namespace)
        self.events: list[Seen] = []

    def active(self, kind: str, obj: dict[str, Any]) -> bool:
        return kind != "DELETED" and not obj["metadata"].get("deletionTimestamp") and not job_finished(obj)

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        seen = Seen(time.time(), kind, self.KIND, meta.get("name", ""), meta.get("uid", ""), controller_of(meta),
                    self.active(kind, obj), int(meta.get("resourceVersion") or 0), obj)
        with self._lock:
            self.events.append(seen)

    def log(self) -> list[Seen]:
        with self._lock:
            return list(self.events)

    def starts(self) -> list[Seen]:
        """The first event of each Job (its ADDED), in the order they arrived."""
        first: dict[str, Seen] = {}
        for e in self.log():
            first.setdefault(e.uid, e)
        return list(first.values())

    def start_of(self, owner: str) -> Seen | None:
        return next((e for e in self.starts() if e.owner == owner), None)

    def wait_start(self, owner: str, timeout: float) -> Seen:
        return wait_until(f"a Job owned by {owner}", lambda: self.start_of(owner), timeout=timeout, interval=0.05)


class PodTimeline(Timeline):
    """The same, on the namespace's pods (a pod's end frees its attempt's slot before its Job says so)."""

    KIND = "Pod"

    @staticmethod
    def _new_batch_api() -> Any:
        from kubernetes import client

        return client.CoreV1Api(kube_api())

    def _call(self, api: Any, **kwargs: Any) -> Any:
        return api.list_namespaced_pod(self.namespace, **kwargs)

    def active(self, kind: str, obj: dict[str, Any]) -> bool:
        return (obj.get("status") or {}).get("phase") not in POD_ENDED


class RunTimeline(Timeline):
    """The same, on the namespace's TaskRuns."""

    KIND = "TaskRun"

    @staticmethod
    def _new_batch_api() -> Any:
        return custom_api()

    def _call(self, api: Any, **kwargs: Any) -> Any:
        return api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "taskruns", **kwargs)

    def active(self, kind: str, obj: dict[str, Any]) -> bool:
        return kind != "DELETED" and not obj["metadata"].get("deletionTimestamp")

    def gone(self, uid: str) -> Seen | None:
        """The first event that shows the run being deleted (deletionTimestamp set, or DELETED)."""
        return next((e for e in self.log() if e.uid == uid and not e.active), None)


class Peak(NamedTuple):
    total: int  # most attempts holding a slot at once
    per_key: int  # most attempts of one concurrency key holding a slot at once
    at_total: list[str]  # their Jobs at that moment
    at_key: list[str]


class Slots:
    """Watches on a namespace's Jobs and pods: an attempt holds its slot from its Job's ADDED to
    the first event that ends it (its pod ended, the Job finished, being deleted, or gone), as the
    operator counts (controller.flow: a pod's end frees the slot before the Job controller marks
    the Job finished). The two watches' events are replayed in etcd revision order."""

    def __init__(self, namespace: str) -> None:
        self.jobs, self.pods = Timeline(namespace), PodTimeline(namespace)

    def __enter__(self) -> Slots:
        self.jobs.__enter__()
        self.pods.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.pods.__exit__(*exc)
        self.jobs.__exit__(*exc)

    def peak(self, key_of: Callable[[str | None], str]) -> Peak:
        assert self.jobs.relists == self.pods.relists == 0, "a watch relisted: events between were not seen"
        return peak(sorted(self.jobs.log() + self.pods.log(), key=lambda e: e.rv), key_of)


def peak(events: Iterable[Seen], key_of: Callable[[str | None], str]) -> Peak:
    """Replays Job and pod events (in revision order): the most attempts holding a slot at once,
    in all and per key (``key_of`` maps a Job's owner uid to its run's concurrency key)."""
    active: dict[str, tuple[str, str]] = {}  # job uid -> (name, key)
    ended: set[str] = set()  # Jobs whose attempt ended (their later events do not bring it back)
    best = Peak(0, 0, [], [])
    for e in events:
        job = e.owner if e.kind == "Pod" else e.uid
        if e.kind == "Pod" and e.active:
            continue
        if e.active and job not in ended:
            active[job] = (e.name, key_of(e.owner))
        else:
            active.pop(job or "", None)
            ended.add(job or "")
        keys = Counter(k for _, k in active.values())
        key, most = keys.most_common(1)[0] if keys else ("", 0)
        if len(active) > best.total:
            best = best._replace(total=len(active), at_total=sorted(n for n, _ in active.values()))
        if most > best.per_key:
            best = best._replace(per_key=most, at_key=sorted(n for n, k in active.values() if k == key))
    return best


def keys_by_uid(runs: dict[str, dict[str, Any]]) -> Callable[[str | None], str]:
    keys = {r["metadata"]["uid"]: (r.get("spec") or {}).get("concurrencyKey") or "" for r in runs.values()}
    return lambda owner: keys.get(owner or "", f"<no run {owner}>")


def run_uids(namespace: str) -> dict[str, str]:
    """name -> uid of the namespace's TaskRuns."""
    return {n: r["metadata"]["uid"] for n, r in all_runs(namespace).items()}


def waiting_for(namespace: str, run: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    """Waits until the run is Queued and its status says which limit holds it."""
    return wait_until(f"{run} Queued for {reason}", lambda: (s := status(namespace, run)).get("phase") == "Queued"
                      and (s.get("waitingFor") or {}).get("reason") == reason and s, timeout=timeout)


def cancel(namespace: str, run: str) -> None:
    kubectl("patch", "taskrun", run, "-n", namespace, "--type=merge", "-p", '{"spec":{"cancel":true}}')


# 1. Concurrency keys -----------------------------------------------------------------------------
def test_keys_share_a_limit_fairly_and_never_exceed_it(namespace, operator):
    """3 keys x 6 runs, ``{limit: 2, perKey: 1}``, created key by key (all of a's first): never more
    than 1 per key or 2 in all, and each key's first run starts before any key's third (a FIFO of
    the runs that fit would start a-1 and a-2 before c-0).

    All are due at one moment (``notBefore``), a while after they are created: fairness is among the
    runs the operator has seen, and on a loaded machine the first kwok runs could otherwise end
    before c's were created (a CI run started a-0, a-4, b-0, a-5 before c-0 existed for it)."""
    apply(task("keyed", "print(1)", concurrency={"limit": 2, "perKey": 1}, **KWOK_PLACEMENT), namespace)
    names = [f"{k}-{i}" for k in "abc" for i in range(6)]
    due = (datetime.now(timezone.utc) + timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with Slots(namespace) as slots:
        jobs = slots.jobs
        create({"apiVersion": "v1", "kind": "List", "items": [
            label(taskrun(n, "keyed", concurrencyKey=n[0], notBefore=due)) for n in names]}, namespace)
        wait_all(namespace, names, timeout=180)
        runs = all_runs(namespace)
        created = jobs.seen()
    problems = attempt_problems(runs, created, max_attempts=1)
    assert not problems, problems
    key_of = keys_by_uid(runs)
    most = slots.peak(key_of)
    order = [(key_of(e.owner), e.name) for e in jobs.starts()]
    nth: Counter[str] = Counter()
    ranks = []  # (position, key, how many of its key had started, counting this one)
    for position, (key, _) in enumerate(order):
        nth[key] += 1
        ranks.append((position, key, nth[key]))
    print(f"most holding slots at once {most.total} {most.at_total}, max per key {most.per_key} {most.at_key}; "
          f"start order {[n for _, n in order]}")
    assert most.total <= 2 and most.per_key <= 1, most
    last_first = max(p for p, _, n in ranks if n == 1)
    first_third = min(p for p, _, n in ranks if n == 3)
    assert last_first < first_third, f"a key's third run started before every key's first: {order}"


# 2. Priority -----------------------------------------------------------------------------------------
def test_a_high_priority_run_starts_before_the_runs_waiting_longer(namespace, operator):
    apply(task("prio", HOLD_FOREVER, concurrency={"limit": 1}), namespace)
    with Timeline(namespace) as jobs:
        apply(taskrun("holder", "prio"), namespace)
        jobs.wait_start(wait_until("holder's uid", lambda: run_uids(namespace).get("holder"), timeout=30), timeout=60)
        low = [f"low-{i}" for i in range(5)]
        apply([taskrun(n, "prio") for n in low], namespace)
        for n in low:
            waiting_for(namespace, n, "TaskLimit")
        apply(taskrun("urgent", "prio", priority=600), namespace)
        waiting_for(namespace, "urgent", "TaskLimit")
        uids = run_uids(namespace)
        cancel(namespace, "holder")
        wait_until("a second Job", lambda: len(jobs.starts()) >= 2, timeout=60, interval=0.05)
        starts = jobs.starts()
    by_uid = {u: n for n, u in uids.items()}
    started = [by_uid.get(e.owner or "", e.name) for e in starts]
    print(f"Jobs in start order: {started}")
    assert started[:2] == ["holder", "urgent"], started
    assert all(status(namespace, n).get("phase") == "Queued" for n in low)


# 3. Throttle -----------------------------------------------------------------------------------------
def test_a_throttle_starts_runs_in_windows_never_early(namespace, operator):
    """``throttle: {limit: 5, period: 10s}``: 20 runs created at once start 5 per 10 s; no run
    starts less than 10 s after the run 5 places before it (GCRA spaces them period/limit apart)."""
    apply(task("paced", "print(1)", throttle={"limit": 5, "period": "10s"}, **KWOK_PLACEMENT), namespace)
    names = [f"t-{i:02d}" for i in range(20)]
    with Timeline(namespace) as jobs:
        create({"apiVersion": "v1", "kind": "List", "items": [label(taskrun(n, "paced")) for n in names]}, namespace)
        s = wait_until("t-19 Throttled", lambda: ((st := status(namespace, "t-19")).get("waitingFor") or {}).get(
            "reason") == "Throttled" and st, timeout=30)
        wait_all(namespace, names, timeout=150)
        runs = all_runs(namespace)
        created = jobs.seen()
    assert not attempt_problems(runs, created, max_attempts=1)
    starts = [e.at for e in jobs.starts()]
    assert len(starts) == 20, len(starts)
    gaps = [starts[i] - starts[i - 5] for i in range(5, 20)]
    windows = Counter(int((t - starts[0]) // 10) for t in starts)
    print(f"t-19 waited: {s['waitingFor']}; starts (s after the first): "
          f"{[round(t - starts[0], 3) for t in starts]}; gaps start[i]-start[i-5]: min {min(gaps):.3f}s "
          f"max {max(gaps):.3f}s; per 10 s window: {dict(sorted(windows.items()))}")
    # The operator decides a start and then creates its Job: the Jobs' creations (what a user
    # sees start) must keep the rate, not only the decisions.
    assert min(gaps) >= 10.0, f"a run started early: gaps {[round(g, 3) for g in gaps]}"
    # ... and starts as soon as the window allows: 20 starts, 5 per 10 s, need 4 windows (the last at
    # 38 s from the first, GCRA spacing 2 s); 3 s of slack for the Job creates on a busy cluster.
    assert max(windows.values()) <= 5 and starts[-1] - starts[0] < 38 + 3, \
        f"not in 4 windows: {dict(sorted(windows.items()))}, last start {starts[-1] - starts[0]:.1f}s after the first"


# 4. A lost status write ----------------------------------------------------------------------------
class RejectingWebhook(HoldingWebhook):
    """Denies the first ``taskruns/status`` write that says Running (the one after a Job create)
    with a 500: a write lost to a server error, which the operator retries (a 4xx other than
    408/409/429 says the request is wrong, and fails the run)."""

    def review(self, request: dict[str, Any]) -> tuple[int, str] | None:
        obj, old = request.get("object") or {}, request.get("oldObject") or {}
        phase = (obj.get("status") or {}).get("phase")
        with self._lock:
            self.seen.append((obj["metadata"]["uid"], phase))
            deny = self.held_uid is None and phase == "Running" and (old.get("status") or {}).get("phase") != "Running"
            if deny:
                self.held_uid = obj["metadata"]["uid"]
        if deny:
            self.holding.set()
            return 500, "kubetasks test: this Running status write is lost"
        return None


@pytest.mark.faults
def test_a_lost_running_write_still_holds_the_slot(namespace, operator, tmp_path: Path):
    hold = uuid.uuid4().hex[:10]
    apply(task("guarded", "import time; time.sleep(3)", concurrency={"limit": 1}), namespace)
    names = ["g-0", "g-1", "g-2"]
    with registered(RejectingWebhook("Running", serving_tls(tmp_path)), namespace, hold) as hook, \
            Slots(namespace) as slots:
        jobs = slots.jobs
        runs = [taskrun(n, "guarded") for n in names]
        for r in runs:
            r["metadata"]["labels"] = {HOLD_LABEL: hold}
        apply(runs, namespace)
        wait_all(namespace, names, timeout=240)
        final = all_runs(namespace)
        created = jobs.seen()
    denied = next((n for n, r in final.items() if r["metadata"]["uid"] == hook.held_uid), None)
    most = slots.peak(keys_by_uid(final))
    print(f"denied the Running write of {denied}; most holding slots at once {most.total} {most.at_total}; "
          f"writes seen: {len(hook.seen)}")
    assert hook.holding.is_set(), f"no Running write reached the webhook: {hook.seen}"
    assert most.total <= 1, f"two Jobs active at once under concurrency 1: {most.at_total}"
    problems = attempt_problems(final, created, max_attempts=1)
    assert not problems, problems


# 5. A woken waiter deleted -------------------------------------------------------------------------
class RefusingWebhook(HoldingWebhook):
    """Refuses every request it reviews with a 500 (a Job create the operator retries)."""

    def review(self, request: dict[str, Any]) -> tuple[int, str] | None:
        with self._lock:
            self.seen.append((request["uid"], (request.get("object") or {}).get("metadata", {}).get("name")))
        self.holding.set()
        return 500, "kubetasks test: this Job create fails"


@pytest.mark.parametrize("first", ["h", "w1", "w1-cannot-start"])
def test_a_deleted_woken_waiter_passes_its_slot_on_at_once(namespace, operator, first, tmp_path: Path):
    """Limit 1, holder H, waiters W1 then W2. H and W1 are deleted in one command (H's end wakes
    W1, which is gone before or just after it takes the slot; or W1 leaves the line just before H
    ends), or (w1-cannot-start) H is deleted while a webhook fails W1's Job creates, so W1 is
    woken, tries, and waits to try again, and then W1 is deleted. W2's Job is created within 1 s
    of W1's deletion, not at a resync. W1 has a priority so that it is the head of the line (runs
    created in one second are otherwise ordered by uid)."""
    apply(task("serial", HOLD_FOREVER, concurrency={"limit": 1}), namespace)
    with Timeline(namespace) as jobs, RunTimeline(namespace) as runs:
        apply(taskrun("h", "serial"), namespace)
        uids = {"h": wait_until("h's uid", lambda: run_uids(namespace).get("h"), timeout=30)}
        jobs.wait_start(uids["h"], timeout=60)
        apply(taskrun("w1", "serial", priority=5), namespace)
        waiting_for(namespace, "w1", "TaskLimit")
        apply(taskrun("w2", "serial"), namespace)
        waiting_for(namespace, "w2", "TaskLimit")
        uids = run_uids(namespace)
        refused = ""
        if first == "w1-cannot-start":
            with registered(RefusingWebhook("", serving_tls(tmp_path)), namespace, uuid.uuid4().hex[:10],
                            rule=("batch", "jobs", "CREATE"), selector={"kubetasks.io/run-uid": uids["w1"]}) as hook:
                kubectl("delete", "taskrun", "h", "-n", namespace, "--wait=false")
                assert hook.holding.wait(30), "w1 was not woken to create its Job"
                assert jobs.start_of(uids["w2"]) is None, "w2 started while w1, the head, was still waiting"
                kubectl("delete", "taskrun", "w1", "-n", namespace, "--wait=false")
                refused = f"; w1's Job creates refused: {len(hook.seen)}"
        else:
            kubectl("delete", "taskrun", *(["h", "w1"] if first == "h" else ["w1", "h"]), "-n", namespace,
                    "--wait=false")
        w2 = jobs.wait_start(uids["w2"], timeout=60)
        w1_gone = wait_until("w1's deletion seen", lambda: runs.gone(uids["w1"]), timeout=30)
        h_gone = runs.gone(uids["h"]) or w1_gone
        w1_job = jobs.start_of(uids["w1"])
    # Arrival times on two watches may be out of order by some ms; revisions are not.
    latency = w2.at - w1_gone.at
    print(f"w1 deleted {w1_gone.at - h_gone.at:+.3f}s after h; w1's Job: "
          f"{f'{w1_job.name} at {w1_job.at - w1_gone.at:+.3f}s' if w1_job else 'none'}{refused}; w2's Job {w2.name} "
          f"created {latency:.3f}s after w1's deletion (revisions: w1 deleted {w1_gone.rv}, w2's Job {w2.rv})")
    assert w2.rv > w1_gone.rv, "w2 started before w1, the head of the line, left it"
    assert latency <= 1.0, f"w2 started {latency:.3f}s after w1 was deleted"


# 6. Durable sleeps -----------------------------------------------------------------------------------
def test_a_durable_sleep_frees_its_slot_unless_the_limit_holds_across_waits(namespace, operator):
    """A run sleeping 24 h under ``concurrency: {limit: 1}``: the next run starts while it sleeps.
    Under ``holdAcrossWaits: true`` the next run waits (TaskLimit) until the sleeper is cancelled."""
    apply([sdk_task("nap", "kubetasks_examples.sleeper:sleeper", concurrency={"limit": 1}),
           sdk_task("lock", "kubetasks_examples.sleeper:sleeper", concurrency={"limit": 1, "holdAcrossWaits": True})],
          namespace)
    day = {"seconds": 86400}
    with Timeline(namespace) as jobs:
        apply([taskrun("nap-sleeper", "nap", payload=day), taskrun("lock-sleeper", "lock", payload=day)], namespace)
        for n in ("nap-sleeper", "lock-sleeper"):
            wait_until(f"{n} Sleeping", lambda n=n: status(namespace, n).get("phase") == "Sleeping", timeout=180)
        apply([taskrun("nap-next", "nap", payload=day), taskrun("lock-next", "lock", payload=day)], namespace)
        uids = run_uids(namespace)
        nap_next = jobs.wait_start(uids["nap-next"], timeout=120)
        assert status(namespace, "nap-sleeper").get("phase") == "Sleeping"
        s = waiting_for(namespace, "lock-next", "TaskLimit", timeout=60)
        # An observation window: a Job for lock-next would show up in it.
        began = time.monotonic()
        while time.monotonic() - began < 5:
            assert jobs.start_of(uids["lock-next"]) is None, "lock-next started while lock-sleeper holds the lock"
            time.sleep(0.1)
        assert status(namespace, "lock-sleeper").get("phase") == "Sleeping"
        cancelled_at = time.time()
        cancel(namespace, "lock-sleeper")
        lock_next = jobs.wait_start(uids["lock-next"], timeout=60)
        wait_until("lock-sleeper Cancelled", lambda: status(namespace, "lock-sleeper").get("phase") == "Cancelled",
                   timeout=60)
    sleeper_jobs = [e.name for e in jobs.starts() if e.owner == uids["nap-sleeper"]]
    print(f"nap-next's Job {nap_next.name} created while nap-sleeper sleeps (its Jobs: {sleeper_jobs}); "
          f"lock-next held: {s['waitingFor']}; its Job {lock_next.name} came "
          f"{lock_next.at - cancelled_at:.3f}s after lock-sleeper's cancel was sent")


# 7. The operator SIGKILLed during a limited burst ---------------------------------------------------
BURST, KEYS = 200, 4


@pytest.mark.faults
@pytest.mark.timeout(480)
def test_limits_hold_across_an_operator_killed_during_a_burst(namespace, operator):
    apply(task("burst", "print(1)", concurrency={"limit": 5, "perKey": 2}, **KWOK_PLACEMENT), namespace)
    api = custom_api()
    names = [f"k{i % KEYS}-{i:03d}" for i in range(BURST)]
    kills = [40, 110]
    at_kill: list[int] = []
    began = time.monotonic()
    with operator_restored(operator), Slots(namespace) as slots:
        jobs = slots.jobs
        with ThreadPoolExecutor(8) as pool:
            creating = pool.map(lambda n: api.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "taskruns", label(taskrun(n, "burst", concurrencyKey=n[:2]))), names)
            for threshold in kills:
                wait_until(f"{threshold} Jobs", lambda t=threshold: jobs.count() >= t, timeout=180, interval=0.05)
                operator.kill()
                at_kill.append(jobs.count())
                operator.start()
            list(creating)
        wait_all(namespace, names, timeout=300)
        wall = time.monotonic() - began
        runs = all_runs(namespace)
        created = jobs.seen()
    most = slots.peak(keys_by_uid(runs))
    print(f"{len(created)} Jobs for {BURST} runs in {wall:.0f}s; Jobs at each kill {at_kill}; "
          f"most holding slots at once {most.total} {most.at_total}; max per key {most.per_key} {most.at_key}")
    problems = attempt_problems(runs, created, max_attempts=1)
    assert not problems, f"{len(problems)} runs wrong: " + "; ".join(problems[:4])
    assert most.total <= 5 and most.per_key <= 2, most


def test_peak_replays_the_events_in_order():
    """The counting itself: an attempt holds its slot from its Job's ADDED to its pod's end or
    its Job's end, whichever comes first; a later event of its Job does not bring it back."""
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    rv = iter(range(1, 100))

    def job(kind: str, name: str, finished: bool = False) -> Seen:
        obj = done if finished else {}
        return Seen(0.0, kind, "Job", name, name, name[0], kind != "DELETED" and not job_finished(obj), next(rv), obj)

    def pod_ended(job_name: str) -> Seen:
        return Seen(0.0, "MODIFIED", "Pod", f"{job_name}-pod", f"{job_name}-pod", job_name, False, next(rv), {})

    events = [job("ADDED", "a1"), job("ADDED", "b1"), pod_ended("a1"), job("MODIFIED", "a1"), job("ADDED", "a2"),
              job("ADDED", "b2"), job("DELETED", "b1"), job("MODIFIED", "b2"), job("MODIFIED", "a1", True)]
    assert peak(events, lambda owner: owner or "") == Peak(3, 2, ["a2", "b1", "b2"], ["b1", "b2"])
