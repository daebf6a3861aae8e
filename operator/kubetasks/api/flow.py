"""Flow control: the limits a run waits under before its first attempt, and the shared TaskQueue.

A slot is held by an attempt that has a Job (created, or expected from a create in flight) and
is not finished; durable waits (a sleep, a retry's backoff) release it unless the limit says
``holdAcrossWaits``. A run starts when every limit it is under has room: its Task's total, its
concurrency key's share, its TaskQueue, and its Task's throttle.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from kubetasks.api.common import Condition, Duration, Model, at_most, convertible

MAX_PRIORITY = 86400  # seconds: priority is a time offset, bounded to a day either way
MAX_KEY_LENGTH = 256
MAX_THROTTLE_PERIOD = "168h"  # Inngest: 1s to 7d
MAX_DEBOUNCE = "168h"
WAIT_REASONS = ("TaskLimit", "KeyLimit", "QueueLimit", "Throttled", "Debounced", "Delayed")


class Concurrency(Model):
    """How many runs of the Task hold a slot at once: in all (``limit``) and per concurrency key
    (``perKey``, over each run's ``spec.concurrencyKey``)."""

    limit: int | None = Field(default=None, ge=1, le=100_000, description="Runs of this Task holding a slot at once.")
    per_key: int | None = Field(default=None, ge=1, le=100_000,
                                description="Runs of one spec.concurrencyKey holding a slot at once (a run without a "
                                            "key is under the key \"\"). Keys with runs waiting are served least "
                                            "recently served first.")
    hold_across_waits: bool = Field(
        default=False, description="A run keeps its slot from its first start to its end, through durable sleeps "
                                   "and retry backoffs (a lock on an outside resource); off, a wait releases it.")
    strict_order: bool = Field(
        default=False, description="Head-of-line order: a run that cannot start holds back every later run under "
                                   "the same limit. Off (BestEffortFIFO), later runs that fit start.")

    model_config = Model.model_config | {"json_schema_extra": {"x-kubernetes-validations": [
        {"rule": "has(self.limit) || has(self.perKey)", "message": "concurrency needs limit, perKey or both"},
    ]}}

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, value: object) -> object:
        # `concurrency=3` in the SDK's @task (and Tasks written before the object form) means a total.
        return {"limit": value} if isinstance(value, int) and not isinstance(value, bool) else value


class Throttle(Model):
    """At most ``limit`` starts per ``period``, spaced evenly (GCRA, as Inngest's throttle): runs
    beyond the rate wait Throttled and start in order when the rate allows; none is dropped."""

    limit: int = Field(ge=1, le=100_000, description="Starts per period.")
    period: Duration = Field(json_schema_extra=at_most(MAX_THROTTLE_PERIOD, positive=True),
                             description=f"The window; more than 0s, at most {MAX_THROTTLE_PERIOD}.")
    burst: int = Field(default=1, ge=1, le=100_000,
                       description="Starts allowed at once after an idle spell; 1 spaces every start by period/limit.")
    per_key: bool = Field(default=False, description="One rate per spec.concurrencyKey instead of one for the Task.")


Overlap = Literal["queue", "skip", "cancelRunning", "cancelNew"]


class Debounce(Model):
    """Runs of one Task with the same debounce key, created within ``delay`` of each other, become
    one run: it starts ``delay`` after the last of them, or ``maxDelay`` after the first."""

    key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    delay: Duration = Field(json_schema_extra=at_most(MAX_DEBOUNCE, positive=True),
                            description=f"Quiet time before the run starts; more than 0s, at most {MAX_DEBOUNCE}.")
    max_delay: Duration = Field(json_schema_extra=at_most(MAX_DEBOUNCE, positive=True),
                                description="Longest a debounced run waits after the first run of its key; "
                                            "required, so a steady stream cannot postpone it for ever.")
    mode: Literal["leading", "trailing"] = Field(
        default="leading", description="leading: the surviving run keeps the first run's payload; trailing: the last's.")

    model_config = Model.model_config | {"json_schema_extra": {"x-kubernetes-validations": [
        # A delay duration() cannot convert is refused by its own rule: not compared here.
        {"rule": f"!{convertible('self.delay')} || !{convertible('self.maxDelay')} || "
                 "duration(self.delay) <= duration(self.maxDelay)",
         "message": "debounce.delay must not exceed debounce.maxDelay"},
    ]}}


class WaitingFor(Model):
    """What keeps a run from starting: the reason, and the limit's name (a Task, a key, a TaskQueue)."""

    reason: Literal["TaskLimit", "KeyLimit", "QueueLimit", "Throttled", "Debounced", "Delayed"]
    limit: str | None = Field(default=None, description="The limit that holds it: Task/NAME, Task/NAME/key/KEY, "
                                                        "TaskQueue/NAME.")


class Holder(Model):
    run: str
    uid: str
    key: str | None = None


class TaskQueueSpec(Model):
    limit: int = Field(ge=1, le=100_000, description="Runs of all the Tasks naming this queue holding a slot at once.")
    max_waiting: int | None = Field(
        default=None, ge=0, le=1_000_000,
        description="Runs allowed to wait for this queue; a run created beyond it is refused with a message that "
                    "names the queue (and, created while the operator could not say, fails QueueFull).")
    strict_order: bool = Field(default=False, description="Head-of-line order across the queue's Tasks.")


class TaskQueueStatus(Model):
    running: int = 0
    waiting: int = 0
    holders: list[Holder] = Field(default_factory=list, description="The runs holding its slots, by uid.")
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None


class TaskQueue(Model):
    api_version: str = "kubetasks.io/v1alpha1"
    kind: str = "TaskQueue"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: TaskQueueSpec
    status: TaskQueueStatus = Field(default_factory=TaskQueueStatus)


ConcurrencyKey = Annotated[str, Field(max_length=MAX_KEY_LENGTH)]
