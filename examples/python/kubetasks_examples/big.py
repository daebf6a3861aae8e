"""Large results (tests/integration/test_large_results.py): a task that returns ``payload["bytes"]``
bytes of JSON, a parent that waits for one and reports the digest of what it received, and a task
that forges its report (a ref to someone else's result) to show the operator refusing it."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from kubetasks import protocol
from kubetasks.runtime import Context, task, trigger_and_wait


def blob(size: int) -> str:
    """A JSON string value whose compact JSON text is exactly ``size`` bytes (quotes included)."""
    block = hashlib.sha256(str(size).encode()).hexdigest()
    body = size - 2
    return (block * (body // len(block) + 1))[:body]


def digest_of(value: Any) -> dict[str, Any]:
    text = json.dumps(value, separators=(",", ":")).encode()
    return {"size": len(text), "sha256": hashlib.sha256(text).hexdigest()}


@task(id="big", machine={"cpu": "500m", "memory": "512Mi"})
def big(payload: dict[str, Any], ctx: Context) -> str:
    return blob(int(payload["bytes"]))


@task(id="big-parent", machine={"cpu": "500m", "memory": "512Mi"})
def parent(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Waits for a child ``big`` run and returns the size and sha256 of the result it received."""
    return digest_of(trigger_and_wait("big", {"bytes": int(payload["bytes"])}, timeout=300))


def forge(payload: dict[str, Any], ctx: Context) -> None:
    """Reports ``payload["ref"]`` (another run's result) as its own, then ends as the runtime would."""
    report = protocol.Report(outcome="succeeded", result_ref=payload["ref"]).encode()
    with open(protocol.TERMINATION_MESSAGE_PATH, "w", encoding="utf-8") as f:
        f.write(report)
    os._exit(0)
