"""Faults the controller core must survive, on the real cluster.

Each case asserts the end state of every run it made and counts the Jobs ever created with a
watch (``JobWatch``), never with a final list: a list at the end misses a Job that was created
and then deleted (by a TTL, a cancel, the GC) or created twice under one name. Deadlines are
tight enough that a broken case fails in a few minutes instead of hanging.

Run them alone, under the shared cluster's lock:
    flock /tmp/kubetasks-it.lock .venv/bin/pytest tests/integration/test_faults.py -q
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

from kubetasks.core.log_archive import MIN_JOB_TTL
from tests.conftest import (
    FINISHED_PHASES, KWOK_PLACEMENT, JobWatch, OperatorProcess, SeenJob, apply, get, kube_api, label, kubectl, paused,
    holds_until, restart_component, wait_until,
)
from tests.integration.test_taskruns import has_event, status, task, taskrun

pytestmark = [pytest.mark.cluster, pytest.mark.faults, pytest.mark.serial]  # pauses and restarts kube-apiserver

GROUP, VERSION = "kubetasks.io", "v1alpha1"
TERMINAL = FINISHED_PHASES | {"Duplicate"}
ACTIVE_POD_PHASES = ("Pending", "Running")
# Attempt 1 hangs (until its Job is deleted); later attempts succeed at once.
HANG_FIRST = ("import os, sys, time; a = int(os.environ['KUBETASKS_ATTEMPT']); print('attempt', a, flush=True); "
              "time.sleep(300 if a == 1 else 0)")


# Helpers ---------------------------------------------------------------------------------------
def brief(s: dict[str, Any] | None) -> str:
    """One line on a run's status, for failure messages."""
    if not s:
        return "no status"
    attempts = ",".join(f"{a.get('attempt')}:{a.get('reason')}/{a.get('exitCode')}" for a in s.get("attempts") or [])
    cond = next((c for c in s.get("conditions") or [] if c.get("type") == "Succeeded"), {})
    out = f"phase={s.get('phase')} attempt={s.get('attempt')} attempts=[{attempts}] reason={cond.get('reason')}"
    if s.get("error"):
        out += f" error={s['error'].get('type')}"
    if s.get("duplicateOf"):
        out += f" duplicateOf={s['duplicateOf']}"
    return out


def uid_of(namespace: str, run: str) -> str:
    return get("taskrun", run, namespace)["metadata"]["uid"]


def all_runs(namespace: str) -> dict[str, dict[str, Any]]:
    """Every TaskRun of the namespace: name -> the whole object (one request)."""
    found = json.loads(kubectl("get", "taskruns", "-n", namespace, "-o", "json", timeout=60))
    return {r["metadata"]["name"]: r for r in found["items"]}


def wait_all(namespace: str, names: list[str], timeout: float, phases: set[str] = TERMINAL) -> dict[str, dict[str, Any]]:
    """Waits until every run named is in ``phases``; returns name -> status."""

    def done() -> dict[str, dict[str, Any]]:
        runs = all_runs(namespace)
        statuses = {n: (runs[n].get("status") or {}) if n in runs else {} for n in names}
        waiting = [n for n in names if statuses[n].get("phase") not in phases]
        if waiting:
            raise AssertionError(f"{len(waiting)} of {len(names)} runs not in {sorted(phases)}: " + "; ".join(
                f"{w}: {brief(statuses[w]) if w in runs else 'missing'}" for w in waiting[:3]))
        return statuses

    return wait_until(f"{len(names)} runs in {sorted(phases)}", done, timeout=timeout, interval=1)


def wait_run(namespace: str, run: str, phases: set[str] | str, timeout: float) -> dict[str, Any]:
    """Waits for one run to reach one of ``phases``; a timeout says where it stands instead."""
    return wait_all(namespace, [run], timeout, {phases} if isinstance(phases, str) else phases)[run]


def active_pods(namespace: str) -> list[str]:
    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json"))["items"]
    return [f"{p['metadata']['name']}:{p['status'].get('phase')}" + (" (deleting)" if p["metadata"].get(
        "deletionTimestamp") else "") for p in pods if p["status"].get("phase") in ACTIVE_POD_PHASES]


def pod_running(namespace: str, job: str) -> bool:
    return "Running" in kubectl("get", "pods", "-n", namespace, "-l", f"job-name={job}", "-o",
                                "jsonpath={.items[*].status.phase}")


