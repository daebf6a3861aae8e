"""Fails on purpose: retryable errors until attempt ``succeed_on``, or a permanent abort."""

from __future__ import annotations

from typing import Any

from kubetasks.runtime import AbortTaskRun, Context, task


@task(id="flaky", retry={"maxAttempts": 5, "minDelay": "1s", "maxDelay": "5s"})
def flaky(payload: dict[str, Any] | None, ctx: Context) -> dict[str, int]:
    payload = payload or {}
    if payload.get("abort"):
        raise AbortTaskRun(str(payload["abort"]))  # exit 78: the run fails at once, no retries
    succeed_on = int(payload.get("succeed_on", 3))
    if ctx.attempt < succeed_on:
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose (succeeds on attempt {succeed_on})")
    return {"attempt": ctx.attempt}
