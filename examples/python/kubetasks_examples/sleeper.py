"""A durable sleep between two steps: the attempt ends while sleeping (no pod waits) and the next
attempt resumes after the sleep, with the first step skipped."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from kubetasks.runtime import Context, task


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


@task(id="sleeper")
def sleeper(payload: dict[str, Any] | None, ctx: Context) -> dict[str, Any]:
    seconds = float((payload or {}).get("seconds", 5))
    before = ctx.step.run("before", now)
    ctx.step.sleep("nap", seconds)
    after = ctx.step.run("after", now)
    return {"seconds": seconds, "before": before, "after": after, "attempt": ctx.attempt}