def first_job_of(jobs: JobWatch, uid: str, timeout: float = 60) -> SeenJob:
    return wait_until(f"a Job owned by {uid}", lambda: next((j for j in jobs.seen() if j.owner == uid), None),
                      timeout=timeout)


def custom_api() -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(kube_api())


def jobs_per_run(seen: list[SeenJob], runs: dict[str, dict[str, Any]]) -> dict[str, list[SeenJob]]:
    by_uid = {r["metadata"]["uid"]: name for name, r in runs.items()}
    out: dict[str, list[SeenJob]] = {name: [] for name in runs}
    for j in seen:
        if j.owner in by_uid:
            out[by_uid[j.owner]].append(j)
    return out


def attempt_problems(runs: dict[str, dict[str, Any]], seen: list[SeenJob], max_attempts: int) -> list[str]:
    """Runs that did not succeed, or whose Jobs are not exactly one per attempt."""
    problems = []
    owned = jobs_per_run(seen, runs)
    for name, run in sorted(runs.items()):
        s = run.get("status") or {}
        attempts = sorted(int(j.attempt or 0) for j in owned[name])
        if s.get("phase") != "Succeeded":
            problems.append(f"{name}: {brief(s)}")
        elif attempts != list(range(1, (s.get("attempt") or 0) + 1)) or s["attempt"] > max_attempts:
            problems.append(f"{name}: Jobs for attempts {attempts} ({[j.name for j in owned[name]]}), {brief(s)}")
    orphans = [j.name for j in seen if j.owner not in {r["metadata"]["uid"] for r in runs.values()}]
    if orphans:
        problems.append(f"Jobs owned by no run: {orphans[:5]}")
    return problems


@contextmanager
def operator_restored(operator: OperatorProcess) -> Iterator[None]:
    """Leaves the session operator running (continued, or started again) whatever the test did to it."""
    try:
        yield
    finally:
        proc = operator.proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)
        else:
            operator.start()


# 1. A name reused after an orphaning delete --------------------------------------------------
def test_a_run_recreated_under_a_deleted_runs_name_runs_its_own_attempt(namespace, operator):
    apply([task("fine", "print('old result')"),
           task("exit3", "import sys; sys.exit(3)", retry={"maxAttempts": 1}),
           taskrun("same", "fine")], namespace)
    assert wait_run(namespace, "same", FINISHED_PHASES, timeout=120)["phase"] == "Succeeded"
    old_jobs = kubectl("get", "jobs", "-n", namespace, "-o", "name").split()
    kubectl("delete", "taskrun", "same", "-n", namespace, "--cascade=orphan", timeout=60)
    assert kubectl("get", "jobs", "-n", namespace, "-o", "name").split() == old_jobs, "the old Job stays, orphaned"

    with JobWatch(namespace) as jobs:
        apply(taskrun("same", "exit3"), namespace)
        new_uid = uid_of(namespace, "same")
        s = wait_run(namespace, "same", FINISHED_PHASES, timeout=120)
        created = jobs.seen()
    assert s["phase"] == "Failed" and [a.get("exitCode") for a in s.get("attempts") or []] == [3], (
        f"the new run must run its own attempt, not report the old Job's: {brief(s)}; old Jobs {old_jobs}, "
        f"Jobs created since: {[j.name for j in created]}")
    assert s["attempt"] == 1 and not s.get("result")
    assert [j.owner for j in created] == [new_uid], f"one Job, owned by the new run: {created}"


# 2. A Job deleted under a running attempt ------------------------------------------------------
def test_a_deleted_job_is_a_lost_attempt_and_retried_per_policy(namespace, operator):
    apply([task("lose", HANG_FIRST, retry={"maxAttempts": 2, "minDelay": "1s"}),
           task("lose-once", HANG_FIRST, retry={"maxAttempts": 1})], namespace)
    with JobWatch(namespace) as jobs:
        apply([taskrun("r", "lose"), taskrun("once", "lose-once")], namespace)
        uids = {run: uid_of(namespace, run) for run in ("r", "once")}
        first = {run: first_job_of(jobs, uid).name for run, uid in uids.items()}
        for run, job in first.items():
            wait_until(f"{job}'s pod runs", lambda: pod_running(namespace, job), timeout=90)
        for job in first.values():
            kubectl("delete", "job", job, "-n", namespace, "--wait=false")
        final = wait_all(namespace, ["r", "once"], timeout=120)
        r, once = final["r"], final["once"]
        owned = {run: [j.name for j in jobs.owned_by(uid)] for run, uid in uids.items()}

    assert (r["phase"], r.get("attempt"), [a.get("reason") for a in r.get("attempts") or []]) == (
        "Succeeded", 2, ["JobLost", "Succeeded"]), f"r (maxAttempts 2): {brief(r)}; Jobs {owned['r']}"
    assert has_event(namespace, "r", "JobLost")
    assert len(owned["r"]) == 2, f"one Job per attempt: {owned['r']}"

    cond = next(c for c in once["conditions"] if c["type"] == "Succeeded")
    assert once["phase"] == "Failed" and (once.get("error") or {}).get("type") == "JobLost" \
        and cond["reason"] == "JobLost", f"once (maxAttempts 1): {brief(once)}"
    assert once["attempt"] == 1 and once["attempts"][0]["reason"] == "JobLost"
    assert has_event(namespace, "once", "JobLost")
    assert owned["once"] == [first["once"]], f"no second Job: {owned['once']}"


