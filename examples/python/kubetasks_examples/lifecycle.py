"""Middleware, lifecycle hooks and retried blocks (runtime.lifecycle, runtime.retry).

Every hook appends ``"<attempt>:<hook>"`` to the run's metadata under ``hooks`` (status.metadata),
so the order and count of the hooks of a whole run can be read from the TaskRun after it ended.

``hooked`` fails while ``ctx.attempt < payload["succeed_on"]``; ``{"skip": true}`` makes its
catch_error skip retrying; ``{"success_hook_raises": true}`` makes its on_success raise (the run
still succeeds). ``retried_block`` calls a block that fails ``payload["failures"]`` times inside
one attempt. ``cancellable`` runs until it is cancelled; its ``finally`` block and its on_cancel
hooks print a line each (a cancelled run has ended: its pod may no longer write its metadata);
its on_cancel takes ``payload["linger"]`` seconds.
``napper`` sleeps durably for a second: on_wait in the pod that ends for it, on_resume in the next.
``async_hooked`` is all ``async def``: its middleware makes a client bound to the event loop it was
made on (as aiohttp's and asyncpg's are), which its on_start_attempt, the task and an async step
use, inside the global sync middleware; its on_start_attempt leaves a heartbeat running on the
loop, which the attempt's end cancels (its ``finally`` records it).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kubetasks.runtime import CatchResult, Context, Outcome, Wait, middleware, on_cancel, task


def record(ctx: Context, hook: str) -> None:
    ctx.metadata.append("hooks", f"{ctx.attempt}:{hook}")


@middleware  # global: wraps every task of this process
def timing(payload: Any, ctx: Context, next: Any) -> Any:
    record(ctx, "global-middleware")
    return next()


def connect(payload: Any, ctx: Context, next: Any) -> Any:
    ctx.locals["client"] = "a client made once per attempt"  # what the task and the hooks share
    record(ctx, "middleware")
    return next()


def start(payload: Any, ctx: Context) -> None:
    record(ctx, "on_start_attempt")


def catch(payload: dict[str, Any], error: BaseException, ctx: Context) -> CatchResult | None:
    record(ctx, "catch_error")
    if payload.get("skip"):
        return CatchResult(skip_retrying=True)
    return None  # the Task's retry policy decides


def succeeded(payload: dict[str, Any], output: Any, ctx: Context) -> None:
    record(ctx, "on_success")
    if payload.get("success_hook_raises"):
        raise RuntimeError("on_success fails on purpose: the run succeeds all the same")


def failed(payload: dict[str, Any], error: BaseException, ctx: Context) -> None:
    record(ctx, "on_failure")


def completed(payload: dict[str, Any], outcome: Outcome, ctx: Context) -> None:
    record(ctx, "on_complete")


@task(id="hooked", retry={"maxAttempts": 3, "minDelay": "1s", "maxDelay": "2s"}, middleware=connect,
      on_start_attempt=start, catch_error=catch, on_success=succeeded, on_failure=failed, on_complete=completed)
def hooked(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    record(ctx, "run")
    assert ctx.locals["client"]
    if ctx.attempt < int(payload.get("succeed_on", 1)):
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
    return {"attempt": ctx.attempt}


@task(id="retried-block")
def retried_block(payload: dict[str, Any], ctx: Context) -> dict[str, int]:
    tries = 0

    def flaky_call() -> str:
        nonlocal tries
        tries += 1
        if tries <= int(payload.get("failures", 2)):
            raise ConnectionError(f"try {tries} fails on purpose")
        return "ok"

    ctx.retry.on_throw(flaky_call, max_attempts=5, min_delay=0.1, max_delay=0.5)
    return {"tries": tries, "attempt": ctx.attempt}


@on_cancel  # global: for every task of this process
def release(payload: Any, ctx: Context) -> None:
    print(f"{ctx.attempt}:global-on_cancel", flush=True)


def cancelled(payload: Any, ctx: Context) -> None:
    time.sleep(float((payload or {}).get("linger", 0)))  # e.g. stop what was started elsewhere, release a lease
    print(f"{ctx.attempt}:on_cancel", flush=True)


@task(id="cancellable", on_cancel=cancelled)
def cancellable(payload: Any, ctx: Context) -> None:
    record(ctx, "run")
    try:
        while True:
            time.sleep(1)  # the work: a SIGTERM interrupts it (kubetasks.runtime.Stopped)
    finally:
        print(f"{ctx.attempt}:finally", flush=True)


def waits(payload: Any, wait: Wait, ctx: Context) -> None:
    record(ctx, f"on_wait:{wait.kind}:{wait.key}")  # e.g. close a connection the sleep would leave idle


def resumes(payload: Any, wait: Wait, ctx: Context) -> None:
    record(ctx, f"on_resume:{wait.kind}:{wait.key}")


@task(id="napper", on_wait=waits, on_resume=resumes)
def napper(payload: Any, ctx: Context) -> None:
    record(ctx, "run")
    ctx.step.sleep("nap", 1)
    record(ctx, "after")


class LoopClient:
    """Stands in for an async client (aiohttp, asyncpg): usable only on the event loop that made it."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def get(self, what: str) -> str:
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("this client belongs to another event loop")
        await asyncio.sleep(0)
        return f"got {what}"


async def async_connect(payload: Any, ctx: Context, next: Any) -> Any:
    ctx.locals["client"] = LoopClient()
    record(ctx, "async-middleware")
    try:
        return await next()
    finally:
        record(ctx, "async-middleware:after")


async def async_start(payload: Any, ctx: Context) -> None:
    await ctx.locals["client"].get("its first page")
    record(ctx, "async-on_start_attempt")
    ctx.locals["heartbeat"] = asyncio.get_running_loop().create_task(heartbeat(ctx))  # left running


async def heartbeat(ctx: Context) -> None:
    """Runs until cancelled, as a client's keep-alive would: the attempt's end does that."""
    try:
        await asyncio.Event().wait()
    finally:
        record(ctx, "async-heartbeat:closed")


@task(id="async-hooked", middleware=async_connect, on_start_attempt=async_start)
async def async_hooked(payload: Any, ctx: Context) -> dict[str, str]:
    record(ctx, "run")
    step = await ctx.step.run_async("fetch", ctx.locals["client"].get, "a step")
    return {"step": step, "task": await ctx.locals["client"].get("the task")}
