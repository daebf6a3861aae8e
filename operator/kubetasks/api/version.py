"""A run's locked Task version: the part of its Task's spec its attempts run with (status.taskVersion)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubetasks.api.common import JSON, Duration, Machine, Model, RetryPolicy
from kubetasks.api.task import Toleration


class LockedSpec(Model):
    """The Task's fields that make an attempt's Job (core.render) and decide its retries, as they
    were when the run's first attempt started. What a run's pods may do (allowTrigger, trigger
    limits) is not locked: the Task as it is now says, so a deploy that takes a right away takes it
    at once."""

    image: str
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    command: list[str] | None = None
    args: list[str] | None = None
    entrypoint: str | None = None
    # As the Task had them (EnvVar's wire form), unchecked: the Task's schema checked them when it
    # was admitted, and only the operator writes status (which has no CEL rules: api.crd).
    env: list[JSON] = Field(default_factory=list)
    service_account_name: str | None = None
    bind_run_role: bool = False
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    machine: Machine | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    max_duration: Duration | None = None
    stop_grace_period: Duration | None = None
    ttl_seconds_after_finished: int | None = None


class TaskVersion(Model):
    """The Task version a run is locked to (core.version): its retries, wake-ups and the children
    it waits for that run the same Task use it, whatever the Task says since."""

    version: str = Field(description="The image's tag, or its digest (sha256:<12 hex>) when it names one.")
    spec_hash: str = Field(description="sha256 (16 hex) of spec: two runs with the same hash run the same.")
    generation: int | None = Field(default=None, description="The Task's generation it was taken from.")
    inherited_from: str | None = Field(
        default=None, description="The parent run whose version it took (a child it waits for, of the same Task).")
    spec: LockedSpec
