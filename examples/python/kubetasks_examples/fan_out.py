"""Durable trigger-and-wait: a parent fans out to child runs and waits for them with no pod.

``fan_out`` counts a side effect in a step (see ``steps.bump``), triggers one ``square`` run per
number and waits for them all; then one ``square`` run that fails, whose ``ChildFailed`` it
catches. Each wait ends the parent's attempt: the run is Waiting (no pod, no concurrency slot)
until its children have finished, and the next attempt replays the steps before the wait. The
parent's Task must allow it to trigger ``square`` (``allowTrigger: [square]``).

Progress: each ``square`` run reports its own (``ctx.metadata``, its status.metadata and the
PROGRESS column) and adds one to its parent's ``squared`` when it succeeds
(``ctx.metadata.parent``); the parent's status.metadata counts up as its children finish.
"""

from __future__ import annotations

import time
from typing import Any

from kubetasks.runtime import ChildFailed, Context, task
from kubetasks_examples.steps import bump


@task(id="square")
def square(payload: dict[str, Any], ctx: Context) -> int:
    ctx.metadata.set("progress", 0)  # shown while it runs
    time.sleep(float(payload.get("seconds", 0)))  # a child that takes a while: its parent waits with no pod
    if payload.get("fail"):
        raise ValueError(f"square was asked to fail ({payload['n']})")
    ctx.metadata.set("progress", 1)
    ctx.metadata.parent.increment("squared")  # the parent's status.metadata.squared: one per child done
    return int(payload["n"]) ** 2


@task(id="fan-out")
def fan_out(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    ctx.step.run("before", bump, ctx, payload.get("counter"), "before")
    ctx.metadata.set("numbers", len(payload["numbers"]))
    seconds = payload.get("seconds", 0)
    squares = ctx.step.batch_trigger_and_wait(
        "squares", square, [{"n": n, "seconds": seconds} for n in payload["numbers"]])
    try:
        ctx.step.trigger_and_wait("doomed", square, {"n": -1, "fail": True})
        caught = None
    except ChildFailed as e:  # the child failed for good: the parent goes on without it
        caught = {"run": e.run, "phase": e.phase, "error": (e.error or {}).get("type")}
    return {"squares": squares, "caught": caught, "attempt": ctx.attempt}
