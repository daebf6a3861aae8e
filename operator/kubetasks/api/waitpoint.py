"""Waitpoint: a token a run waits for (``ctx.step.wait_for_token``), completed by a person or an
outside system with ``kubetasks complete`` (RBAC: ``update`` on ``waitpoints/status``).

The run's pod creates it, named from the run and the step (core.naming.token_name), before it
writes its wait; the operator resumes the run once it is Completed or TimedOut. The first
completion wins: a write of the status names the resourceVersion it read, so of two completions
racing, one lands and the other sees the token finished and changes nothing. A token completed
before its run suspends keeps its data for the run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from kubetasks.api.common import DNS1123_SUBDOMAIN, JSON, Model, rules

TOKEN_DATA_LIMIT = 64 * 1024  # bytes of a completion's JSON: it is copied into the run's checkpoint record
WaitpointPhase = Literal["Waiting", "Completed", "TimedOut"]
FINISHED: tuple[WaitpointPhase, ...] = ("Completed", "TimedOut")


class WaitpointSpec(Model):
    """Which run waits for the token, and until when. Set once, by the run's pod."""

    run: str = Field(max_length=253, pattern=DNS1123_SUBDOMAIN, description="The TaskRun that waits for it.")
    run_uid: str = Field(max_length=64, description="That run's uid: a run re-created under the name is not it.")
    step: str = Field(max_length=1024, description="The step key of the wait in the run.")
    expires_at: datetime | None = Field(default=None, description="When it times out, if not completed by then.")

    model_config = Model.model_config | {"json_schema_extra": rules(
        ("self == oldSelf", "a Waitpoint's spec is immutable: it is made by the run that waits for it"))}


class WaitpointStatus(Model):
    phase: WaitpointPhase = "Waiting"
    data: JSON | None = Field(default=None, description="What the completion sent (JSON, at most 64 KiB).")
    completed_at: datetime | None = None
    message: str | None = Field(default=None, max_length=1024)
