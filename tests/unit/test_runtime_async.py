"""A task's async code runs on one event loop (runtime.bridge): async middleware wraps sync or
async tasks, what an async hook or middleware makes (a client bound to its loop) serves the task
and its steps, and sync code still runs in the thread that started the attempt."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from datetime import datetime, timezone

import pytest

from kubetasks.runtime import Context, MemoryStore, bridge, task
from kubetasks.runtime.checkpoints import Checkpoints
from kubetasks.runtime.entry import Invocation, run_attempt, run_task
from kubetasks.runtime.lifecycle import Hooks

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def attempt(body, hooks, retries_left=2):
    ctx = Context.local({"n": 1})
    inv = Invocation(entrypoint=None, payload=None, retries_left=retries_left)
    return run_attempt(body, ctx.payload, ctx, hooks, inv, Checkpoints(MemoryStore()), clock=lambda: NOW)


class Client:
    """As an async client is: bound to the loop it was made on."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.loop = asyncio.get_running_loop()

    async def get(self, what: str) -> str:
        assert asyncio.get_running_loop() is self.loop, "used on another event loop than its own"
        async with self.lock:
            await asyncio.sleep(0)
            return f"got {what}"


def test_an_async_middleware_wraps_an_async_task_and_the_client_it_makes_serves_the_task():
    calls: list[str] = []

    async def with_client(payload, ctx, next):
        calls.append("mw")
        ctx.locals["client"] = Client()
        value = await next()
        calls.append("mw:after")
        return {**value, "replaced": True}  # too late: the outcome was decided inside next()

    async def body(payload, ctx):
        calls.append("task")
        return {"answer": await ctx.locals["client"].get("a")}

    ended = attempt(body, Hooks.of(middleware=with_client, on_success=lambda p, out, c: calls.append("success")))
    assert ended.report.outcome == "succeeded", ended.report
    assert ended.report.result == {"answer": "got a"}
    assert calls == ["mw", "task", "success", "mw:after"]


def test_an_async_hook_the_task_and_its_async_steps_share_one_loop():
    async def start(payload, ctx):
        ctx.locals["client"] = Client()

    def sync_body(payload, ctx):  # a sync task whose step function is async
        async def fetch():
            return await ctx.locals["client"].get("b")
        return ctx.step.run("fetch", fetch)

    async def async_body(payload, ctx):
        return await ctx.step.run_async("fetch", ctx.locals["client"].get, "c")

    assert attempt(sync_body, Hooks.of(on_start_attempt=start)).report.result == "got b"
    assert attempt(async_body, Hooks.of(on_start_attempt=start)).report.result == "got c"


def test_sync_middleware_and_a_sync_task_inside_an_async_middleware_run_in_the_attempts_thread():
    calls: list[tuple[str, bool]] = []
    here = threading.current_thread()

    async def outer(payload, ctx, next):
        calls.append(("outer", threading.current_thread() is here))
        return await next()

    def inner(payload, ctx, next):
        calls.append(("inner", threading.current_thread() is here))
        return next()

    def body(payload, ctx):
        calls.append(("task", threading.current_thread() is here))
        return "done"

    assert attempt(body, Hooks.of(middleware=[outer, inner])).report.result == "done"
    assert calls == [("outer", False), ("inner", True), ("task", True)]  # only async code on the loop's thread


def test_an_async_middleware_sees_the_tasks_error_at_next_and_the_outcome_is_the_tasks():
    seen: list[str] = []

    async def watching(payload, ctx, next):
        try:
            return await next()
        except RuntimeError as e:
            seen.append(f"mw saw {e}")
            raise

    async def body(payload, ctx):
        raise RuntimeError("boom")

    ended = attempt(body, Hooks.of(middleware=watching, catch_error=lambda p, e, c: seen.append(f"catch {e}")))
    assert ended.report.outcome == "failed" and ended.report.error_message == "boom"
    assert seen == ["catch boom", "mw saw boom"]  # catch_error decided it inside next(), as for sync middleware


def test_context_variables_set_around_next_hold_inside_it():
    async def tagging(payload, ctx, next):
        REQUEST_ID.set("r-42")
        return await next()

    def body(payload, ctx):
        return REQUEST_ID.get()

    assert attempt(body, Hooks.of(middleware=tagging)).report.result == "r-42"


