"""The Task resource: what to run, on which machine, how to retry, and when (cron)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field
from pydantic.config import JsonDict

from kubetasks.api.common import (
    APPLY_ADVICE, DNS1123_LABEL, DNS1123_SUBDOMAIN, JSON, LABEL_WORDS, MAX_RUN_DURATION, SUBDOMAIN_WORDS, Condition, Duration,
    Machine, Model, RetryPolicy, at_most, matches, rules,
)
MAX_STOP_GRACE = "1h"
from kubetasks.api.flow import Concurrency, Holder, Overlap, Throttle
from kubetasks.api.taskevent import EVENT_NAME, EVENT_NAME_WORDS
from kubetasks.api.images import (
    IMAGE_MESSAGE, IMAGE_NAME, IMAGE_NAME_MESSAGE, IMAGE_REFERENCE, MAX_IMAGE_LENGTH, MAX_IMAGE_NAME_LENGTH,
)

RESERVED_ENV_PREFIX = "KUBETASKS_"  # the runtime's own variables (kubetasks.protocol.ENV_*)
ENTRYPOINT_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")  # core.schedule.MACROS
# Five fields of cron characters, or a macro; what the fields mean is checked by the operator
# (core.schedule), which says so in the Task's Ready condition.
SCHEDULE_SHAPE = (r"^\s*(@(?i:yearly|annually|monthly|weekly|daily|midnight|hourly)"
                  r"|[0-9A-Za-z*?,/#-]+(\s+[0-9A-Za-z*?,/#-]+){4})\s*$")
MAX_SCHEDULE_LENGTH = 256
NUL = r"\x00"  # RE2
MAX_ENV_VARS = 256
MAX_ENV_VALUE_LENGTH = 32768
MAX_FILTER_LENGTH = 1024  # CEL over an event's data: short, so its cost is bounded by the data's size


class EnvVar(Model):
    """A container environment variable (corev1.EnvVar); ``valueFrom`` is passed through as-is."""

    name: str = Field(min_length=1, description=f"Names starting with {RESERVED_ENV_PREFIX} are reserved for the "
                                                 "kubetasks runtime and refused.")
    # 32768 characters are at most 128 KiB of UTF-8, the kernel's limit on one environment string
    # (MAX_ARG_STRLEN); the bounds also let the API server afford the NUL rule below.
    value: str | None = Field(default=None, max_length=MAX_ENV_VALUE_LENGTH,
                              description="No NUL characters: a process's environment cannot hold one.")
    value_from: JSON | None = None

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": f"!self.name.startsWith('{RESERVED_ENV_PREFIX}')",
                 "message": f"env names starting with {RESERVED_ENV_PREFIX} are reserved for the kubetasks runtime"},
                # execve() takes NUL-terminated strings: such a value could only be cut or refused later.
                {"rule": f"!has(self.value) || !{matches('self.value', NUL)}",
                 "message": "env values must not contain a NUL character (\\0): a process's environment cannot hold one"},
            ]
        }
    }


TaskName = Annotated[str, Field(max_length=253)]
HOOK_WORDS = ("The operator creates that run (payload {run, task, phase, reason, attempts, and result, resultRef "
              "or error}); a run that is itself a hook run fires no hooks.")


def hook_rule(field: str) -> JsonDict:
    return rules((matches("self", DNS1123_SUBDOMAIN), f"{field} must name a Task: {SUBDOMAIN_WORDS}"))


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


class Subscription(Model):
    """An event this Task runs on (``kubetasks send``): one run per event sent, its data the payload."""

    event: str = Field(max_length=63, description=f"The event's name: {EVENT_NAME_WORDS}.",
                       json_schema_extra=rules((matches("self", EVENT_NAME), f"event must be {EVENT_NAME_WORDS}")))
    filter: str | None = Field(
        default=None, max_length=MAX_FILTER_LENGTH,
        description="A CEL expression over the event (data, event, id): the Task runs only when it is true. One "
                    "that does not compile makes the Task Ready=False (InvalidFilter) and the subscription is "
                    "skipped; one that fails on an event's data (a missing field) does not match it.")


class TaskSpec(Model):
    id: Annotated[str, Field(max_length=63, pattern=DNS1123_LABEL)] | None = Field(
        default=None, description="Task id; defaults to the object's name. A DNS-1123 label.",
        json_schema_extra=rules((matches("self", DNS1123_LABEL), f"id must be a DNS-1123 label: at most 63 {LABEL_WORDS}")),
    )
    image: str = Field(
        min_length=1, max_length=MAX_IMAGE_LENGTH,
        description="Container image reference, [registry[:port]/]path[:tag][@digest] (checked at admission, at most "
                    f"{MAX_IMAGE_LENGTH} characters). Use a fully qualified, non-latest tag.",
        json_schema_extra=rules((matches("self", IMAGE_REFERENCE), IMAGE_MESSAGE),
                                # find() is "" when the reference does not start with a name: the rule above says so.
                                (f"self.find(r'{IMAGE_NAME}').size() <= {MAX_IMAGE_NAME_LENGTH}", IMAGE_NAME_MESSAGE)))
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    command: list[str] | None = Field(default=None, description="Container command; overrides the entry point.")
    args: list[str] | None = None
    entrypoint: Annotated[str, Field(pattern=ENTRYPOINT_PATTERN, max_length=512)] | None = Field(
        default=None, description="Python entry point 'module:function' run by the kubetasks runtime.",
        json_schema_extra=rules((matches("self", ENTRYPOINT_PATTERN),
                                 "entrypoint must be 'module:function' with Python names, e.g. 'app.tasks:main'")),
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=MAX_ENV_VARS)
    service_account_name: str | None = Field(
        default=None, max_length=253, description="Service account of task pods.",
        json_schema_extra=rules((matches("self", DNS1123_SUBDOMAIN),
                                 f"serviceAccountName must be a service account's name: {SUBDOMAIN_WORDS}")))
    allow_trigger: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(
        default_factory=list, max_length=100,
        description="Tasks whose runs this Task's pods may create (child runs, checked by the operator); none when empty.")
    max_trigger_depth: int = Field(
        default=10, ge=0, le=1000,
        description="How deep a chain of runs this Task's runs may trigger, counted through spec.parentRun (a "
                    "run its pods create is one deeper than theirs); a child deeper fails TriggerDepthExceeded. "
                    "The operator's cap (chart value maxTriggerDepth) applies when lower.")
    max_child_runs: int = Field(
        default=1000, ge=0, le=1_000_000,
        description="Child runs one run of this Task may have (runs naming it in spec.parentRun that exist); "
                    "one past it fails TooManyChildRuns.")
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
    stop_grace_period: Duration | None = Field(
        default=None, json_schema_extra=at_most(MAX_STOP_GRACE, positive=True),
        description="How long an attempt's pod has after SIGTERM before it is killed: a cancel (its on_cancel hooks "
                    "run within it), maxDuration, an eviction; its pods' terminationGracePeriodSeconds. Unset: 5s, "
                    f"so that a cancelled run frees its resources soon. More than 0s, at most {MAX_STOP_GRACE}.")
    ttl_seconds_after_finished: int | None = Field(
        default=86400, ge=0, description="Finished attempts' Jobs (and their logs) are deleted after this long."
    )
    idempotency_key_ttl: Duration = Field(
        default="720h", alias="idempotencyKeyTTL", json_schema_extra=at_most(MAX_RUN_DURATION, positive=True),
        description="How long a run's idempotency key holds, from the run's creation (720h: 30 days); after it, a run "
                    "with the same key runs again. A run that fails or times out releases its key at once; "
                    "succeeded and cancelled runs keep it. A run may set its own (spec.idempotencyKeyTTL).")
    concurrency: Concurrency | None = Field(
        default=None, description="Runs holding a slot at once, in all and per concurrency key; others wait Queued.")
    queue: str | None = Field(
        default=None, max_length=253, description="A TaskQueue in this namespace whose limit this Task's runs share "
                                                  "with the other Tasks naming it.",
        json_schema_extra=rules((matches("self", DNS1123_SUBDOMAIN), f"queue must name a TaskQueue: {SUBDOMAIN_WORDS}")))
    throttle: Throttle | None = Field(default=None, description="Most starts per period; runs beyond it wait Throttled.")
    on_success: TaskName | None = Field(
        default=None, description=f"A Task in this namespace to run once when a run of this Task succeeds. {HOOK_WORDS}",
        json_schema_extra=hook_rule("onSuccess"))
    on_failure: TaskName | None = Field(
        default=None, description="A Task in this namespace to run once when a run of this Task ends Failed (its "
                                  f"retries spent), TimedOut or Cancelled. {HOOK_WORDS}",
        json_schema_extra=hook_rule("onFailure"))
    on_complete: TaskName | None = Field(
        default=None, description="A Task in this namespace to run once when a run of this Task ends in any way "
                                  f"but Duplicate, Superseded or Skipped (those never ran). {HOOK_WORDS}",
        json_schema_extra=hook_rule("onComplete"))
    overlap: Overlap = Field(
        default="queue", description="A new run while another run of its concurrency key is unfinished: queue (waits "
                                     "its turn), skip (ends Skipped), cancelRunning (the older ones are cancelled), "
                                     "cancelNew (ends Cancelled).")
    payload_schema: JSON | None = Field(
        default=None, json_schema_extra={"type": "object"},
        description="JSON Schema (an object: for the boolean schemas use {} or {\"not\": {}}) that payloads must "
                    "match. Local only: a $ref must point within the schema (#...), nothing is fetched. pattern and "
                    "patternProperties are RE2 expressions (linear time: no backreferences or lookaround). Nested "
                    "at most 64 levels deep. A schema that breaks these rules makes the Task Ready=False "
                    "(InvalidPayloadSchema) and its runs fail InvalidTask.")
    retention: Retention = Field(default_factory=Retention, description="How long finished runs are kept.")
    on: list[Subscription] = Field(default_factory=list, max_length=32,
                                   description="Events (TaskEvents in this namespace) that each start a run.")

    # Cron
    schedule: str | None = Field(
        default=None, max_length=MAX_SCHEDULE_LENGTH, description="5-field cron expression or @hourly/@daily/...",
        json_schema_extra=rules((matches("self", SCHEDULE_SHAPE),
                                 "schedule must be 5 cron fields (minute hour day-of-month month day-of-week), "
                                 f"e.g. '*/15 * * * *', or one of {', '.join(MACROS)}")))
    timezone: str = Field(default="UTC", description="IANA time zone of the schedule.")
    payload: JSON | None = Field(default=None, description="Payload of scheduled runs. " + APPLY_ADVICE)
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
    holders: list[Holder] = Field(default_factory=list, description="The runs holding its concurrency slots, by uid.")


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
