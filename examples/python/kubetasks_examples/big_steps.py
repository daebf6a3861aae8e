"""Step outputs in the object store (tests/integration/test_large_steps.py): a durable pipeline that
passes ``payload["bytes"]`` bytes between three steps and crashes after the second in its first
attempt, and a task that keeps a large step output and sleeps durably, so that its record can be
tampered with (or its blob deleted) before the attempt that reads it back.

Each step returns the attempt it ran in: the result says which steps ran again."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from kubetasks.runtime import Context

from kubetasks_examples.big import blob, digest_of


def pipeline(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    size = int(payload["bytes"])
    first = ctx.step.run("one", lambda: {"attempt": ctx.attempt, "data": blob(size)})
    # the second step transforms the first's whole output: it needs all of it, intact
    second = ctx.step.run("two", lambda: {"attempt": ctx.attempt, "data": first["data"][::-1]})
    if ctx.attempt == 1:
        os._exit(1)  # a crash: no report, no cleanup; the retry policy starts attempt 2
    third = ctx.step.run("three", lambda: {"attempt": ctx.attempt,
                                           "sha256": hashlib.sha256(second["data"].encode()).hexdigest()})
    return {"ran_in": {"one": first["attempt"], "two": second["attempt"], "three": third["attempt"]},
            "two": digest_of(second["data"]), "one": digest_of(first["data"]), "three": third["sha256"]}


def kept_then_paused(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Keeps one large step output, sleeps ``payload["pause"]`` seconds durably (a new attempt
    resumes), then returns the digest of the output as ``ctx.step.run`` gave it back."""
    value = ctx.step.run("big", lambda: {"attempt": ctx.attempt, "data": blob(int(payload["bytes"]))})
    ctx.step.sleep("pause", float(payload.get("pause", 1)))
    return {"made_in": value["attempt"], "read_in": ctx.attempt, "data": digest_of(value["data"])}
