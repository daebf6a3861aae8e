"""The smallest task: returns a greeting."""

from __future__ import annotations

from typing import Any

from kubetasks.runtime import Context, task


@task(id="hello", machine="micro")
def hello(payload: dict[str, Any] | None, ctx: Context) -> dict[str, str]:
    name = (payload or {}).get("name", "world")
    ctx.logger.info("greeting %s (run %s, attempt %d)", name, ctx.run_id, ctx.attempt)
    return {"greeting": f"Hello, {name}!"}


def run(payload: dict[str, Any] | None, ctx: Context) -> dict[str, str]:
    """The same task as a plain function: entry point ``kubetasks_examples.hello:run``."""
    return hello(payload, ctx)