# 3. A Job removed by its TTL at once -----------------------------------------------------------
def test_a_job_removed_by_a_zero_ttl_is_not_created_again(namespace, operator):
    apply(task("brief", "print('once')", ttlSecondsAfterFinished=0), namespace)
    with JobWatch(namespace) as jobs:
        apply(taskrun("ttl", "brief"), namespace)
        s = wait_run(namespace, "ttl", FINISHED_PHASES, timeout=120)
        # With an object store, a TTL of 0 is raised to MIN_JOB_TTL so the pod outlives its log's read.
        wait_until("the TTL controller removes the Job",
                   lambda: not kubectl("get", "jobs", "-n", namespace, "-o", "name").strip(),
                   timeout=MIN_JOB_TTL + 60)

        def still_one_job_and_succeeded() -> None:  # a phantom re-creation would show up in this window
            later = status(namespace, "ttl")
            assert later["phase"] == "Succeeded" and later["attempt"] == 1, f"after the Job went: {brief(later)}"
            assert len(jobs.seen()) == 1, f"exactly one Job ever: {[j.name for j in jobs.seen()]}"
        holds_until(time.monotonic() + 10, still_one_job_and_succeeded)
    assert s["phase"] == "Succeeded" and s["attempt"] == 1, brief(s)


# 4. Cancel racing the first attempt -----------------------------------------------------------
CANCEL_AFTER_MS = (0, 20, 50, 100, 200, 500)


def test_cancel_at_any_moment_after_creation_leaves_nothing_running(namespace, operator):
    apply(task("long", "import time; time.sleep(300)"), namespace)
    api = custom_api()
    barrier = threading.Barrier(len(CANCEL_AFTER_MS))

    def create_then_cancel(ms: int) -> tuple[str, float]:
        name = f"c{ms}"
        barrier.wait()
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, "taskruns", label(taskrun(name, "long")))
        created = time.monotonic()
        time.sleep(ms / 1000)
        actual = (time.monotonic() - created) * 1000
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "taskruns", name, {"spec": {"cancel": True}})
        return name, actual

    with JobWatch(namespace) as jobs:
        with ThreadPoolExecutor(len(CANCEL_AFTER_MS)) as pool:
            done = list(pool.map(create_then_cancel, CANCEL_AFTER_MS))
        names = [name for name, _ in done]
        print("cancel patched after (ms):", {name: round(ms) for name, ms in done})
        final = wait_all(namespace, names, timeout=90)
        time.sleep(15)  # the window in which every pod must have stopped
        active = active_pods(namespace)
        later = {n: (r.get("status") or {}) for n, r in all_runs(namespace).items()}
        created = jobs.seen()
    print(f"Jobs created: {[j.name for j in created]}")
    wrong = {n: brief(s) for n, s in final.items() if s.get("phase") != "Cancelled"}
    assert not wrong, f"every run ends Cancelled: {wrong}"
    owned = jobs_per_run(created, {n: r for n, r in all_runs(namespace).items() if n in names})
    assert all(len(j) <= 1 for j in owned.values()), f"a cancelled run made a second Job: {owned}"
    assert not active, f"pods still active 15 s after every run was Cancelled: {active}"
    assert all(later[n].get("phase") == "Cancelled" for n in names), {n: brief(later[n]) for n in names}


