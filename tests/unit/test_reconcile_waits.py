"""Durable waits for child runs (ctx.step.trigger_and_wait), through the run reconciler on a fake
API server: the parent waits with no Job, resumes once when its last child finishes, is not held
by runs that are not its children, and takes its children with it when cancelled."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from kubetasks.core.naming import checkpoint_name
from kubetasks.core.waits import still_waiting, waited_for, waiting_message
from kubetasks.core.wakeups import parent_to_wake
from kubetasks.api.taskrun import StepRecord
from kubetasks.protocol import Checkpoint, configmap_key
from tests.unit.test_reconcile_runs import NS, World, lose_the_next_status_write, task, taskrun


def child(name: str, parent: str = "p", phase: str | None = None) -> dict[str, Any]:
    body = taskrun(name, "c", parentRun=parent)
    if phase:
        body["status"] = {"phase": phase}
    return body


def waiting_parent(*children: dict[str, Any], names: list[str] | None = None, **task_spec: Any) -> World:
    """A parent whose first attempt checkpointed a wait for ``names`` (default: the children) and
    ended well; its pod gone before the operator read its report (the checkpoint says it waits)."""
    w = World(task(entrypoint="app:parent", command=None, **task_spec), task("c"), taskrun("p"), *children)
    w.settle("p")
    uid = w.api.objects[("TaskRun", NS, "p")]["metadata"]["uid"]
    wait = Checkpoint(key="fan-out", kind="wait", attempt=1, started_at=datetime.now(timezone.utc),
                      waiting_on=tuple(names if names is not None else [c["metadata"]["name"] for c in children]))
    w.api.update("ConfigMap", NS, checkpoint_name("p", uid), data={configmap_key("fan-out"): wait.encode()})
    w.api.finish_job(NS, "p-1")
    w.api.deliver(w.op.cache)
    w.settle("p")
    return w


def test_a_parent_waits_with_no_job_and_names_its_unfinished_children():
    w = waiting_parent(child("a"), child("b", phase="Succeeded"), child("c1"), retry={"maxAttempts": 1})
    status = w.status("p")
    assert status["phase"] == "Waiting" and status["waitingOn"] == ["a", "c1"], status
    assert [a["reason"] for a in status["attempts"]] == ["Waiting"]
    assert [s["waitingOn"] for s in status["steps"]] == [["a", "b", "c1"]]
    assert w.api.created() == ["p-1"]
    cond = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert cond["reason"] == "Waiting" and "a, c1" in cond["message"]


def test_the_last_child_finishing_wakes_the_parent_and_its_next_attempt_starts_once():
    w = waiting_parent(child("a"), child("b"), retry={"maxAttempts": 1})  # waiting is no failed attempt
    w.api.update("TaskRun", NS, "a", status={"phase": "Succeeded"})
    w.api.deliver(w.op.cache)
    w.settle("p")
    assert w.status("p")["phase"] == "Waiting" and w.status("p")["waitingOn"] == ["b"]
    w.op.run_queue._queued.discard((NS, "p"))
    w.api.update("TaskRun", NS, "b", status={"phase": "Failed"})  # a failed child is finished too
    w.api.deliver(w.op.cache)
    assert (NS, "p") in w.op.run_queue._queued, "the child's end woke its parent"
    w.settle("p")
    status = w.status("p")
    assert status["phase"] == "Running" and status["attempt"] == 2 and "waitingOn" not in status, status
    assert w.api.created() == ["p-1", "p-2"]


def test_children_that_finished_before_the_parent_suspended_are_not_missed():
    w = waiting_parent(child("a", phase="Succeeded"), child("b", phase="Succeeded"))
    status = w.status("p")
    assert status["phase"] == "Running" and status["attempt"] == 2, status
    assert w.api.created() == ["p-1", "p-2"]


def test_a_name_that_is_no_child_of_the_parent_does_not_hold_it():
    # The pod writes the record: a run of someone else's, or a name no run has, is no wait.
    stranger = taskrun("other", "c")
    w = waiting_parent(stranger, child("of-q", parent="q"), names=["other", "of-q", "never-made"])
    assert w.status("p")["phase"] == "Running" and w.api.created() == ["p-1", "p-2"]
    assert ("get", ("taskruns", "never-made")) in w.api.calls  # the cache did not know it: read before deciding


def test_cancelling_a_waiting_parent_cancels_the_children_it_waits_for():
    w = waiting_parent(child("a"), child("done", phase="Succeeded"), child("b"))
    unrelated = child("mine-too")  # its child, but not waited for: left alone
    w.api.add(unrelated)
    w.api.update("TaskRun", NS, "p", spec={"cancel": True})
    w.api.deliver(w.op.cache)
    w.settle("p")
    assert w.status("p")["phase"] == "Cancelled"
    cancelled = {name for name in ("a", "b", "done", "mine-too")
                 if w.api.objects[("TaskRun", NS, name)]["spec"].get("cancel")}
    assert cancelled == {"a", "b"}


# The pure parts ---------------------------------------------------------------------------------

def test_only_the_pending_waits_of_the_current_attempt_are_waited_for():
    now = datetime.now(timezone.utc)
    steps = [StepRecord(name="old", attempt=1, completed_at=now, waiting_on=None),
             StepRecord(name="w1", attempt=2, waiting_on=["a", "b"]),
             StepRecord(name="w2", attempt=2, waiting_on=["b", "c"]),
             StepRecord(name="stale", attempt=1, waiting_on=["z"])]
    assert waited_for(steps, 2) == ["a", "b", "c"]
    assert waited_for(None, 2) == []


def test_still_waiting_counts_unfinished_children_only():
    runs = {"a": child("a"), "b": child("b", phase="Succeeded"), "x": child("x", parent="other"), "gone": None}
    assert still_waiting("p", ["a", "b", "x", "gone"], runs) == ["a"]
    assert waiting_message(["r1"]) == "waiting for 1 child run to finish: r1"
    assert waiting_message([f"r{i}" for i in range(7)]).endswith("r0, r1, r2, r3, r4 and 2 more")


def test_a_child_wakes_its_parent_when_it_finishes_or_goes_and_not_otherwise():
    running, done = child("a"), child("a", phase="Succeeded")
    assert parent_to_wake(running, done) == "p"
    assert parent_to_wake(None, done) == "p"  # first seen finished (a relist)
    assert parent_to_wake(running, None) == "p"  # deleted while waited for
    assert parent_to_wake(None, running) is None and parent_to_wake(running, running) is None
    assert parent_to_wake(done, done) is None  # a finished run's status echo
    assert parent_to_wake(taskrun("x"), None) is None  # no parent


def test_a_restart_while_waiting_loses_nothing_and_the_parent_resumes_once():
    w = waiting_parent(child("a"))
    w.api.remove(("Job", NS, "p-1"))  # its TTL: the wait goes on without its Job
    w.api.deliver(w.op.cache)
    w.restart()
    w.settle("p")
    assert w.status("p")["phase"] == "Waiting" and w.api.created() == ["p-1"]
    w.api.update("TaskRun", NS, "a", status={"phase": "Succeeded"})
    w.api.deliver(w.op.cache)
    w.settle("p")
    w.restart()
    w.settle("p")
    assert w.status("p")["attempt"] == 2 and w.api.created() == ["p-1", "p-2"]


def test_a_restart_between_the_resumed_attempts_job_and_its_status_write_adopts_the_job():
    w = waiting_parent(child("a"), retry={"maxAttempts": 1})
    w.api.update("TaskRun", NS, "a", status={"phase": "Succeeded"})
    w.api.deliver(w.op.cache)
    lose_the_next_status_write(w, "p")
    assert w.api.created() == ["p-1", "p-2"] and w.status("p")["phase"] == "Waiting"
    w.restart()
    w.settle("p")
    assert w.api.created() == ["p-1", "p-2"], "the resumed attempt runs once"
    assert w.status("p")["phase"] == "Running" and w.status("p")["attempt"] == 2


def test_a_waiting_parent_reads_its_checkpoints_once_however_many_children_end():
    children = [child(f"k{i}") for i in range(5)]
    w = waiting_parent(*children, retry={"maxAttempts": 1})
    reads = lambda: sum(1 for fn, _ in w.api.calls if fn == "get_configmap")  # noqa: E731
    before = reads()
    for i in range(4):  # each child's end wakes the parent, which is still waiting
        w.api.update("TaskRun", NS, f"k{i}", status={"phase": "Succeeded"})
        w.api.deliver(w.op.cache)
        w.settle("p")
        assert w.status("p")["phase"] == "Waiting"
    assert reads() - before <= 1, w.api.calls
    w.api.update("TaskRun", NS, "k4", status={"phase": "Succeeded"})
    w.api.deliver(w.op.cache)
    w.settle("p")
    assert w.status("p")["phase"] == "Running" and w.api.created() == ["p-1", "p-2"]
