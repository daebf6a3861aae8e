"""The entry point end to end, in-process: env in, exit code and termination message out."""

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from kubetasks import protocol
from kubetasks.protocol import Report
from kubetasks.runtime import AbortTaskRun, MemoryStore, task
from kubetasks.runtime.checkpoints import parse_checkpoints
from kubetasks.runtime.entry import Invocation, invocation_from_env, main, run_task
from kubetasks.runtime.outcome import failed

REPO = Path(__file__).resolve().parents[2]
HERE = __name__
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=timezone.utc)
calls: list[str] = []


def invocation(fn: str, payload=None, attempt: int = 1, **kw) -> Invocation:
    return Invocation(entrypoint=f"{HERE}:{fn}", payload=json.dumps(payload), run="job-abc12",
                      run_uid="uid-1", namespace="ns", task="t", attempt=attempt, **kw)


def run(fn: str, payload=None, attempt: int = 1, store: MemoryStore | None = None, now: datetime = T0):
    return run_task(invocation(fn, payload, attempt), store if store is not None else MemoryStore(), lambda: now)


# -- tasks under test ---------------------------------------------------------------------------------

def plain(payload, ctx):
    return {"hello": payload["name"], "run": ctx.run_id, "task": ctx.task_id, "attempt": ctx.attempt,
            "namespace": ctx.namespace}


@task(id="decorated")
def decorated(payload):
    return payload * 2


def no_args():
    return "none"


def only_ctx(ctx):
    return ctx.payload


def boom(payload, ctx):
    raise KeyError("missing thing")


def abort(payload, ctx):
    raise AbortTaskRun("the user does not exist")


class Order(BaseModel):
    item: str
    quantity: int = Field(ge=1)


class Receipt(BaseModel):
    total: int


def typed(payload: Order, ctx) -> Receipt:
    calls.append("typed")
    return Receipt(total=payload.quantity * 3)


class Other(BaseModel):
    n: int


@task(payload=Other)
def explicit_model(payload, ctx):
    calls.append("explicit")
    return payload.n


async def async_task(payload, ctx):
    async def fetch(x):
        return x + 1

    first = await ctx.step.run_async("fetch", fetch, payload["x"])
    return await ctx.step.run_async("again", fetch, first)


def huge(payload, ctx):
    return "x" * 4000


def not_json(payload, ctx):
    return {"when": object()}


def steps_then_fail(payload, ctx):
    one = ctx.step.run("one", lambda: calls.append("one") or 1)
    if ctx.attempt == 1:
        raise ConnectionError("flaky network")
    two = ctx.step.run("two", lambda: calls.append("two") or 2)
    return one + two


def sleeps(payload, ctx):
    before = ctx.step.run("before", lambda: calls.append("before") or "b")
    ctx.step.sleep("nap", payload["seconds"])
    return before + ctx.step.run("after", lambda: calls.append("after") or "a")


async def sleeps_async(payload, ctx):
    await ctx.step.sleep("nap", "1m")
    return "awake"


def exits(payload, ctx):
    sys.exit(payload)


async def exits_async(payload, ctx):  # SystemExit out of the attempt's event loop (runtime.bridge)
    sys.exit(payload)


def long_message(payload, ctx):
    raise RuntimeError("y" * 10_000)


def swallow(payload, ctx):
    try:
        ctx.step.sleep("nap", 60)
    except Exception:  # task code catching everything must not cancel a durable sleep
        return "swallowed"
    return "resumed"


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


# -- outcomes ---------------------------------------------------------------------------------------

def test_success_reports_the_result_and_exits_0():
    result = run("plain", {"name": "ada"})
    assert result.code == 0
    assert result.report == Report(outcome="succeeded", result={"hello": "ada", "run": "job-abc12", "task": "t",
                                                                "attempt": 1, "namespace": "ns"})


@pytest.mark.parametrize("fn, payload, expected", [("decorated", 21, 42), ("no_args", None, "none"),
                                                   ("only_ctx", [1], [1])])
def test_task_functions_take_what_they_declare(fn, payload, expected):
    assert run(fn, payload).report.result == expected


def test_an_exception_is_a_retryable_failure_with_the_traceback():
    result = run("boom")
    assert result.code == protocol.EXIT_RETRYABLE
    report = result.report
    assert (report.outcome, report.error_type, report.error_message) == ("failed", "KeyError", "'missing thing'")
    assert report.traceback.startswith("Traceback (most recent call last):\n")
    assert "in boom" in report.traceback and "KeyError" in report.traceback
    assert "run_task" not in report.traceback  # the runtime's own frames are left out


