"""Allocates ``payload["mb"]`` MiB and holds it for ``payload["hold"]`` seconds: for OOMKilled
tests (and retry.outOfMemoryMachine)."""

from __future__ import annotations

import time
from typing import Any

from kubetasks.runtime import Context, task

MIB = 1024 * 1024


@task(id="memory", machine="micro")
def memory(payload: dict[str, Any], ctx: Context) -> dict[str, int]:
    # A checkpoint before the allocation: an OOM-killed attempt resumes after it.
    prepared_on = ctx.step.run("prepare", lambda: ctx.attempt)
    # "retryMb": a smaller allocation on retries, to show a run recovering from an OOM kill.
    mb = int(payload["mb"] if ctx.attempt == 1 else payload.get("retryMb", payload["mb"]))
    chunks = []
    for _ in range(mb):
        # Filled, not just reserved: untouched pages would not count against the memory limit.
        chunks.append(bytearray(b"\x01") * MIB)
    ctx.logger.info("holding %d MiB", len(chunks))
    time.sleep(float(payload.get("hold", 1)))
    return {"allocatedMiB": len(chunks), "attempt": ctx.attempt, "preparedOnAttempt": prepared_on}
