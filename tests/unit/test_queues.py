"""Shared TaskQueues: when a queue is full (core.queues), the runs refused at create (the
admission webhook's memory) and at their first reconcile (QueueFull), and the statuses that list
a limit's holders (a TaskQueue's, a Task's), against the fake API server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, strategies as st

from kubetasks.api.flow import Holder, TaskQueueSpec
from kubetasks.controller import admission_server
from kubetasks.core.queues import full_message, queue_full, queue_status, refuse_create, refuse_first
from tests.unit.test_reconcile_flow import run
from tests.unit.test_reconcile_runs import NS, World, task


def queue(name: str = "shared", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskQueue",
            "metadata": {"name": name, "namespace": NS, "generation": 1}, "spec": {"limit": 2, **spec}}


def run_of(task_ref: str, name: str, at: int) -> dict[str, Any]:
    body = run(name, at)
    body["spec"]["taskRef"] = task_ref
    return body


def create_request(name: str, task_ref: str, uid: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    return {"uid": f"req-{name}", "operation": "CREATE", "namespace": NS, "dryRun": dry_run,
            "object": {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
                       "metadata": {"name": name, "namespace": NS, "uid": uid or f"uid-{name}"},
                       "spec": {"taskRef": task_ref}}}


# Deciding -------------------------------------------------------------------------------------

def test_a_queue_is_full_when_max_waiting_wait_and_its_slots_are_taken():
    spec = TaskQueueSpec(limit=2, max_waiting=3)
    assert queue_full("q", spec, running=2, waiting=2) is None
    assert queue_full("q", spec, running=2, waiting=3) == full_message("q", 3, 3)
    assert 'TaskQueue "q" has 3 runs waiting, its maxWaiting' in full_message("q", 3, 3)
    assert queue_full("q", TaskQueueSpec(limit=2), running=2, waiting=10_000) is None  # no bound
    assert queue_full("q", None, running=0, waiting=10_000) is None  # no queue: its runs wait for it
    # maxWaiting 0: a run starts when a slot is free, and none may wait.
    zero = TaskQueueSpec(limit=2, max_waiting=0)
    assert queue_full("q", zero, running=1, waiting=0) is None
    assert queue_full("q", zero, running=2, waiting=0) is not None


def test_a_burst_of_creates_is_counted_as_it_comes():
    spec = TaskQueueSpec(limit=2, max_waiting=3)
    # Nothing seen yet: the first 2 will run, the next 3 wait, the 6th is refused.
    allowed = [refuse_create("q", spec, running=0, waiting=0, unseen=n) is None for n in range(8)]
    assert allowed == [True] * 5 + [False] * 3


@given(st.integers(1, 50), st.integers(0, 50), st.integers(0, 60), st.integers(0, 60))
def test_no_run_joins_a_queue_whose_waiting_room_and_slots_are_all_taken(limit, max_waiting, running, waiting):
    refused = queue_full("q", TaskQueueSpec(limit=limit, max_waiting=max_waiting), running, waiting)
    assert (refused is not None) == (waiting >= max_waiting and running + waiting >= limit + max_waiting)
    if refused:
        assert '"q"' in refused and "maxWaiting" in refused


def test_a_run_already_in_line_is_never_refused():
    spec = TaskQueueSpec(limit=1, max_waiting=0)
    assert refuse_first("q", spec, 1, 5, {}) is not None
    for status in ({"phase": "Queued", "waitingFor": {"reason": "QueueLimit"}}, {"phase": "Running", "attempt": 1}):
        assert refuse_first("q", spec, 1, 5, status) is None


def test_a_queue_status_counts_its_holders_and_keeps_its_conditions():
    old = {"conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                           "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    status = queue_status(old, 3, [Holder(run="b", uid="2"), Holder(run="a", uid="1")], 4)
    assert status["running"] == 2 and status["waiting"] == 4 and status["observedGeneration"] == 3
    assert status["holders"] == [{"run": "a", "uid": "1"}, {"run": "b", "uid": "2"}]
    assert status["conditions"][0]["type"] == "Ready"


# Carried out ----------------------------------------------------------------------------------

def shared(max_waiting: int | None = None, runs: int = 0) -> World:
    spec = {} if max_waiting is None else {"maxWaiting": max_waiting}
    return World(queue(**spec), task("t", queue="shared"), task("u", queue="shared"),
                 *(run_of("tu"[i % 2], f"r{i}", i) for i in range(runs)))


def write_queue_status(w: World) -> dict[str, Any]:
    asyncio.run(w.op.queue_status.reconcile((NS, "shared")))
    w.api.deliver(w.op.cache)
    return w.api.objects[("TaskQueue", NS, "shared")].get("status") or {}


def test_a_task_queue_status_shows_its_holders_and_waiting_runs_and_is_written_only_when_it_changed():
    w = shared(runs=5)
    w.settle(*(f"r{i}" for i in range(5)))
    status = write_queue_status(w)
    assert status["running"] == 2 and status["waiting"] == 3 and status["observedGeneration"] == 1
    uids = {w.api.objects[("TaskRun", NS, f"r{i}")]["metadata"]["uid"]: f"r{i}" for i in range(5)}
    assert {h["run"] for h in status["holders"]} == {"r0", "r1"}
    assert all(uids[h["uid"]] == h["run"] for h in status["holders"])
    writes = sum(1 for fn, args in w.api.calls if fn == "patch_status" and args[0] == "taskqueues")
    write_queue_status(w)
    assert sum(1 for fn, args in w.api.calls if fn == "patch_status" and args[0] == "taskqueues") == writes
    w.api.finish_job(NS, "r0-1")
    w.api.deliver(w.op.cache)
    assert (NS, "shared") in w.op.queue_queue._queued  # a run's change queues its queue's status
    w.settle(*(f"r{i}" for i in range(5)))
    assert write_queue_status(w)["waiting"] == 2


def test_a_task_status_lists_the_holders_of_its_limit_or_of_its_keys():
    for concurrency, holders in (({"limit": 1}, 1), ({"perKey": 1}, 2)):
        w = World(task(concurrency=concurrency), run("a1", 0, concurrencyKey="a"), run("a2", 1, concurrencyKey="a"),
                  run("b1", 2, concurrencyKey="b"))
        w.settle("a1", "a2", "b1")
        asyncio.run(w.op.tasks.reconcile((NS, "t")))
        listed = w.api.objects[("Task", NS, "t")]["status"]["holders"]
        assert len(listed) == holders and {h["run"] for h in listed} <= {"a1", "b1"}, concurrency
        if concurrency == {"perKey": 1}:
            assert {h["key"] for h in listed} == {"a", "b"}


def test_runs_that_got_past_a_webhook_that_failed_open_fail_queue_full_at_their_first_reconcile():
    w = shared(max_waiting=1, runs=5)  # all created at once, the webhook down
    w.settle(*(f"r{i}" for i in range(5)))
    phases = {f"r{i}": w.status(f"r{i}").get("phase") for i in range(5)}
    assert phases == {"r0": "Running", "r1": "Running", "r2": "Queued", "r3": "Failed", "r4": "Failed"}, phases
    assert w.status("r3")["error"]["type"] == "QueueFull"
    assert 'TaskQueue "shared"' in w.status("r3")["error"]["message"]
    assert any(e[0] == "r4" and e[1] == "Warning" and e[2] == "QueueFull" for e in w.api.events)
    # The run in line stays in line, and starts when a slot is free.
    w.api.finish_job(NS, "r0-1")
    w.api.deliver(w.op.cache)
    w.settle("r0", "r2")
    assert w.status("r2")["phase"] == "Running"


def test_the_webhook_refuses_the_create_beyond_max_waiting_counting_the_creates_not_seen_yet():
    now = [0.0]
    w = shared(max_waiting=3)
    w.op.admission.clock = lambda: now[0]
    answers = [w.op.admission.review(create_request(f"c{i}", "tu"[i % 2])) for i in range(7)]
    assert answers[:5] == [None] * 5 and all(a and 'TaskQueue "shared" has 3 runs waiting' in a for a in answers[5:])
    assert w.op.admission.review(create_request("other", "none")) is None  # a Task without a queue
    assert w.op.admission.review(create_request("dry", "t", dry_run=True)) is not None
    # The watch shows the five: counted from flow control now, not twice.
    for i in range(5):
        body = run_of("tu"[i % 2], f"c{i}", i)
        body["metadata"]["uid"] = f"uid-c{i}"
        w.api.add(body)
    w.api.deliver(w.op.cache)
    w.settle(*(f"c{i}" for i in range(5)))
    assert w.op.admission.unseen(NS, "shared") == 0
    assert w.op.admission.review(create_request("c9", "t")) is not None
    w.api.finish_job(NS, "c0-1")
    w.api.deliver(w.op.cache)
    w.settle(*(f"c{i}" for i in range(5)))
    assert w.op.admission.review(create_request("c10", "t")) is None  # one started: room for one
    now[0] += 60  # that create was not made after all (another admission refused it): forgotten
    assert w.op.admission.unseen(NS, "shared") == 0


def test_the_webhook_answers_an_admission_review():
    w = shared(max_waiting=0, runs=2)
    w.settle("r0", "r1")

    async def post(review: dict[str, Any], ready: bool = True) -> dict[str, Any]:
        async with TestClient(TestServer(admission_server.app(w.op.admission, lambda: ready))) as client:
            resp = await client.post(admission_server.PATH, data=json.dumps(review))
            assert resp.status == 200
            answer: dict[str, Any] = await resp.json()
            return answer

    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": create_request("x", "t")}
    refused = asyncio.run(post(review))["response"]
    assert refused["uid"] == "req-x" and refused["allowed"] is False
    assert 'TaskQueue "shared" has' in refused["status"]["message"]
    assert asyncio.run(post(review, ready=False))["response"]["allowed"] is True  # its memory not filled yet


def test_a_restarted_operator_counts_the_runs_already_in_line_from_their_statuses():
    w = shared(max_waiting=1, runs=3)
    w.settle("r0", "r1", "r2")
    assert [w.status(f"r{i}")["phase"] for i in range(3)] == ["Running", "Running", "Queued"]
    w.api.add(run_of("t", "r3", 3))
    w.restart()
    w.settle("r3", "r2")
    assert w.status("r3")["phase"] == "Failed" and w.status("r3")["error"]["type"] == "QueueFull"
    assert w.status("r2")["phase"] == "Queued"  # never turned out of the line