def test_abort_fails_the_run_for_good():
    result = run("abort")
    assert result.code == protocol.EXIT_PERMANENT == 78
    assert (result.report.error_type, result.report.error_message) == ("AbortTaskRun", "the user does not exist")


def test_an_invalid_payload_never_reaches_task_code():
    result = run("typed", {"item": "book", "quantity": 0})
    assert result.code == 78
    assert result.report.error_type == "InvalidPayload"
    assert "quantity: Input should be greater than or equal to 1" in result.report.error_message
    assert result.report.traceback is None
    assert run("explicit_model", {"n": "many"}).report.error_type == "InvalidPayload"
    assert calls == []


def test_a_valid_payload_arrives_as_the_model_and_models_are_reported_as_json():
    assert run("typed", {"item": "book", "quantity": 2}).report.result == {"total": 6}
    assert run("explicit_model", {"n": 3}).report.result == 3


def test_a_payload_that_is_not_json_is_invalid():
    result = run_task(Invocation(entrypoint=f"{HERE}:plain", payload="{nope"), MemoryStore())
    assert (result.code, result.report.error_type) == (78, "InvalidPayload")


@pytest.mark.parametrize("entrypoint, message", [
    (None, "must be 'module:function'"),
    ("no_colon", "must be 'module:function'"),
    ("kubetasks_no_such_module:run", "no module named 'kubetasks_no_such_module'"),
    (f"{HERE}:missing", "has no function 'missing'"),
    (f"{HERE}:Order", "has no function 'Order'"),
])
def test_a_bad_entrypoint_is_permanent(entrypoint, message):
    result = run_task(Invocation(entrypoint=entrypoint, payload=None), MemoryStore())
    assert (result.code, result.report.error_type) == (78, "InvalidEntrypoint")
    assert message in result.report.error_message


def test_async_tasks_and_steps():
    store = MemoryStore()
    assert run("async_task", {"x": 1}, store=store).report.result == 3
    assert set(parse_checkpoints(store.data)) == {"fetch", "again"}


def test_a_result_over_the_termination_message_is_kept_in_the_run_configmap_and_reported_by_ref(tmp_path):
    store = MemoryStore()
    result = run_task(invocation("huge", checkpoints="job-abc12-uid-1-steps", attempt=2), store, lambda: T0,
                      grant_dir=str(tmp_path / "no-grant"))
    assert result.code == 0 and result.report.result is None
    text = json.dumps("x" * 4000)
    assert store.data == {"result.attempt-2": text}
    assert result.report.result_ref == {"uri": "configmap:job-abc12-uid-1-steps/result.attempt-2", "size": 4002,
                                        "sha256": hashlib.sha256(text.encode()).hexdigest()}
    assert json.loads(result.report.encode())["resultRef"] == result.report.result_ref


def test_a_result_over_the_limit_without_a_configmap_fails_clearly_and_for_good(tmp_path):
    result = run_task(invocation("huge"), MemoryStore(), lambda: T0, grant_dir=str(tmp_path))
    assert result.code == 78
    assert result.report.error_type == "ResultTooLarge"
    assert result.report.error_message.startswith("result is 4002 bytes; the limit is 3072 without the run's "
                                                  "checkpoint ConfigMap")


def test_a_result_that_is_not_json_fails_for_good():
    result = run("not_json")
    assert (result.code, result.report.error_type) == (78, "InvalidResult")


def test_completed_steps_are_skipped_on_the_next_attempt():
    store = MemoryStore()
    first = run("steps_then_fail", attempt=1, store=store)
    assert (first.code, first.report.error_type) == (1, "ConnectionError")
    second = run("steps_then_fail", attempt=2, store=store)
    assert (second.code, second.report.result) == (0, 3)
    assert calls == ["one", "two"]
    assert {k: r.attempt for k, r in parse_checkpoints(store.data).items()} == {"one": 1, "two": 2}


