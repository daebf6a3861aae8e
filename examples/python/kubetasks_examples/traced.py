"""A task traced end to end (docs/tracing.md): trigger it inside a span of yours and its run joins
your trace. The operator adds the wait, the admission and each attempt; this pod adds a span per
attempt (``task traced``) and per step (``step fetch``, ``step total``). Nothing here mentions
tracing: the operator turns it on for the pod when an OTLP endpoint is configured.

With ``payload["fail_once"]`` attempt 1 fails after its first step, so the trace shows two attempts
and the retry skipping the step that completed. With ``payload["child"]`` a step triggers a child
run of this task (its Task needs ``allowTrigger: [traced]``): the child's run hangs under that step.
"""

from __future__ import annotations

import time
from typing import Any

from kubetasks.runtime import Context, task


def fetch(count: int, seconds: float = 0) -> list[int]:
    time.sleep(seconds)  # a slow fetch, when asked: the trace shows where the time went
    return list(range(count))


def add(items: list[int]) -> int:
    return sum(items)


@task(id="traced", retry=2)
def traced(payload: dict[str, Any] | None, ctx: Context) -> dict[str, Any]:
    payload = payload or {}
    items = ctx.step.run("fetch", fetch, int(payload.get("count", 3)), float(payload.get("seconds", 0)))
    if payload.get("fail_once") and ctx.attempt == 1:
        raise RuntimeError("attempt 1 fails on purpose, after its first step")
    total = ctx.step.run("total", add, items)
    result: dict[str, Any] = {"total": total, "attempt": ctx.attempt}
    if payload.get("child"):  # trigger() carries the current span, this step's, into the child run
        result["child"] = ctx.step.run("notify", lambda: traced.trigger({"count": 1}).id)
    return result