# 5. The Task replaced under a running run ------------------------------------------------------
def test_a_task_deleted_and_recreated_while_its_run_runs(namespace, operator):
    spec = task("steady", "import time; time.sleep(15); print('done')")
    apply(spec, namespace)
    with JobWatch(namespace) as jobs:
        apply(taskrun("steady-1", "steady"), namespace)
        wait_run(namespace, "steady-1", "Running", timeout=60)
        job = first_job_of(jobs, uid_of(namespace, "steady-1")).name
        wait_until(f"{job}'s pod runs", lambda: pod_running(namespace, job), timeout=60)
        kubectl("delete", "task", "steady", "-n", namespace)
        time.sleep(3)  # the fault, held: the Task is gone long enough for the operator to see it
        apply(spec, namespace)
        s = wait_run(namespace, "steady-1", FINISHED_PHASES, timeout=120)
        created = jobs.seen()
    assert s["phase"] == "Succeeded" and s["attempt"] == 1, brief(s)
    assert [j.name for j in created] == [job], f"one Job: {[j.name for j in created]}"


# 6. Two runs with one idempotency key, created at once ------------------------------------------
def test_runs_sharing_an_idempotency_key_created_in_parallel_run_once(namespace, operator):
    apply(task("once", "print('once')", **KWOK_PLACEMENT), namespace)
    api = custom_api()
    pairs = [(f"k{i}-z", f"k{i}-a") for i in range(10)]  # (created first, created second: sorts first)

    def create(name: str, key: str, lag: float, barrier: threading.Barrier) -> None:
        barrier.wait()
        time.sleep(lag)
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, "taskruns",
                                            label(taskrun(name, "once", idempotencyKey=key)))

    with JobWatch(namespace) as jobs:
        with ThreadPoolExecutor(2) as pool:
            for i, (first, second) in enumerate(pairs):
                barrier = threading.Barrier(2)
                list(pool.map(create, (first, second), (f"order-{i}",) * 2, (0, 0.005), (barrier, barrier)))
        names = [n for pair in pairs for n in pair]
        final = wait_all(namespace, names, timeout=120)
        time.sleep(3)  # a short window for a late second Job
        runs = all_runs(namespace)
        created = jobs.seen()

    owned = jobs_per_run(created, runs)
    problems = []
    for i, pair in enumerate(pairs):
        with_jobs = [n for n in pair if owned[n]]
        if len(with_jobs) != 1 or len(owned[with_jobs[0]]) != 1:
            problems.append(f"order-{i}: Jobs {[j.name for n in pair for j in owned[n]]} "
                            f"({pair[0]}: {brief(final[pair[0]])}; {pair[1]}: {brief(final[pair[1]])})")
            continue
        winner = with_jobs[0]
        loser = pair[1] if winner == pair[0] else pair[0]
        w, lost = final[winner], final[loser]
        if w.get("phase") != "Succeeded":
            problems.append(f"order-{i}: the winner {winner}: {brief(w)}")
        if lost.get("phase") != "Duplicate" or lost.get("duplicateOf") != winner or lost.get("attempt"):
            problems.append(f"order-{i}: {loser} should be Duplicate of {winner}: {brief(lost)}")
    print(f"{len(created)} Jobs for 10 keys")
    assert not problems, f"{len(problems)} problems in 10 pairs: " + "; ".join(problems[:4])


# 7. A slot freed while the operator could not see it -------------------------------------------
@pytest.mark.parametrize("order", ["delete-then-restart", "restart-then-delete"])
def test_a_queued_run_starts_after_its_slot_holder_vanished_unseen(namespace, operator, order):
    """The holder of a concurrency slot is deleted while the operator is stopped, and kube-apiserver
    restarts, so the operator's watches resume with 410 Gone and relist: the DELETED event is never
    delivered, and only the relist shows that the holder is gone.

    delete-then-restart is the natural order, but the DELETED event may already sit in the stopped
    operator's socket buffer and be read after SIGCONT. restart-then-delete deletes when the stopped
    operator's watches are already dead, so nothing but the relist can tell it.
    """
    apply(task("serial", "import time; time.sleep(300)", concurrency={"limit": 1}), namespace)
    with JobWatch(namespace) as jobs:
        apply(taskrun("holder", "serial"), namespace)
        wait_run(namespace, "holder", "Running", timeout=90)
        apply(taskrun("waiter", "serial"), namespace)
        wait_run(namespace, "waiter", "Queued", timeout=60)
        waiter_uid = uid_of(namespace, "waiter")
        with operator_restored(operator):
            pid = operator.proc.pid
            os.killpg(pid, signal.SIGSTOP)
            try:
                if order == "delete-then-restart":
                    kubectl("delete", "taskrun", "holder", "-n", namespace, timeout=60)
                restart_component("kube-apiserver")
                if order == "restart-then-delete":
                    kubectl("delete", "taskrun", "holder", "-n", namespace, timeout=60)
            finally:
                os.killpg(pid, signal.SIGCONT)
            resumed = time.monotonic()
            s = wait_run(namespace, "waiter", {"Running"} | FINISHED_PHASES, timeout=60)
            print(f"waiter {s['phase']} {time.monotonic() - resumed:.1f}s after SIGCONT")
            first_job_of(jobs, waiter_uid, timeout=30)
            assert operator.proc.poll() is None, "the operator survives the API server's restart"
        created = jobs.seen()
        print(f"Jobs: {[j.name for j in created]}; watch relists: {jobs.relists}")
    assert s.get("attempt") == 1, brief(s)
    assert len(created) == 2 and len({j.owner for j in created}) == 2, (
        f"one Job for the holder, one for the waiter: {[j.name for j in created]}")


