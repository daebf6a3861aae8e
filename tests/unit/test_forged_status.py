"""The run reconciler against a status someone else wrote (issue 18 item 2), on the fake API: the
forged outcome is not acted on, is reported, and the run ends as its Jobs say."""

from __future__ import annotations

from kubetasks.core.status_trust import REASON
from tests.unit.test_reconcile_runs import NS, World, task, taskrun

FORGED = {"phase": "Succeeded", "result": {"forged": True}, "completionTime": "2026-01-01T00:00:00Z"}


def forge(w: World, name: str, **status: object) -> None:
    w.api.update("TaskRun", NS, name, status={**FORGED, **status})
    w.api.deliver(w.op.cache)


def warned(w: World, name: str) -> list[str]:
    return [message for obj, type_, reason, message in w.api.events if obj == name and reason == REASON]


def succeeded() -> World:
    """A run whose one attempt succeeded, every status the operator's own."""
    w = World(task(), taskrun("r"))
    w.reconcile("r")
    w.api.finish_job(NS, "r-1")
    w.api.deliver(w.op.cache)
    w.settle("r")
    return w


def test_a_running_run_patched_to_succeeded_keeps_its_job_and_ends_as_the_job_says():
    w = World(task(retry={"maxAttempts": 1}), taskrun("r"))
    w.reconcile("r")
    assert w.status("r")["phase"] == "Running"
    forge(w, "r")
    w.settle("r", rounds=2)
    assert w.api.jobs() and not any(fn == "delete_jobs" for fn, _ in w.api.calls)  # its Job runs on
    assert w.status("r")["phase"] == "Running" and "result" not in w.status("r")
    assert "completionTime" not in w.status("r")
    assert "status.phase changed by someone other than the kubetasks operator" in warned(w, "r")[0]
    w.api.finish_job(NS, "r-1", ok=False)
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Failed"  # as its Job said, not as the forger did


def test_after_a_restart_the_jobs_decide():
    w = World(task(), taskrun("r"))
    w.reconcile("r")
    forge(w, "r", attempt=1)
    w.restart()  # nothing in memory: the running Job contradicts the claimed success
    w.settle("r", rounds=2)
    assert w.api.jobs() and w.status("r")["phase"] == "Running" and "result" not in w.status("r")
    assert "the Job of attempt 1 is still running" in warned(w, "r")[0]
    w.api.finish_job(NS, "r-1")
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Succeeded" and "result" not in w.status("r")


def test_a_delayed_run_patched_to_succeeded_still_runs():
    for restarted in (False, True):
        w = World(task(), taskrun("d", delay="1h"))
        w.settle("d", rounds=2)
        assert w.status("d")["phase"] == "Delayed"
        forge(w, "d")
        if restarted:
            w.restart()
        w.settle("d", rounds=2)
        assert w.status("d")["phase"] == "Delayed" and "result" not in w.status("d"), restarted
        assert warned(w, "d") and not w.api.jobs()
        w.api.update("TaskRun", NS, "d", spec={"delay": None, "notBefore": "2000-01-01T00:00:00Z"})
        w.api.deliver(w.op.cache)
        w.settle("d")
        assert w.status("d")["phase"] == "Running" and w.api.created() == ["d-1"], restarted


def test_a_finished_runs_forged_outcome_is_put_back():
    w = succeeded()
    assert w.status("r")["phase"] == "Succeeded"
    forge(w, "r", phase="Failed", attempt=3)
    w.settle("r", rounds=2)
    assert w.status("r")["phase"] == "Succeeded" and w.status("r")["attempt"] == 1
    assert "status.phase, status.attempt changed" in warned(w, "r")[0]
    assert len(warned(w, "r")) == 1
    w.settle("r")
    assert len(warned(w, "r")) == 1  # once put back, believed again


def test_the_operators_own_writes_raise_no_warning():
    w = succeeded()
    assert w.status("r")["phase"] == "Succeeded" and not warned(w, "r")


def test_a_run_changed_again_while_its_forged_status_was_put_back_is_judged_again():
    w = World(task(), taskrun("r"))
    w.reconcile("r")
    forge(w, "r")
    w.api.update("TaskRun", NS, "r", status={"phase": "Succeeded", "result": "again"})  # not yet seen
    w.settle("r", rounds=3)
    assert w.api.conflicts == 1 and w.status("r")["phase"] == "Running" and "result" not in w.status("r")
    assert w.api.jobs() and len(warned(w, "r")) == 2
