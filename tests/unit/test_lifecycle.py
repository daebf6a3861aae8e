"""Middleware and lifecycle hooks around an attempt (runtime.lifecycle, runtime.entry.run_attempt)."""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kubetasks import protocol
from kubetasks.runtime import AbortTaskRun, AbortTaskRunError, CatchResult, Context, MemoryStore, task
from kubetasks.runtime import lifecycle
from kubetasks.runtime.checkpoints import Checkpoints
from kubetasks.runtime.entry import Invocation, invocation_from_env, run_attempt, run_task
from kubetasks.runtime.errors import SleepRequested
from kubetasks.runtime.lifecycle import Hooks, global_hooks

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "python"))
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
KINDS = lifecycle.HOOK_KINDS


@pytest.fixture(autouse=True)
def globals_restored():
    saved = {k: list(getattr(global_hooks(), k)) for k in KINDS}
    yield
    for k, v in saved.items():
        getattr(global_hooks(), k)[:] = v


def recording(calls: list[str], **behaviour):
    """A full set of hooks that log their calls; ``behaviour`` maps a hook to what it does instead."""
    def mw(name):
        def middleware(payload, ctx, next):
            calls.append(name)
            ctx.locals[name] = True
            if behaviour.get(name) == "raise":
                raise RuntimeError(f"{name} fails")
            value = next()
            calls.append(f"{name}:after")
            return value
        return middleware

    def hook(name):
        def fn(*args):
            calls.append(name)
            action = behaviour.get(name)
            if action == "raise":
                raise RuntimeError(f"{name} fails")
            return action
        return fn

    return Hooks.of(middleware=[mw("mw1"), mw("mw2")], on_start_attempt=hook("start"), catch_error=hook("catch"),
                    on_success=hook("success"), on_failure=hook("failure"), on_complete=hook("complete"))


def attempt(body, hooks, retries_left=2, ctx=None):
    ctx = ctx or Context.local({"n": 1})
    inv = Invocation(entrypoint=None, payload=None, retries_left=retries_left)
    return run_attempt(body, ctx.payload, ctx, hooks, inv, Checkpoints(MemoryStore()), clock=lambda: NOW)


def fails(payload, ctx):
    raise RuntimeError("run fails")


def test_a_success_runs_every_hook_once_in_order_and_middleware_sets_locals():
    calls: list[str] = []
    ctx = Context.local({"n": 1})

    def body(payload, ctx):
        calls.append("run")
        assert ctx.locals == {"mw1": True, "mw2": True}
        return {"ok": 1}

    ended = attempt(body, recording(calls), ctx=ctx)
    assert ended.report.outcome == "succeeded" and ended.report.result == {"ok": 1}
    # the middleware wraps everything, the ending hooks included (they may use what it set up)
    assert calls == ["mw1", "mw2", "start", "run", "success", "complete", "mw2:after", "mw1:after"]


def test_a_failure_with_retries_left_calls_catch_error_but_not_on_failure_nor_on_complete():
    calls: list[str] = []
    ended = attempt(fails, recording(calls), retries_left=1)
    assert ended.code == protocol.EXIT_RETRYABLE
    assert calls == ["mw1", "mw2", "start", "catch"]


def test_the_last_attempt_runs_on_failure_then_on_complete():
    calls: list[str] = []
    ended = attempt(fails, recording(calls), retries_left=0)
    assert ended.code == protocol.EXIT_RETRYABLE
    assert calls == ["mw1", "mw2", "start", "catch", "failure", "complete"]


@pytest.mark.parametrize("which", ["mw2", "start"])
def test_a_throw_in_middleware_or_on_start_attempt_fails_the_attempt_and_the_task_never_runs(which):
    calls: list[str] = []
    ended = attempt(lambda p, c: calls.append("run"), recording(calls, **{which: "raise"}))
    assert ended.report.outcome == "failed" and ended.report.error_message == f"{which} fails"
    assert "run" not in calls and calls[-1] == "catch"


def test_catch_error_skip_retrying_is_permanent_and_last():
    calls: list[str] = []
    ended = attempt(fails, recording(calls, catch=CatchResult(skip_retrying=True)), retries_left=2)
    assert ended.code == protocol.EXIT_PERMANENT and ended.report.skip_retrying
    assert calls[-2:] == ["failure", "complete"]  # nothing follows it: the run ends here
    decoded = protocol.Report.decode(ended.report.encode())
    assert decoded is not None and decoded.skip_retrying


def test_catch_error_retry_delay_and_retry_at_and_a_dict_answer():
    delayed = attempt(fails, recording([], catch={"retry_delay": "30s"}))
    assert delayed.code == protocol.EXIT_RETRYABLE and delayed.report.retry_at == NOW + timedelta(seconds=30)
    at = NOW + timedelta(minutes=5)
    assert attempt(fails, recording([], catch=CatchResult(retry_at=at))).report.retry_at == at


