"""Cross-object policy in core: concurrency slots, wake-ups, idempotency claims, children."""

from kubetasks.api import TaskRun
from kubetasks.api.taskrun import TaskRunStatus
from kubetasks.core.admit import runs_to_wake, slots_free
from kubetasks.core.children import controlled_by, observe_attempts
from kubetasks.core.dedup import claim_holder, claim_name, render_claim
from kubetasks.core.wakeups import after_run_change, after_task_change


def run(name, phase=None, attempt=0, created="2026-01-01T00:00:00Z"):
    status = {"phase": phase, "attempt": attempt} if phase else {}
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": status}


def test_slots_are_served_first_come_first_served():
    runs = [run("r1", "Running", 1), run("r3", "Queued", created="2026-01-01T00:00:02Z"),
            run("r2", "Queued", created="2026-01-01T00:00:01Z")]
    assert slots_free(2, runs, "r2") == 1 and slots_free(2, runs, "r3") == 0
    assert slots_free(None, runs, "r2") is None
    assert runs_to_wake(2, runs) == ["r2"]


def test_a_run_leaving_its_slot_wakes_the_next_in_line_only():
    queued = [run("q1", "Queued", created="2026-01-01T00:00:01Z"), run("q2", "Queued", created="2026-01-01T00:00:02Z")]
    runs = lambda: queued  # noqa: E731
    assert after_run_change(run("a", "Running", 1), None, 1, runs) == ["q1"]  # deleted
    assert after_run_change(run("a", "Running", 1), run("a", "Succeeded", 1), 1, runs) == ["q1"]
    assert after_run_change(run("a", "Pending"), run("a", "Running", 1), 1, runs) == []
    assert after_run_change(run("a", "Running", 1), None, None, runs) == []  # no limit: nobody waits


def test_a_woken_run_that_leaves_before_taking_its_slot_passes_the_wake_up_on_at_once():
    # One slot, just freed: q1 was woken for it; q2 waits behind it.
    q1, q2 = run("q1", "Queued", created="2026-01-01T00:00:01Z"), run("q2", "Queued", created="2026-01-01T00:00:02Z")
    assert runs_to_wake(1, [q1, q2]) == ["q1"]
    after = lambda: [q2]  # noqa: E731  # the runs of the Task once q1 is gone
    assert after_run_change(q1, None, 1, after) == ["q2"]  # deleted
    cancelled = run("q1", "Cancelled")
    assert after_run_change(q1, cancelled, 1, lambda: [cancelled, q2]) == ["q2"]
    deleting = {**q1, "metadata": {**q1["metadata"], "deletionTimestamp": "2026-01-01T00:01:00Z"}}
    assert after_run_change(q1, deleting, 1, lambda: [deleting, q2]) == ["q2"]
    # It took the slot: nobody else may start.
    started = run("q1", "Running", 1)
    assert after_run_change(q1, started, 1, lambda: [started, q2]) == []
    # Still waiting (a status write, Pending to Queued): nothing moved.
    assert after_run_change(run("q1", "Pending"), q1, 1, lambda: [q1, q2]) == []
    # Slots all held: the queue moved up, but nobody may start yet.
    holder = run("h", "Running", 1)
    assert after_run_change(q1, None, 1, lambda: [holder, q2]) == []


def test_only_a_new_task_or_spec_wakes_its_runs_not_its_status_writes():
    t1 = {"metadata": {"uid": "u", "generation": 1}}
    runs = [run("a", "Succeeded", 1), run("b", "Pending")]

    def unasked():
        raise AssertionError("a status write must not even list the Task's runs")

    assert after_task_change(t1, {"metadata": {"uid": "u", "generation": 1}, "status": {"runs": 2}}, unasked) == []
    assert after_task_change(None, t1, lambda: runs) == ["b"]
    assert after_task_change(t1, {"metadata": {"uid": "u", "generation": 2}}, lambda: runs) == ["b"]


def test_a_claim_names_the_key_and_is_owned_by_its_run():
    r = TaskRun.model_validate({"metadata": {"name": "r", "namespace": "ns", "uid": "u-1"},
                                "spec": {"taskRef": "t", "idempotencyKey": "order-42"}})
    claim = render_claim(r)
    assert claim["metadata"]["name"] == claim_name("t", "order-42") != claim_name("t", "order-43")
    assert claim_holder(claim) == ("r", "u-1") and controlled_by(claim, "u-1")


def test_children_are_matched_by_owner_uid_and_a_vanished_running_attempt_is_lost():
    job = {"metadata": {"name": "r-1", "labels": {"kubetasks.io/attempt": "1"},
                        "ownerReferences": [{"uid": "mine", "controller": True}]}, "status": {}}
    assert controlled_by(job, "mine") and not controlled_by(job, "theirs")
    running = TaskRunStatus(phase="Running", attempt=1)
    assert observe_attempts(running, [job])[1].state == "active"
    assert observe_attempts(running, [], gone=[job])[1].reason == "JobLost"
    assert observe_attempts(running, [])[1].reason == "JobLost"
    assert observe_attempts(running, [], expected=[1]) == {}  # created, not seen yet
