"""Allocates ``payload["mb"]`` MiB and holds it for ``payload["hold"]`` seconds: for OOMKilled
tests (and retry.outOfMemoryMachine)."""

from __future__ import annotations

import time
from typing import Any

from kubetasks.runtime import Context, task

MIB = 1024 * 1024


@task(id="memory", machine="micro")
def memory(payload: dict[str, Any], ctx: Context) -> dict[str, int]:
    mb = int(payload["mb"])
    chunks = []
    for _ in range(mb):
        # Filled, not just reserved: untouched pages would not count against the memory limit.
        chunks.append(bytearray(b"\x01") * MIB)
    ctx.logger.info("holding %d MiB", len(chunks))
    time.sleep(float(payload.get("hold", 1)))
    return {"allocatedMiB": len(chunks), "attempt": ctx.attempt}