def test_catch_error_may_replace_the_error_and_a_replacement_abort_is_permanent():
    ended = attempt(fails, recording([], catch=ValueError("clearer")))
    assert (ended.report.error_type, ended.report.error_message) == ("ValueError", "clearer")
    aborted = attempt(fails, recording([], catch=CatchResult(error=AbortTaskRunError("stop"))))
    assert aborted.code == protocol.EXIT_PERMANENT


def test_nothing_from_catch_error_leaves_the_policy_alone_and_the_first_decision_wins():
    calls: list[str] = []
    hooks = Hooks.of(catch_error=[lambda p, e, c: calls.append("a"), lambda p, e, c: {"skip_retrying": True},
                                  lambda p, e, c: calls.append("never")])
    assert attempt(fails, hooks).report.skip_retrying and calls == ["a"]
    plain = attempt(fails, Hooks.of(catch_error=lambda p, e, c: None))
    assert plain.code == protocol.EXIT_RETRYABLE and not plain.report.skip_retrying and plain.report.retry_at is None


def test_abort_task_run_skips_catch_error_and_is_the_last_attempt():
    calls: list[str] = []

    def abort(payload, ctx):
        raise AbortTaskRun("no such user")

    ended = attempt(abort, recording(calls), retries_left=3)
    assert ended.code == protocol.EXIT_PERMANENT and AbortTaskRunError is AbortTaskRun
    assert "catch" not in calls and calls[-2:] == ["failure", "complete"]


@pytest.mark.parametrize("hook", ["success", "complete"])
def test_errors_of_ending_hooks_are_logged_and_never_change_the_outcome(hook, caplog):
    calls: list[str] = []
    with caplog.at_level(logging.WARNING, logger="kubetasks.runtime.lifecycle"):
        ended = attempt(lambda p, c: 7, recording(calls, **{hook: "raise"}))
    assert ended.report.outcome == "succeeded" and ended.report.result == 7
    assert calls[-4:-2] == ["success", "complete"]  # the one that raised does not stop the next
    assert f"{hook} fails" in caplog.text and "the outcome stands" in caplog.text


def test_a_durable_sleep_ends_the_pod_without_any_ending_hook():
    calls: list[str] = []

    def sleeps(payload, ctx):
        raise SleepRequested("nap", NOW + timedelta(hours=1))

    ended = attempt(sleeps, recording(calls))
    assert ended.report.outcome == "sleeping"
    assert calls == ["mw1", "mw2", "start"]  # no catch_error, no on_success/on_failure/on_complete


NAPS: list[str] = []  # what naps and its hooks did, in order


def _wait_hook(name):
    return lambda payload, wait, ctx: NAPS.append(f"{ctx.attempt}:{name}:{wait.kind}:{wait.key}:{wait.until:%M}")


def _unwinds(payload, ctx, next):
    try:
        return next()
    finally:
        NAPS.append(f"{ctx.attempt}:mw:finally")


@task(id="lifecycle-naps", middleware=_unwinds, on_wait=[_wait_hook("on_wait"), lambda *a: 1 / 0],
      on_resume=_wait_hook("on_resume"))
def naps(payload, ctx):
    NAPS.append(f"{ctx.attempt}:run")
    ctx.step.sleep("nap", 60)
    ctx.step.sleep("over", 0)  # no wait: its end is now
    NAPS.append(f"{ctx.attempt}:after")
    return "done"


def test_on_wait_runs_as_the_pod_ends_for_a_wait_and_on_resume_where_it_goes_on(caplog):
    """A durable sleep over two pods (one store, as the run's ConfigMap): on_wait in the first,
    after the middleware unwound; on_resume in the second, as the sleep returns, before the rest of
    the task. A sleep already over when reached waited for nothing: neither hook."""
    NAPS.clear()
    store = MemoryStore()
    first = run_task(Invocation(entrypoint=f"{__name__}:naps", payload="{}", attempt=1), store, lambda: NOW)
    assert first.report.outcome == "sleeping"
    later = NOW + timedelta(minutes=2)
    second = run_task(Invocation(entrypoint=f"{__name__}:naps", payload="{}", attempt=2), store, lambda: later)
    assert second.report.outcome == "succeeded"
    assert NAPS == ["1:run", "1:mw:finally", "1:on_wait:sleep:nap:01",
                    "2:run", "2:on_resume:sleep:nap:01", "2:after", "2:mw:finally"]
    assert "on_wait hook" in caplog.text and "ZeroDivisionError" in caplog.text  # logged; the next ran


def test_a_wait_for_runs_tells_on_wait_what_it_waits_for():
    from kubetasks.runtime.errors import WaitRequested

    seen = []

    def waits(payload, ctx):
        raise WaitRequested("children", ["child-a", "child-b"])

    ended = attempt(waits, Hooks.of(on_wait=lambda payload, wait, ctx: seen.append(wait)))
    assert ended.report.outcome == "waiting"
    assert seen == [lifecycle.Wait("wait", "children", on=("child-a", "child-b"))]


