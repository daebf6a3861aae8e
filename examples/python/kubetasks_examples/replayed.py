"""A task that fails in its third step until it is replayed (``kubetasks replay``).

Steps 1 and 2 count a side effect each (``steps.bump``, in the ConfigMap ``payload["counter"]``,
optional); step 3 counts one too, then raises unless the run is a replay (``ctx.is_replay``) or
``payload["fail"]`` is false. ``kubetasks replay RUN`` of a failed run reuses the checkpoints of
steps 1 and 2 (their side effects are not repeated) and runs step 3 again, which now succeeds:
the counters end at step-1=1, step-2=1, step-3=2. With ``payload["pad"]`` (bytes), step 1's output
carries that much padding: above the store's threshold (64 KiB) it is kept in the object store,
and the replay reads the operator's copy of it.
"""

from __future__ import annotations

from typing import Any

from kubetasks.runtime import Context, task
from kubetasks_examples.steps import bump


def prepare(ctx: Context, counter: str | None, pad: int) -> dict[str, Any]:
    return {"count": bump(ctx, counter, "step-1"), "pad": "x" * pad}


def charge(ctx: Context, counter: str | None, fail: bool) -> int:
    count = bump(ctx, counter, "step-3")
    if fail and not ctx.is_replay:
        raise RuntimeError("step 3 failed (it succeeds when the run is replayed)")
    return count


@task(id="replayed", retry=1)
def replayed(payload: dict[str, Any] | None, ctx: Context) -> dict[str, Any]:
    payload = payload or {}
    counter, fail = payload.get("counter"), payload.get("fail", True)
    one = ctx.step.run("step-1", prepare, ctx, counter, int(payload.get("pad", 0)))["count"]
    two = ctx.step.run("step-2", bump, ctx, counter, "step-2")
    three = ctx.step.run("step-3", charge, ctx, counter, fail)
    return {"counts": [one, two, three], "replay": ctx.is_replay}
