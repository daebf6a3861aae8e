"""Tokens (ctx.step.wait_for_token) through the run reconciler on a fake API server: a run waits
for its Waitpoint with no Job, resumes once it is completed, with the outcome written into its
record; a token past its expiry is timed out, unless a completion landed first; a Waitpoint that
is not the run's does not hold it. And the pure parts: outcomes, wake-ups, the CLI's first-wins
rule, the runtime's side of the wait."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from kubetasks.core.naming import checkpoint_name, token_name
from kubetasks.core.waits import TOKEN, completed_token, token_outcome, waiting_message
from kubetasks.core.wakeups import run_to_wake_for_token
from kubetasks.protocol import Checkpoint, configmap_key, parse_checkpoints
from kubetasks.runtime import TokenError, TokenTimeout
from kubetasks.runtime.checkpoints import Checkpoints, MemoryStore
from kubetasks.runtime.errors import WaitRequested
from kubetasks.runtime import tokens as runtime_tokens
from tests.unit.test_reconcile_runs import NS, World, task, taskrun

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


def waitpoint(name: str, run: str, uid: str, phase: str | None = None, expires: datetime | None = None,
              data: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Waitpoint",
                            "metadata": {"name": name, "namespace": NS},
                            "spec": {"run": run, "runUid": uid, "step": "approve",
                                     **({"expiresAt": expires.isoformat()} if expires else {})}}
    if phase:
        body["status"] = {"phase": phase, **({"data": data} if data is not None else {})}
    return body


def waiting_run(expires: datetime | None = None, run_uid: str | None = None) -> tuple[World, str, str]:
    """A run whose first attempt made its token, checkpointed a wait for it and ended well."""
    w = World(task(entrypoint="app:approval", command=None, retry={"maxAttempts": 1}), taskrun("r"))
    w.settle("r")
    uid = w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    name = token_name("r", uid, "approve")
    w.api.add(waitpoint(name, "r", run_uid or uid, expires=expires))
    wait = Checkpoint(key="approve", kind="wait", attempt=1, started_at=NOW, waiting_on=(TOKEN + name,))
    w.api.update("ConfigMap", NS, checkpoint_name("r", uid), data={configmap_key("approve"): wait.encode()})
    w.api.finish_job(NS, "r-1")
    w.api.deliver(w.op.cache)
    w.settle("r")
    return w, uid, name


def outcome(w: World, uid: str, name: str) -> dict[str, Any]:
    """The token's outcome the operator wrote into the run's checkpoints (the wait's record stays pending)."""
    records = parse_checkpoints(w.api.objects[("ConfigMap", NS, checkpoint_name("r", uid))]["data"])
    assert not records["approve"].completed, "the wait's record is the pod's to complete"
    return records[TOKEN + name].result


def test_a_run_waits_for_its_token_with_no_job_and_resumes_with_its_data_once_completed():
    w, uid, name = waiting_run()
    status = w.status("r")
    assert status["phase"] == "Waiting" and status["waitingOn"] == [TOKEN + name], status
    assert "kubetasks complete" in next(c for c in status["conditions"] if c["type"] == "Succeeded")["message"]
    assert w.api.created() == ["r-1"]
    w.op.run_queue._queued.discard((NS, "r"))
    w.api.update("Waitpoint", NS, name, status={"phase": "Completed", "data": {"approved": True}})
    w.api.deliver(w.op.cache)
    assert (NS, "r") in w.op.run_queue._queued, "the completion woke the run"
    reads = lambda: sum(1 for fn, _ in w.api.calls if fn == "get_configmap")  # noqa: E731
    before = reads()
    w.settle("r")
    status = w.status("r")
    assert status["phase"] == "Running" and status["attempt"] == 2 and "waitingOn" not in status, status
    assert reads() - before <= 1, "the checkpoints are read once, for the steps and the outcome both"
    assert w.api.created() == ["r-1", "r-2"]
    assert outcome(w, uid, name) == {"token": name, "phase": "Completed", "data": {"approved": True}}
    assert [s["name"] for s in w.status("r")["steps"]] == ["approve"], "an outcome is no step"


def test_a_token_past_its_expiry_is_timed_out_and_the_run_resumes():
    w, uid, name = waiting_run(expires=datetime.now(timezone.utc) - timedelta(seconds=1))
    assert w.api.objects[("Waitpoint", NS, name)]["status"]["phase"] == "TimedOut"
    assert w.status("r")["attempt"] == 2 and outcome(w, uid, name)["phase"] == "TimedOut"


def test_a_completion_that_landed_before_the_time_out_stands():
    w, uid, name = waiting_run(expires=datetime.now(timezone.utc) + timedelta(hours=1))
    assert w.status("r")["phase"] == "Waiting"
    # Completed on the server, not yet seen by the watch; the operator's copy says it expired.
    w.api.update("Waitpoint", NS, name, status={"phase": "Completed", "data": 1})
    stale = w.op.cache.waitpoints.get((NS, name))
    stale["spec"]["expiresAt"] = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    w.api.pending = []
    w.settle("r")
    assert w.api.objects[("Waitpoint", NS, name)]["status"]["phase"] == "Completed"  # its write was a 409
    assert w.api.conflicts >= 1
    assert outcome(w, uid, name) == {"token": name, "phase": "Completed", "data": 1}


def test_a_waitpoint_made_for_another_run_does_not_hold_this_one():
    w, uid, name = waiting_run(run_uid="someone-else")
    assert w.status("r")["attempt"] == 2
    assert outcome(w, uid, name)["phase"] == "NotFound"


def test_outcomes_refuse_data_over_the_limit_and_name_what_is_missing():
    ours = waitpoint("t", "r", "u", phase="Completed", data="x" * 70_000)
    assert token_outcome("t", ours, "r", "u")["phase"] == "Refused"
    assert token_outcome("t", None, "r", "u")["phase"] == "NotFound"
    assert token_outcome("t", waitpoint("t", "r", "u", phase="TimedOut"), "r", "u") == {"token": "t", "phase": "TimedOut"}
    assert "1 token to be completed" in waiting_message([TOKEN + "t"])
    assert waiting_message(["a", TOKEN + "t"]).startswith("waiting for 1 child run to finish: a; and for 1 token")


def test_a_token_wakes_its_run_when_made_finished_or_deleted_and_not_on_the_same_phase():
    made = waitpoint("t", "r", "u")
    done = waitpoint("t", "r", "u", phase="Completed")
    assert run_to_wake_for_token(None, made) == "r"
    assert run_to_wake_for_token(made, done) == "r"
    assert run_to_wake_for_token(done, None) == "r"
    assert run_to_wake_for_token(done, done) is None


def test_the_first_completion_wins():
    waiting = waitpoint("t", "r", "u")
    first = completed_token(waiting, {"ok": 1}, NOW)
    assert first is not None and first["status"]["phase"] == "Completed" and first["status"]["data"] == {"ok": 1}
    assert completed_token(first, {"ok": 2}, NOW) is None
    assert completed_token(waitpoint("t", "r", "u", phase="TimedOut"), {"ok": 2}, NOW) is None


def test_token_names_are_readable_deterministic_and_per_run():
    assert token_name("order-7", "uid-1", "approve") == token_name("order-7", "uid-1", "approve")
    assert token_name("order-7", "uid-1", "approve").startswith("order-7-approve-")
    assert token_name("order-7", "uid-1", "approve") != token_name("order-7", "uid-2", "approve")
    assert len(token_name("r" * 260, "u", "k" * 300)) <= 253


def test_the_runtime_makes_the_token_before_its_wait_and_returns_the_data_the_operator_wrote(monkeypatch):
    made: list[str] = []
    monkeypatch.setattr(runtime_tokens, "make_token", lambda ns, run, uid, key, timeout, now: made.append(key) or "t")
    checkpoints = Checkpoints(MemoryStore())
    with pytest.raises(WaitRequested):
        runtime_tokens.wait_for_token(checkpoints, "approve", NS, "r", "u", 1, NOW, "1h")
    wait = checkpoints.get("approve")
    assert made == ["approve"] and wait is not None and wait.waiting_on == (TOKEN + token_name("r", "u", "approve"),)
    with pytest.raises(WaitRequested):  # woken before the operator wrote the outcome: it waits on
        runtime_tokens.wait_for_token(checkpoints, "approve", NS, "r", "u", 2, NOW, "1h")
    assert made == ["approve"], "made once"
    name = token_name("r", "u", "approve")
    checkpoints.put(Checkpoint(key=TOKEN + name, kind="token", attempt=1, completed_at=NOW,
                               result={"token": name, "phase": "Completed", "data": [1, 2]}))
    assert runtime_tokens.wait_for_token(checkpoints, "approve", NS, "r", "u", 3, NOW, "1h") == [1, 2]
    done = checkpoints.get("approve")
    assert done is not None and done.completed and done.attempt == 3  # completed by the attempt that read it
    assert runtime_tokens.wait_for_token(checkpoints, "approve", NS, "r", "u", 4, NOW, "1h") == [1, 2]  # replayed
    for phase, error in (("TimedOut", TokenTimeout), ("NotFound", TokenError)):
        fresh = Checkpoints(MemoryStore())
        fresh.put(Checkpoint(key="approve", kind="wait", attempt=1, waiting_on=(TOKEN + name,)))
        fresh.put(Checkpoint(key=TOKEN + name, kind="token", attempt=1, completed_at=NOW,
                             result={"token": name, "phase": phase}))
        with pytest.raises(error):
            runtime_tokens.wait_for_token(fresh, "approve", NS, "r", "u", 2, NOW, "1h")


# wait_any ------------------------------------------------------------------------------------------
def step(waiting_on: list[str], any_of: bool = True, timeout_at: datetime | None = None, attempt: int = 1):
    from kubetasks.api.taskrun import StepRecord

    return StepRecord(name="decide", attempt=attempt, waiting_on=waiting_on, any_of=any_of or None,
                      timeout_at=timeout_at)


def test_a_wait_for_all_waits_while_any_entry_is_pending_and_a_wait_any_until_one_is_not():
    from kubetasks.core.waits import wait_state

    entries = [TOKEN + "t", "child-a", "child-b"]
    assert wait_state([step(entries, any_of=False)], 1, ["child-a"], NOW).waiting_on == ["child-a"]
    waiting = wait_state([step(entries, timeout_at=NOW + timedelta(hours=1))], 1, entries, NOW)
    assert waiting.waiting_on == entries and waiting.look_again == NOW + timedelta(hours=1) and not waiting.cancel
    over = wait_state([step(entries)], 1, [TOKEN + "t", "child-b"], NOW)  # child-a finished
    assert over.waiting_on == [] and over.cancel == ["child-b"], over  # the token is left, the child cancelled
    timed_out = wait_state([step(entries, timeout_at=NOW)], 1, entries, NOW)
    assert timed_out.waiting_on == [] and timed_out.cancel == ["child-a", "child-b"]
    assert wait_state([step(entries, attempt=2)], 1, entries, NOW).waiting_on == []  # another attempt's


def test_a_wait_any_ended_by_its_token_cancels_the_child_it_waited_for_and_resumes():
    w = World(task(entrypoint="app:decide", command=None, retry={"maxAttempts": 1}), task("c"), taskrun("r"))
    w.settle("r")
    uid = w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    name = token_name("r", uid, "approve")
    w.api.add(waitpoint(name, "r", uid))
    w.api.add(taskrun("slow", "c", parentRun="r"))
    wait = Checkpoint(key="decide", kind="wait", attempt=1, started_at=NOW, any_of=True,
                      waiting_on=(TOKEN + name, "slow"))
    w.api.update("ConfigMap", NS, checkpoint_name("r", uid), data={configmap_key("decide"): wait.encode()})
    w.api.finish_job(NS, "r-1")
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Waiting" and w.status("r")["waitingOn"] == [TOKEN + name, "slow"]
    w.api.update("Waitpoint", NS, name, status={"phase": "Completed", "data": "yes"})
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["attempt"] == 2 and w.api.created() == ["r-1", "r-2"]
    assert w.api.objects[("TaskRun", NS, "slow")]["spec"].get("cancel") is True, "the child no longer waited for"
    records = parse_checkpoints(w.api.objects[("ConfigMap", NS, checkpoint_name("r", uid))]["data"])
    assert records[TOKEN + name].result["data"] == "yes"


def test_the_runtime_wait_any_returns_what_fired_first_in_the_order_given(monkeypatch):
    from kubetasks.runtime import any_of

    made, triggered, finished = [], [], {}
    monkeypatch.setattr(any_of, "make_token", lambda ns, run, uid, key, timeout, now: made.append(key) or "t")
    monkeypatch.setattr(any_of, "trigger_child", lambda task, payload, key, **o: triggered.append(key))
    monkeypatch.setattr(any_of, "read_child", lambda handle: finished.get(handle.name))
    checkpoints = Checkpoints(MemoryStore())

    def decide(attempt: int, now: datetime = NOW) -> Any:
        return any_of.wait_any(checkpoints, "decide", NS, "r", "u", attempt, now, {"approve": "approve"},
                               [("c", {"n": 1})], "1h", {})

    with pytest.raises(WaitRequested):
        decide(1)
    record = checkpoints.get("decide")
    assert record is not None and record.any_of and record.timeout_at == NOW + timedelta(hours=1)
    assert made == ["approve"] and triggered == ["u:decide:0"]
    child = record.waiting_on[1]
    with pytest.raises(WaitRequested):  # woken with nothing ended and time left: waits on
        decide(2)
    finished[child] = {"run": child, "phase": "Succeeded", "result": 4}
    fired = decide(2)
    assert (fired.kind, fired.index, fired.value) == ("run", 0, 4)
    assert decide(3) == fired and len(triggered) == 1  # replayed from the record, nothing made again

    late = Checkpoints(MemoryStore())
    late.put(Checkpoint(key="decide", kind="wait", attempt=1, any_of=True, timeout_at=NOW, waiting_on=(TOKEN + "x",)))
    fired = any_of.wait_any(late, "decide", NS, "r", "u", 2, NOW, {"approve": "approve"}, [], None, {})
    assert fired.kind == "timeout"
    with pytest.raises(TypeError):
        any_of.wait_any(Checkpoints(MemoryStore()), "nothing", NS, "r", "u", 1, NOW, {}, [], "1h", {})