def test_sleep_ends_the_attempt_as_sleeping_and_a_later_attempt_resumes():
    store = MemoryStore()
    first = run("sleeps", {"seconds": 300}, attempt=1, store=store)
    assert first.code == 0
    assert first.report == Report(outcome="sleeping", wake_at=T0 + timedelta(seconds=300))
    early = run("sleeps", {"seconds": 300}, attempt=2, store=store, now=T0 + timedelta(seconds=10))
    assert early.report.outcome == "sleeping" and early.report.wake_at == T0 + timedelta(seconds=300)
    done = run("sleeps", {"seconds": 300}, attempt=3, store=store, now=T0 + timedelta(seconds=301))
    assert (done.code, done.report.outcome, done.report.result) == (0, "succeeded", "ba")
    assert calls == ["before", "after"]
    # what the operator reads back from the termination message
    decoded = Report.decode(first.report.encode())
    assert decoded.outcome == "sleeping" and decoded.wake_at == T0 + timedelta(seconds=300)


def test_async_tasks_sleep_too():
    assert run("sleeps_async").report.outcome == "sleeping"


def test_except_exception_does_not_swallow_a_sleep():
    assert run("swallow").report.outcome == "sleeping"


@pytest.mark.parametrize("code, exit_code, outcome", [(0, 0, "succeeded"), (None, 0, "succeeded"),
                                                      (3, 3, "failed"), ("bye", 1, "failed")])
@pytest.mark.parametrize("function", ["exits", "exits_async"])
def test_sys_exit_keeps_its_code(code, exit_code, outcome, function):
    result = run(function, code)
    assert (result.code, result.report.outcome) == (exit_code, outcome)


def test_long_messages_and_tracebacks_fit_the_termination_message():
    result = run("long_message")
    assert len(result.report.error_message) == 1024
    assert len(result.report.encode().encode()) <= protocol.TERMINATION_MESSAGE_LIMIT
    assert Report.decode(result.report.encode()).error_type == "RuntimeError"


def test_failed_classifies_permanent_and_retryable_errors():
    from kubetasks.runtime.errors import CheckpointTooLarge, PermanentError

    class MyPermanent(PermanentError):
        pass

    assert failed(CheckpointTooLarge("x")).code == 78
    assert failed(MyPermanent("x")).code == 78
    assert failed(TimeoutError("x")).code == 1


# -- the process -------------------------------------------------------------------------------------

def test_invocation_from_env():
    env = {protocol.ENV_ENTRYPOINT: "m:f", protocol.ENV_PAYLOAD: "{}", protocol.ENV_RUN: "r",
           protocol.ENV_RUN_UID: "u", protocol.ENV_NAMESPACE: "n", protocol.ENV_TASK: "t",
           protocol.ENV_ATTEMPT: "4", protocol.ENV_CHECKPOINTS: "r-steps", "KUBETASKS_TERMINATION_LOG": "/x"}
    assert invocation_from_env(env) == Invocation(entrypoint="m:f", payload="{}", run="r", run_uid="u",
                                                  namespace="n", task="t", attempt=4, checkpoints="r-steps",
                                                  termination_log="/x")
    assert invocation_from_env({}).termination_log == protocol.TERMINATION_MESSAGE_PATH


def test_main_writes_the_termination_message_and_returns_the_exit_code(tmp_path):
    log = tmp_path / "termination-log"
    env = {protocol.ENV_ENTRYPOINT: f"{HERE}:plain", protocol.ENV_PAYLOAD: '{"name": "bo"}',
           protocol.ENV_RUN: "r1", "KUBETASKS_TERMINATION_LOG": str(log)}
    assert main(env) == 0
    assert Report.decode(log.read_text()).result["hello"] == "bo"
    assert main({**env, protocol.ENV_ENTRYPOINT: f"{HERE}:abort"}) == 78
    assert Report.decode(log.read_text()).error_type == "AbortTaskRun"


def test_python_dash_m_runs_an_attempt(tmp_path):
    module = tmp_path / "sample_task.py"
    module.write_text("def run(payload, ctx):\n    return {'twice': payload['n'] * 2, 'attempt': ctx.attempt}\n")
    log = tmp_path / "termination-log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(tmp_path)]),
           protocol.ENV_ENTRYPOINT: "sample_task:run", protocol.ENV_PAYLOAD: '{"n": 4}', protocol.ENV_ATTEMPT: "2",
           "KUBETASKS_TERMINATION_LOG": str(log)}
    env.pop(protocol.ENV_CHECKPOINTS, None)
    done = subprocess.run([sys.executable, "-m", "kubetasks.runtime"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(log.read_text()) == {"kubetasks": 1, "outcome": "succeeded",
                                           "result": {"twice": 8, "attempt": 2}}