def test_an_async_middleware_that_returns_next_unawaited_still_returns_the_tasks_value():
    async def lazy(payload, ctx, next):
        return next()

    assert attempt(lambda p, c: "value", Hooks.of(middleware=lazy)).report.result == "value"


def test_an_async_middleware_that_calls_next_twice_does_not_run_the_task_twice():
    runs: list[int] = []

    async def twice(payload, ctx, next):
        first = await next()
        with pytest.raises(RuntimeError, match="twice"):
            await next()
        return first

    ended = attempt(lambda p, c: runs.append(1) or "once", Hooks.of(middleware=twice))
    assert ended.report.result == "once" and runs == [1]


@pytest.mark.filterwarnings("ignore:coroutine 'next' was never awaited")  # Python says so, as it should
def test_a_next_called_but_never_awaited_never_runs_the_task_later():
    ran: list[str] = []

    async def drops(payload, ctx, next):
        next()  # not awaited: as a middleware that never called next(), its value is the result
        return "cached"

    async def on_success(payload, output, ctx):  # on the loop again, after the middleware ended
        await asyncio.sleep(0)
        ran.append(f"success {output}")

    ended = attempt(lambda p, c: ran.append("task"), Hooks.of(middleware=drops, on_success=on_success))
    assert ended.report.result == "cached" and ran == ["success cached"]


def test_async_and_sync_middleware_nest_in_any_order_around_an_async_task():
    calls: list[str] = []

    def named(name, is_async):
        if is_async:
            async def mw(payload, ctx, next):
                calls.append(name)
                value = await next()
                calls.append(f"{name}:after")
                return value
        else:
            def mw(payload, ctx, next):
                calls.append(name)
                value = next()
                calls.append(f"{name}:after")
                return value
        return mw

    async def body(payload, ctx):
        calls.append("task")
        return await ctx.locals.setdefault("client", Client()).get("x")

    chain = [named("a1", True), named("s1", False), named("a2", True), named("s2", False)]
    assert attempt(body, Hooks.of(middleware=chain)).report.result == "got x"
    assert calls == ["a1", "s1", "a2", "s2", "task", "s2:after", "a2:after", "s1:after", "a1:after"]


# What async hooks leave running: it lasts the attempt, and the attempt's end unwinds it ----------

BEATS: list[str] = []


async def _start_heartbeat(payload, ctx):
    async def heartbeat():
        try:
            while True:
                BEATS.append("beat")
                await asyncio.sleep(0.01)
        finally:
            BEATS.append("closed")  # as a client's close, or a last flush
    ctx.locals["heartbeat"] = asyncio.get_running_loop().create_task(heartbeat())


@task(id="beats", on_start_attempt=_start_heartbeat)
async def beats(payload, ctx):
    await asyncio.sleep(0.05)
    return {"closed_while_it_ran": "closed" in BEATS}


def test_what_an_async_hook_leaves_running_lasts_the_attempt_and_is_unwound_before_it_reports():
    BEATS.clear()
    ended = run_task(Invocation(entrypoint=f"{__name__}:beats", payload="{}"), MemoryStore(), lambda: NOW)
    assert ended.report.outcome == "succeeded" and ended.report.result == {"closed_while_it_ran": False}
    assert "beat" in BEATS and BEATS[-1] == "closed"  # cancelled at the end, its finally run
    assert bridge._loop is None  # the loop is gone: the next attempt in this process starts another
    assert run_task(Invocation(entrypoint=f"{__name__}:beats", payload="{}"), MemoryStore(),
                    lambda: NOW).report.outcome == "succeeded"


def test_a_task_that_will_not_unwind_is_left_after_the_timeout(caplog):
    async def stubborn():
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(1)

    async def start(payload, ctx):
        asyncio.get_running_loop().create_task(stubborn())

    assert attempt(lambda p, c: "ok", Hooks.of(on_start_attempt=start)).report.result == "ok"
    started = time.monotonic()
    bridge.close(timeout=0.2)
    assert time.monotonic() - started < 2
    assert "1 of the tasks left on the event loop did not end within 0 s" in caplog.text