def test_middleware_that_calls_next_twice_does_not_run_the_task_twice(caplog):
    runs: list[int] = []

    def twice(payload, ctx, next):
        next()
        return next()

    with caplog.at_level(logging.WARNING):
        ended = attempt(lambda p, c: runs.append(1) or 5, Hooks.of(middleware=twice))
    assert ended.report.result == 5 and runs == [1] and "next() twice" in caplog.text


def test_once_next_has_returned_or_raised_the_middleware_cannot_change_the_outcome():
    def swallows(payload, ctx, next):
        try:
            return next()
        except RuntimeError:
            return "swallowed"

    assert attempt(fails, Hooks.of(middleware=swallows)).report.outcome == "failed"

    def breaks_after(payload, ctx, next):
        next()
        raise ValueError("teardown fails")

    assert attempt(lambda p, c: 3, Hooks.of(middleware=breaks_after)).report.result == 3
    passes_on = attempt(fails, Hooks.of(middleware=lambda p, c, n: n()))
    assert passes_on.report.error_message == "run fails"  # the task's own error, catch_error's or not


def test_middleware_that_never_calls_next_supplies_the_result_and_the_task_does_not_run():
    calls: list[str] = []
    hooks = Hooks.of(middleware=lambda p, c, n: "cached", on_success=lambda p, out, c: calls.append(out))
    ended = attempt(lambda p, c: calls.append("run"), hooks)
    assert ended.report.result == "cached" and calls == ["cached"]


def test_async_hooks_and_tasks_are_awaited():
    calls: list[str] = []

    async def start(payload, ctx):
        calls.append("start")

    async def body(payload, ctx):
        return "done"

    assert attempt(body, Hooks.of(on_start_attempt=start)).report.result == "done" and calls == ["start"]


def test_global_hooks_wrap_the_tasks_own_and_registrars_return_the_function():
    calls: list[str] = []

    def outer(payload, ctx, next):
        calls.append("global")
        return next()

    assert lifecycle.middleware(outer) is outer
    hooks = global_hooks().then(Hooks.of(middleware=lambda p, c, n: calls.append("own") or n()))
    attempt(lambda p, c: calls.append("run"), hooks)
    assert calls == ["global", "own", "run"]


def test_retries_left_comes_from_the_environment_and_its_absence_means_last():
    assert invocation_from_env({protocol.ENV_RETRIES_LEFT: "2"}).retries_left == 2
    assert invocation_from_env({protocol.ENV_RETRIES_LEFT: "x"}).retries_left is None
    assert invocation_from_env({}).retries_left is None


def test_the_render_tells_the_pod_how_many_retries_are_left():
    from kubetasks.core.render import render_job
    from tests.unit.test_plan import run, task

    job = render_job(run(), task(entrypoint="m:f"), 1, retries_left=0)
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[protocol.ENV_RETRIES_LEFT] == "0"


def hooks_of(store: MemoryStore) -> list[str]:
    from kubetasks.runtime.metadata import RunMetadata

    return RunMetadata(Checkpoints(store)).get("own", "hooks") or []


def test_the_example_records_each_hook_once_per_attempt_in_the_runs_metadata():
    import kubetasks_examples.lifecycle as example

    if example.timing not in global_hooks().middleware:  # imported by an earlier test, then restored
        lifecycle.middleware(example.timing)
    store = MemoryStore()

    def run(n, payload, left):
        inv = Invocation(entrypoint="kubetasks_examples.lifecycle:hooked", payload=payload, run="h", run_uid="u",
                         attempt=n, retries_left=left)
        return run_task(inv, store, lambda: NOW)

    assert run(1, '{"succeed_on": 2}', 2).code == 1
    assert run(2, '{"succeed_on": 2}', 1).report.result == {"attempt": 2}
    each = ["global-middleware", "middleware", "on_start_attempt", "run"]
    assert hooks_of(store) == ([f"1:{h}" for h in [*each, "catch_error"]]
                               + [f"2:{h}" for h in [*each, "on_success", "on_complete"]])


def test_the_async_example_shares_its_middlewares_client_with_its_hook_task_and_step():
    import kubetasks_examples.lifecycle as example

    if example.timing not in global_hooks().middleware:
        lifecycle.middleware(example.timing)
    store = MemoryStore()
    inv = Invocation(entrypoint="kubetasks_examples.lifecycle:async_hooked", payload="{}", run="a", run_uid="u",
                     attempt=1, retries_left=0)
    ended = run_task(inv, store, lambda: NOW)
    assert ended.report.result == {"step": "got a step", "task": "got the task"}, ended.report
    assert hooks_of(store) == ["1:global-middleware", "1:async-middleware", "1:async-on_start_attempt", "1:run",
                               "1:async-middleware:after", "1:async-heartbeat:closed"]
