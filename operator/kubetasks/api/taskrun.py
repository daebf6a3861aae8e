"""The TaskRun resource: one invocation of a Task with a payload, and its observed history."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from kubetasks.api.storage import BlobRef
from kubetasks.api.version import TaskVersion
from kubetasks.api.flow import MAX_PRIORITY, ConcurrencyKey, Debounce, WaitingFor
from kubetasks.api.common import (
    APPLY_ADVICE, DNS1123_SUBDOMAIN, JSON, MAX_RUN_DURATION, SUBDOMAIN_WORDS, Condition, Duration, Machine, Model,
    RetryPolicy, at_most, matches, rules,
)


MAX_TAGS = 10
MAX_TAG_LENGTH = 128


class Phase(StrEnum):
    PENDING = "Pending"
    DELAYED = "Delayed"
    QUEUED = "Queued"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SLEEPING = "Sleeping"
    WAITING = "Waiting"  # for its child runs (ctx.step.trigger_and_wait): no pod until they finish
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    TIMED_OUT = "TimedOut"
    DUPLICATE = "Duplicate"  # another run holds its idempotency key: it never runs
    SUPERSEDED = "Superseded"  # a later run of its debounce key took its place (supersededBy)
    SKIPPED = "Skipped"  # overlap: skip, another run of its key was unfinished

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED, Phase.TIMED_OUT, Phase.DUPLICATE,
                        Phase.SUPERSEDED, Phase.SKIPPED)


class ReplayOf(Model):
    """The run a replay (``kubetasks replay``) runs again, and which of its step records it reuses."""

    name: str = Field(min_length=1, max_length=253, description="The original run's name (same namespace).",
                      json_schema_extra=rules((matches("self", DNS1123_SUBDOMAIN),
                                               f"replayOf.name must be a run's name: {SUBDOMAIN_WORDS}")))
    uid: str = Field(min_length=1, max_length=64, description=(
        "The original run's uid: a run re-created under its name is not it (the replay then fails "
        "ReplaySourceMissing)."))
    from_step: str | None = Field(
        default=None, min_length=1, max_length=1024,
        description="Reuse only the step records that completed before this step (a scoped key, e.g. "
                    "\"parent/child\"); it and every step after it run again. Default: every completed step "
                    "is reused, so the run resumes at the step that failed.")
    fresh: bool = Field(default=False, description="Reuse no step record: every step runs again.")

    model_config = Model.model_config | {
        "json_schema_extra": {"x-kubernetes-validations": [
            {"rule": "!(has(self.fromStep) && has(self.fresh) && self.fresh)", "message": "set replayOf.fromStep or fresh, not both"}]}
    }


class TaskRunSpec(Model):
    task_ref: str = Field(min_length=1, max_length=253,
                          description="Name of the Task in the same namespace (up to 253 characters). Immutable.",
                          json_schema_extra=rules((matches("self", DNS1123_SUBDOMAIN),
                                                   f"taskRef must be the name of a Task: {SUBDOMAIN_WORDS}")))
    payload: JSON | None = Field(
        default=None,
        description="Input of the task: any JSON, nested at most 64 levels deep (deeper fails InvalidPayload). "
                    "Immutable once the run exists, set or not (the ValidatingAdmissionPolicy "
                    "taskrun-payload-immutable.kubetasks.io, shipped with the CRDs): every attempt runs with the "
                    "same payload. " + APPLY_ADVICE)
    payload_ref: BlobRef | None = Field(
        default=None,
        description="Input of the task kept in the operator's object store (a payload over storage.threshold, "
                    "uploaded by `kubetasks run` or `trigger` through the operator's PUT /payloads/<namespace>): "
                    "it must name a blob below payloads/<this namespace>/ of that store. Instead of payload (a run "
                    "with both fails InvalidPayloadRef: CEL cannot see the untyped payload); immutable. Reaches "
                    "`entrypoint` tasks only.")
    delay: Duration | None = Field(
        default=None, json_schema_extra=at_most(MAX_RUN_DURATION),
        description=f"Start no sooner than this long after creation; at most {MAX_RUN_DURATION}.")
    not_before: datetime | None = Field(default=None, description="Start no sooner than this time.")
    idempotency_key: str | None = Field(
        default=None, max_length=256,
        description="Of the runs of one Task with the same key, one runs; the others end Duplicate (duplicateOf).",
    )
    idempotency_key_ttl: Duration | None = Field(
        default=None, alias="idempotencyKeyTTL", json_schema_extra=at_most(MAX_RUN_DURATION, positive=True),
        description="How long this run holds its idempotency key, from its creation; the Task's "
                    "idempotencyKeyTTL when unset.")
    tags: list[Annotated[str, Field(max_length=MAX_TAG_LENGTH)]] = Field(
        default_factory=list, max_length=MAX_TAGS,
        description=f"Labels of your own for the run (`kubetasks runs --tag T` lists those with T): at most {MAX_TAGS}, "
                    f"each at most {MAX_TAG_LENGTH} characters.")
    concurrency_key: ConcurrencyKey | None = Field(
        default=None, description="The key its Task's concurrency.perKey, throttle.perKey and overlap count by "
                                  "(a tenant, a user...). Immutable.")
    priority: int = Field(
        default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY,
        description="Seconds ahead in line: a waiting run is served as if created this much earlier "
                    f"(-{MAX_PRIORITY} to {MAX_PRIORITY}); ties go to the older run.")
    debounce: Debounce | None = Field(default=None, description="Runs of one key close together become one run.")
    machine: Machine | None = Field(default=None, description="Overrides the Task's machine.")
    retry: RetryPolicy | None = Field(default=None, description="Overrides the Task's retry policy.")
    cancel: bool = Field(default=False, description="Set to true to cancel the run.")
    parent_run: str | None = Field(default=None, description="The run that triggered this one, if any.")
    inherit_version: bool = Field(
        default=False, description="Set by the SDK on a child its parent waits for (trigger_and_wait): when the "
                                   "parent runs the same Task, this run runs the parent's locked version "
                                   "(status.taskVersion) rather than the Task's latest. Immutable.")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Overrides the Task's retention.ttlSecondsAfterFinished; 0 keeps this run.")
    replay_of: ReplayOf | None = Field(
        default=None, description="Set by `kubetasks replay`: this run runs another run of the same Task again, "
                                  "starting from copies of its step records (the original is never written). "
                                  "Immutable.")

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "!(has(self.delay) && has(self.notBefore))", "message": "set delay or notBefore, not both"},
                {"rule": "self.taskRef == oldSelf.taskRef", "message": "taskRef is immutable"},
                {"rule": "!oldSelf.cancel || self.cancel", "message": "a cancelled run cannot be resumed"},
                {"rule": "has(self.concurrencyKey) == has(oldSelf.concurrencyKey) && "
                         "(!has(self.concurrencyKey) || self.concurrencyKey == oldSelf.concurrencyKey)",
                 "message": "concurrencyKey is immutable"},
                {"rule": "has(self.debounce) == has(oldSelf.debounce) && "
                         "(!has(self.debounce) || self.debounce == oldSelf.debounce)",
                 "message": "debounce is immutable"},
                {"rule": "has(self.payloadRef) == has(oldSelf.payloadRef) && "
                         "(!has(self.payloadRef) || self.payloadRef == oldSelf.payloadRef)",
                 "message": "payloadRef is immutable"},
                {"rule": "(has(self.inheritVersion) && self.inheritVersion) == "
                         "(has(oldSelf.inheritVersion) && oldSelf.inheritVersion)",
                 "message": "inheritVersion is immutable"},
                {"rule": "has(self.replayOf) == has(oldSelf.replayOf) && "
                         "(!has(self.replayOf) || self.replayOf == oldSelf.replayOf)",
                 "message": "replayOf is immutable"},
            ]
        }
    }


class AttemptRecord(Model):
    attempt: int
    job_name: str
    start_time: datetime | None = None
    completion_time: datetime | None = None
    exit_code: int | None = None
    reason: str | None = Field(default=None, description="Succeeded, Error, OOMKilled, DeadlineExceeded, Sleeping...")
    message: str | None = None
    task_generation: int | None = Field(default=None, description="The Task's generation the attempt was made from.")
    log: BlobRef | None = Field(default=None, description=(
        "The attempt's whole log in the object store (kubetasks logs reads it through the operator)."))


class StepRecord(Model):
    name: str
    attempt: int
    duration_seconds: float | None = None
    completed_at: datetime | None = None
    wake_at: datetime | None = Field(default=None, description="When a durable sleep not yet over ends.")
    waiting_on: list[str] | None = Field(default=None, max_length=1000,
                                         description="The child runs (and waitpoint:<name> tokens) a durable "
                                                     "wait not yet over waits for.")
    any_of: bool | None = Field(default=None, description="The wait ends when the first of them ends (wait_any).")
    timeout_at: datetime | None = Field(default=None, description="When a wait_any not yet over times out.")


class ErrorInfo(Model):
    type: str | None = None
    message: str
    traceback: str | None = None


HookKind = Literal["onSuccess", "onFailure", "onComplete"]


class HookRecord(Model):
    """A hook of the run's Task that its outcome fires (core.hooks), decided when it finished."""

    kind: HookKind
    task: str = Field(description="The Task the hook runs.")
    run: str = Field(description="The hook run's name: one per finished run and hook, so it is created once.")
    fired: bool = Field(default=False, description="The hook run has been created (it may have finished and been "
                                                   "deleted since).")


