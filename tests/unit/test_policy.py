"""Cross-object policy in core: wake-ups, idempotency claims, children."""

from kubetasks.api import TaskRun
from kubetasks.api.taskrun import TaskRunStatus
from kubetasks.core.children import controlled_by, observe_attempts
from kubetasks.core.dedup import claim_holder, claim_name, render_claim
from kubetasks.core.wakeups import after_task_change


def run(name, phase=None, attempt=0, created="2026-01-01T00:00:00Z"):
    status = {"phase": phase, "attempt": attempt} if phase else {}
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": status}


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
