"""The Task resource: what to run, on which machine, how to retry, and when (cron)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from kubetasks.api.common import (
    DNS1123_LABEL, JSON, MAX_RUN_DURATION, Condition, Duration, Machine, Model, RetryPolicy, at_most,
)

RESERVED_ENV_PREFIX = "KUBETASKS_"  # the runtime's own variables (kubetasks.protocol.ENV_*)


class EnvVar(Model):
    """A container environment variable (corev1.EnvVar); ``valueFrom`` is passed through as-is."""

    name: str = Field(min_length=1, description=f"Names starting with {RESERVED_ENV_PREFIX} are reserved for the "
                                                 "kubetasks runtime and refused.")
    value: str | None = None
    value_from: JSON | None = None

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": f"!self.name.startsWith('{RESERVED_ENV_PREFIX}')",
                 "message": f"env names starting with {RESERVED_ENV_PREFIX} are reserved for the kubetasks runtime"},
            ]
        }
    }


class Toleration(Model):
    """A pod toleration (corev1.Toleration): lets task pods onto tainted nodes."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Retention(Model):
    """How long finished runs are kept (CronJob's history limits, Argo's TTL): a run deleted takes
    its Jobs, logs and checkpoints with it."""

    ttl_seconds_after_finished: int = Field(
        default=7 * 86400, ge=0, description="A finished run is deleted this long after it finished; 0 keeps it.")
    history_limit: int = Field(
        default=1000, ge=0,
        description="The newest this many succeeded and this many failed runs are kept, older ones deleted; 0: no limit.")


class TaskSpec(Model):
    id: Annotated[str, Field(max_length=63, pattern=DNS1123_LABEL)] | None = Field(
        default=None, description="Task id; defaults to the object's name. A DNS-1123 label."
    )
    image: str = Field(min_length=1, description="Container image. Use a fully qualified, non-latest tag.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    command: list[str] | None = Field(default=None, description="Container command; overrides the entry point.")
    args: list[str] | None = None
    entrypoint: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")] | None = Field(
        default=None, description="Python entry point 'module:function' run by the kubetasks runtime."
    )
    env: list[EnvVar] = Field(default_factory=list)
    service_account_name: str | None = Field(default=None, description="Service account of task pods.")
    allow_trigger: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(
        default_factory=list, max_length=100,
        description="Tasks whose runs this Task's pods may create (child runs, checked by the operator); none when empty.")
    bind_run_role: bool = Field(
        default=False, description="With serviceAccountName: bind the run's Role (its own TaskRun and checkpoints, "
        "allowTrigger) to that account too. Off: its pods run as that account without it.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    machine: Machine | None = Field(default=None, description="Pod size; small-1x when unset.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Labels the task pods' node must have.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the task pods tolerate.")
    max_duration: Duration | None = Field(
        default=None, json_schema_extra=at_most(MAX_RUN_DURATION, positive=True),
        description=f"An attempt running longer is killed: TimedOut. More than 0s, at most {MAX_RUN_DURATION}.")
    ttl_seconds_after_finished: int | None = Field(
        default=86400, ge=0, description="Finished attempts' Jobs (and their logs) are deleted after this long."
    )
    concurrency: int | None = Field(default=None, ge=1, description="Most runs of this Task running at once.")
    payload_schema: JSON | None = Field(
        default=None, json_schema_extra={"type": "object"},
        description="JSON Schema (an object: for the boolean schemas use {} or {\"not\": {}}) that payloads must "
                    "match. Local only: a $ref must point within the schema (#...), nothing is fetched. pattern and "
                    "patternProperties are RE2 expressions (linear time: no backreferences or lookaround). Nested "
                    "at most 64 levels deep. A schema that breaks these rules makes the Task Ready=False "
                    "(InvalidPayloadSchema) and its runs fail InvalidTask.")
    retention: Retention = Field(default_factory=Retention, description="How long finished runs are kept.")

    # Cron
    schedule: str | None = Field(default=None, description="5-field cron expression or @hourly/@daily/...")
    timezone: str = Field(default="UTC", description="IANA time zone of the schedule.")
    payload: JSON | None = Field(default=None, description="Payload of scheduled runs.")
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    starting_deadline_seconds: int | None = Field(default=None, ge=0)
    suspend: bool = False
    successful_runs_history_limit: int = Field(default=3, ge=0)
    failed_runs_history_limit: int = Field(default=1, ge=0)

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "!(has(self.command) && has(self.entrypoint))",
                 "message": "set command or entrypoint, not both"},
            ]
        }
    }


class TaskStatus(Model):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    active_runs: list[str] = Field(default_factory=list, description="Scheduled runs still running.")
    last_schedule_time: datetime | None = None
    next_schedule_time: datetime | None = None
    last_run_time: datetime | None = None
    machine: str | None = Field(default=None, description="Resolved machine size, for kubectl get tasks.")
    runs: int = Field(default=0, description="Runs of this Task that exist now.")
    succeeded: int = 0
    failed: int = 0
    average_duration_seconds: float | None = None


class Task(Model):
    api_version: str = "kubetasks.io/v1alpha1"
    kind: str = "Task"
    metadata: dict[str, JSON] = Field(default_factory=dict)
    spec: TaskSpec
    status: TaskStatus = Field(default_factory=TaskStatus)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def task_id(self) -> str:
        return self.spec.id or self.name