class TaskRunStatus(Model):
    phase: Phase = Phase.PENDING
    attempt: int = 0
    attempts: list[AttemptRecord] = Field(default_factory=list, max_length=20)
    start_time: datetime | None = None
    completion_time: datetime | None = None
    duration: str | None = Field(default=None, description="Wall time from first start to completion.")
    next_retry_at: datetime | None = None
    wake_at: datetime | None = Field(default=None, description="When a durable sleep ends.")
    result: JSON | None = None
    result_ref: BlobRef | None = Field(
        default=None, description="Where a result too large for status is kept (the run's ConfigMap or the object "
                                  "store), with its size and sha256; read with kubetasks describe or trigger_and_wait.")
    error: ErrorInfo | None = None
    steps: list[StepRecord] = Field(default_factory=list, max_length=200)
    duplicate_of: str | None = Field(default=None, description="The run that holds this run's idempotency key.")
    idempotency_key_expires_at: datetime | None = Field(
        default=None, description="When the idempotency key this run holds is released, if it has not failed "
                                  "first: a run with the same key created after it runs.")
    superseded_by: str | None = Field(default=None, description="The run of its debounce key that runs instead.")
    waiting_for: WaitingFor | None = Field(
        default=None, description="What keeps it from starting (kubetasks why RUN tells its place and an ETA).")
    waiting_on: list[str] | None = Field(
        default=None, max_length=1000,
        description="While Waiting: the child runs (ctx.step.trigger_and_wait) not finished yet; the next attempt "
                    "starts when the last one finishes.")
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    hooks: Annotated[list[HookRecord], Field(max_length=3)] | None = Field(
        default=None, description="The Task's onSuccess, onFailure and onComplete that the run's outcome fires, "
                                  "each with its run's name; written by the operator as the run finishes.")
    metadata: dict[str, JSON] | None = Field(
        default=None,
        description="What the task reports with ctx.metadata (progress, counts, notes): at most 256 KiB of JSON, "
                    "written by the operator from the pod's checkpoint at most once a second, with what its "
                    "descendants added through ctx.metadata.parent and .root folded in.")
    ancestor_metadata: dict[str, JSON] | None = Field(
        default=None,
        description="What this run added to its ancestors' metadata (ctx.metadata.parent and .root, as "
                    "{key: {set|inc|append: value}}): the operator folds it into theirs.")
    task_version: TaskVersion | None = Field(
        default=None, description="The Task version the run is locked to, taken when its first attempt started: "
                                  "every later attempt, retry and wake-up runs with it, whatever the Task says since.")
    trigger_depth: int | None = Field(
        default=None, description="Runs between this one and the root of its trigger chain (its parent's plus one), "
                                  "set by the operator from its parent; unset for a run with no parentRun.")


class TaskRun(Model):
    api_version: str = "kubetasks.io/v1alpha1"
    kind: str = "TaskRun"
    metadata: dict[str, JSON] = Field(default_factory=dict)
    spec: TaskRunSpec
    status: TaskRunStatus = Field(default_factory=TaskRunStatus)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))
