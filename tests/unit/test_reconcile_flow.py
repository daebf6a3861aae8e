"""Flow control in the run reconciler, against the fake API server: slots derived from Jobs (not
from status), keys served fairly, waits that release or keep a slot, shared queues, throttles,
and a restart with nothing in memory."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from kubetasks import kube
from tests.unit.test_reconcile_runs import NS, World, task, taskrun


def created_at(seconds: int) -> dict[str, Any]:
    at = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds)
    return {"creationTimestamp": at.isoformat()}


def run(name: str, at: int = 0, **spec: Any) -> dict[str, Any]:
    body = taskrun(name, **spec)
    body["metadata"].update(created_at(at))
    return body


def start_losing_its_status_write(w: World, name: str) -> None:
    """Reconciles ``name`` with its first status write refused (a 500): its Job is made, its status not."""
    real = w.api.patch_status

    def refuse_once(plural: str, namespace: str, name: str, *args: Any) -> Any:
        w.api.patch_status = real  # type: ignore[method-assign]
        raise kube.ApiException(status=500, reason="InternalError")

    w.api.patch_status = refuse_once  # type: ignore[method-assign]
    with pytest.raises(kube.ApiException):
        w.reconcile(name)


def test_a_run_whose_status_write_failed_after_its_job_was_created_still_holds_its_slot():
    w = World(task(concurrency={"limit": 1}), run("r1", 0), run("r2", 1))
    start_losing_its_status_write(w, "r1")
    assert w.api.created() == ["r1-1"] and w.status("r1").get("phase") is None  # Job made, status not
    w.settle("r2")
    assert w.api.created() == ["r1-1"]  # the Job holds the slot, whatever the status says
    assert w.status("r2")["phase"] == "Queued" and w.status("r2")["waitingFor"] == {"reason": "TaskLimit",
                                                                                     "limit": "Task/t"}


def test_keys_are_served_least_recently_first_and_each_within_its_share():
    runs = [run(f"{k}{i}", at=10 * n + i, concurrencyKey=k) for n, k in enumerate("abc") for i in range(3)]
    w = World(task(concurrency={"limit": 2, "perKey": 1}), *runs)
    names = [r["metadata"]["name"] for r in runs]
    w.settle(*names)
    assert w.api.created() == ["a0-1", "b0-1"]
    for _ in range(7):
        done = w.api.created()[-2]
        w.api.finish_job(NS, done if w.api.objects[("Job", NS, done)].get("status") is None else w.api.created()[-1])
        w.api.deliver(w.op.cache)
        w.settle(*names)
    order = [name.removesuffix("-1") for name in w.api.created()]
    firsts, thirds = [order.index(f"{k}0") for k in "abc"], [order.index(f"{k}2") for k in "abc" if f"{k}2" in order]
    assert max(firsts) < min(thirds), order  # every key's first run before any key's third
    assert order.index("c0") < order.index("a1"), order  # c had not been served: before a's second


def test_a_retry_backoff_gives_the_slot_up_unless_the_limit_holds_across_waits():
    for hold, second in ((False, "Running"), (True, "Queued")):
        w = World(task(concurrency={"limit": 1, "holdAcrossWaits": hold},
                       retry={"maxAttempts": 2, "minDelay": "1h", "maxDelay": "1h"}), run("r1", 0), run("r2", 1))
        w.settle("r1", "r2")
        w.api.finish_job(NS, "r1-1", ok=False)
        w.api.deliver(w.op.cache)
        w.settle("r1", "r2")
        assert w.status("r1")["phase"] == "Retrying"
        assert w.status("r2")["phase"] == second, hold


def test_a_lock_held_across_waits_is_known_from_the_jobs_when_a_status_write_was_lost():
    w = World(task(concurrency={"limit": 1, "holdAcrossWaits": True},
                   retry={"maxAttempts": 2, "minDelay": "1h", "maxDelay": "1h"}), run("r1", 0))
    start_losing_its_status_write(w, "r1")
    assert w.api.created() == ["r1-1"] and w.status("r1").get("attempt") is None  # started, its status says not
    w.api.add(run("r2", 1, priority=600))
    w.api.finish_job(NS, "r1-1", ok=False)  # into its retry backoff, still holding the lock
    w.api.deliver(w.op.cache)
    w.settle("r2")  # before r1's status is written
    assert w.api.created() == ["r1-1"] and w.status("r2")["phase"] == "Queued"
    w.settle("r1", "r2")
    assert w.status("r1")["phase"] == "Retrying" and w.api.created() == ["r1-1"]


def test_a_run_holding_its_lock_across_a_wait_is_woken_when_its_queue_frees():
    queue = {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskQueue",
             "metadata": {"name": "q", "namespace": NS}, "spec": {"limit": 1}}
    w = World(queue, task("t", queue="q", concurrency={"limit": 1, "holdAcrossWaits": True},
                          retry={"maxAttempts": 2, "minDelay": "1s", "maxDelay": "1s"}),
              task("u", queue="q"), run("r1", 0), dict(run("u1", 5), spec={"taskRef": "u"}))
    w.settle("r1")
    w.api.finish_job(NS, "r1-1", ok=False)  # r1 waits out its backoff holding Task/t; the queue's slot is free
    w.api.deliver(w.op.cache)
    w.settle("r1", "u1")
    assert w.api.created() == ["r1-1", "u1-1"]
    woken: list[Any] = []
    w.op.runs.flow.wake = woken.append  # type: ignore[method-assign]
    w.api.update("TaskRun", NS, "r1", status={"nextRetryAt": "2000-01-01T00:00:00Z"})  # its backoff is over
    w.api.deliver(w.op.cache)
    w.settle("r1")  # its backoff is over: it waits for the queue, which u1 holds
    assert w.status("r1")["waitingFor"] == {"reason": "QueueLimit", "limit": "TaskQueue/q"}
    w.api.finish_job(NS, "u1-1")
    w.api.deliver(w.op.cache)
    assert (NS, "r1") in woken, woken  # the freed queue slot wakes it (not the resync, 300 s later)
    w.settle("r1")
    assert w.api.created() == ["r1-1", "u1-1", "r1-2"]


def test_a_restarted_operator_finds_the_holders_in_the_jobs():
    w = World(task(concurrency={"limit": 1}), run("r1", 0))
    w.settle("r1")
    w.api.add(run("r2", 1))
    w.restart()
    w.settle("r2")
    assert w.api.created() == ["r1-1"] and w.status("r2")["phase"] == "Queued"
    w.api.finish_job(NS, "r1-1")
    w.api.deliver(w.op.cache)
    assert (NS, "r2") in w.op.run_queue._queued  # woken by the freed slot
    w.settle("r1", "r2")
    assert w.api.created() == ["r1-1", "r2-1"]


def test_a_task_queue_holds_across_the_tasks_that_name_it():
    queue = {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskQueue",
             "metadata": {"name": "shared", "namespace": NS}, "spec": {"limit": 2}}
    w = World(queue, task("t", queue="shared"), task("u", queue="shared"),
              run("t1", 0), run("t2", 1), *(dict(run(f"u{i}", 2 + i), spec={"taskRef": "u"}) for i in range(2)))
    w.settle("t1", "t2", "u0", "u1")
    assert sorted(w.api.created()) == ["t1-1", "u0-1"]  # each Task served in turn, oldest first within
    assert w.status("t2")["waitingFor"] == {"reason": "QueueLimit", "limit": "TaskQueue/shared"}
    w.api.finish_job(NS, "t1-1")
    w.api.deliver(w.op.cache)
    w.settle("t1", "t2", "u0", "u1")
    assert sorted(w.api.created()) == ["t1-1", "t2-1", "u0-1"]  # t served before u's second


def test_a_waiting_runs_status_is_written_when_its_reason_changes_not_when_its_holders_do():
    w = World(task(concurrency={"limit": 1}), run("h1", 0), run("h2", 1), run("waiter", 2))
    w.settle("h1", "h2", "waiter")
    assert w.api.created() == ["h1-1"] and w.status("waiter")["phase"] == "Queued"
    w.api.finish_job(NS, "h1-1")  # h2 takes the slot: the waiter's holder changes, its reason does not
    w.api.deliver(w.op.cache)
    w.settle("h1", "h2")
    assert w.api.created() == ["h1-1", "h2-1"]
    w.api.calls.clear()
    w.reconcile("waiter")
    assert ("patch_status", ("waiter",)) not in w.api.calls, "rewritten though it waits for the same reason"
    assert w.status("waiter")["waitingFor"] == {"reason": "TaskLimit", "limit": "Task/t"}


def test_a_task_naming_a_queue_that_does_not_exist_holds_its_runs_and_says_so():
    w = World(task(queue="nowhere"), run("r", 0))
    w.settle("r")
    assert w.api.created() == [] and w.status("r")["waitingFor"]["reason"] == "QueueLimit"
    assert "does not exist" in w.status("r")["conditions"][0]["message"]


def test_a_throttle_lets_one_start_per_interval_and_says_when_the_next_may():
    w = World(task(throttle={"limit": 1, "period": "1h"}), run("r1", 0), run("r2", 1))
    w.settle("r1")
    requeue = w.reconcile("r2")
    assert w.api.created() == ["r1-1"]
    assert w.status("r2")["waitingFor"] == {"reason": "Throttled", "limit": "Throttle/t"}
    assert isinstance(requeue, datetime) and requeue - datetime.now(timezone.utc) > timedelta(minutes=59)


def test_a_higher_priority_run_goes_ahead_of_older_ones():
    w = World(task(concurrency={"limit": 1}), run("holder", 0))
    w.settle("holder")
    for waiting in (*(run(f"low{i}", 1 + i) for i in range(3)), run("urgent", 100, priority=600)):
        w.api.add(waiting)
    w.api.deliver(w.op.cache)
    w.settle("low0", "low1", "low2", "urgent")
    assert w.api.created() == ["holder-1"]
    w.api.finish_job(NS, "holder-1")
    w.api.deliver(w.op.cache)
    w.settle("holder", "low0", "low1", "low2", "urgent")
    assert w.api.created() == ["holder-1", "urgent-1"]


def test_an_ended_pod_frees_its_slot_before_the_job_controller_marks_its_job_finished():
    w = World(task(concurrency={"limit": 1}), run("r1", 0), run("r2", 1))
    w.settle("r1", "r2")
    assert w.api.created() == ["r1-1"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "r1-1-abcde", "namespace": NS, "uid": "p1",
                                                           "resourceVersion": "1", "labels": {"job-name": "r1-1"}},
           "status": {"phase": "Running"}}
    w.op.cache.job_pods.event("ADDED", w.op.cache.job_pods.slim(pod))
    w.settle("r2")
    assert w.api.created() == ["r1-1"]  # running: it holds the slot
    w.op.run_queue._queued.clear()
    ended = {**pod, "metadata": {**pod["metadata"], "resourceVersion": "2"}, "status": {"phase": "Succeeded"}}
    w.op.cache.job_pods.event("MODIFIED", w.op.cache.job_pods.slim(ended))
    assert (NS, "r2") in w.op.run_queue._queued  # woken by the pod's end, the Job not finished yet
    w.settle("r2")
    assert w.api.created() == ["r1-1", "r2-1"]


def test_a_throttle_counts_a_start_while_its_job_is_created_and_forgets_one_never_made():
    w = World(task(throttle={"limit": 1, "period": "1h"}), run("r1", 0), run("r2", 1))
    flow, r1, r2 = w.op.runs.flow, w.op.cache.runs.get((NS, "r1")), w.op.cache.runs.get((NS, "r2"))
    assert flow.try_start(r1, 1) is None  # let start: its Job's create is in flight
    assert flow.try_start(r2, 1).waiting_for.reason == "Throttled"
    flow.release(r1, 1)  # the create failed: r1 did not start, and is first in line again
    assert flow.try_start(r2, 1).waiting_for.reason == "Throttled"
    assert flow.try_start(r1, 1) is None