# 8. The API server hung for 30 s ----------------------------------------------------------------
def test_an_api_server_hung_for_30s_loses_and_duplicates_nothing(namespace, operator):
    apply([task("nap", "import time; time.sleep(5)", retry={"maxAttempts": 3, "minDelay": "1s"}),
           task("blip", "print(1)", retry={"maxAttempts": 3, "minDelay": "1s"}, **KWOK_PLACEMENT)], namespace)
    proc = operator.proc
    naps, blips = [f"nap-{i}" for i in range(8)], [f"blip-{i}" for i in range(12)]
    with operator_restored(operator), JobWatch(namespace) as jobs:
        apply([taskrun(n, "nap") for n in naps], namespace)
        wait_until("the real pods' Jobs", lambda: jobs.count() >= len(naps) // 2, timeout=60, interval=0.2)
        apply([taskrun(n, "blip") for n in blips], namespace)  # a burst being reconciled when the server hangs
        print(f"Jobs when kube-apiserver was stopped: {jobs.count()} of {len(naps) + len(blips)}")
        with paused("kube-apiserver"):
            time.sleep(30)
        final = wait_all(namespace, naps + blips, timeout=180)
        runs = all_runs(namespace)
        created = jobs.seen()
        print(f"{len(created)} Jobs; watch relists: {jobs.relists}")
    assert operator.proc is proc and proc.poll() is None, "the same operator process carries on"
    problems = attempt_problems(runs, created, max_attempts=3)
    assert not problems, f"{len(problems)} of {len(final)} runs wrong: " + "; ".join(problems[:4])


# 9. The operator SIGKILLed again and again -------------------------------------------------------
RUNS, KILLS = 300, 5


@pytest.mark.timeout(560)
def test_an_operator_killed_five_times_in_300_runs_loses_and_duplicates_nothing(namespace, operator):
    seed = int(os.environ.get("KUBETASKS_FAULT_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    # Kill when this many Jobs exist: one random point in each fifth of the run, so no two kills
    # fall together (a kill right after a restart would only test startup).
    span = (RUNS - 20) // KILLS
    thresholds = [10 + k * span + rng.randrange(span - 5) for k in range(KILLS)]
    print(f"seed {seed}: kill at {thresholds} Jobs")
    apply(task("quick", "print(1)", **KWOK_PLACEMENT), namespace)
    api = custom_api()
    names = [f"q{i:03d}" for i in range(RUNS)]
    started = time.monotonic()
    at_kill: list[int] = []
    with operator_restored(operator), JobWatch(namespace) as jobs:
        with ThreadPoolExecutor(8) as pool:
            creating = pool.map(lambda n: api.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "taskruns", label(taskrun(n, "quick"))), names)
            for threshold in thresholds:
                threshold = max(threshold, (at_kill or [0])[-1] + 5)  # the restarted operator works first
                wait_until(f"{threshold} Jobs", lambda: jobs.count() >= threshold, timeout=120, interval=0.05)
                operator.kill()
                at_kill.append(jobs.count())
                operator.start()
            list(creating)
        final = wait_all(namespace, names, timeout=240)
        wall = time.monotonic() - started
        runs = all_runs(namespace)
        created = jobs.seen()
    print(f"Jobs at each kill: {at_kill}; {len(created)} Jobs for {RUNS} runs; wall time {wall:.0f}s "
          f"(watch relists {jobs.relists})")
    problems = attempt_problems(runs, created, max_attempts=3)
    assert len(runs) == RUNS and not problems, f"{len(problems)} of {len(final)} runs wrong: " + "; ".join(problems[:4])
