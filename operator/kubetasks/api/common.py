"""Types shared by Task and TaskRun."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict
from pydantic.alias_generators import to_camel

from kubetasks.api.durations import DURATION_CONVERTIBLE, DURATION_PATTERN, MAX_DURATION_LENGTH

GROUP = "kubetasks.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes quantities ("500m", "1", "0.5", "512Mi", "2G").
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
MAX_QUANTITY_LENGTH = 64
# DNS-1123 label: the shape of Task ids and of the names derived from them.
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# DNS-1123 subdomain: the shape of object names (Tasks, service accounts).
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_WORDS = "lowercase letters, digits and '-', starting and ending with a letter or digit"
SUBDOMAIN_WORDS = f"{LABEL_WORDS}, in parts separated by '.'"

# A pattern's failure message is the API server's own ("should match '^...'"): where the text
# matters, a CEL rule with a message in words says the same next to it.
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=MAX_DURATION_LENGTH,
                                examples=["30s", "5m", "1h30m"])]
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=MAX_QUANTITY_LENGTH)]
# JSON values of any shape (payloads, results, schemas): preserved as-is by the CRD.
JSON = Annotated[object, Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]

# kubectl apply copies the whole object into its last-applied-configuration annotation, and the
# API server refuses annotations over 256 KiB in all: a large payload is refused for that alone.
APPLY_ADVICE = ("A payload over about 256 KiB cannot be written with client-side `kubectl apply`, which copies "
                "the object into an annotation limited to 256 KiB: use `kubectl create`, "
                "`kubectl apply --server-side`, or `kubetasks run --payload-file`.")

# Caps on durations, checked at admission (CEL duration(), which also refuses what overflows Go's
# time.Duration, about 2562047h). Past them, a value is a typo, and arithmetic on it overflows.
MAX_RUN_DURATION = "8760h"  # maxDuration and TaskRun delay: one year
MAX_RETRY_DELAY = "168h"  # retry minDelay and maxDelay: one week


def matches(expr: str, regex: str) -> str:
    """CEL: the string ``expr`` matches ``regex`` (RE2), written as a raw string literal."""
    assert "'" not in regex
    return f"{expr}.matches(r'{regex}')"


def rules(*checks: tuple[str, str]) -> JsonDict:
    """A field's CEL rules, each with the message that says in words what is wrong."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in checks]}


def convertible(expr: str) -> str:
    """CEL: ``expr`` (a string) is a duration that duration() converts without overflowing."""
    return matches(expr, DURATION_CONVERTIBLE)


def at_most(cap: str, positive: bool = False) -> JsonDict:
    """The CEL rule of a Duration field: at most ``cap`` (and more than 0s when ``positive``).
    What duration() cannot convert (words, a sign, 99999999h) fails the rule, with its message."""
    rule = f"{convertible('self')} && duration(self) <= duration('{cap}')"
    bound = f"at most {cap}"
    if positive:
        rule = f"{rule} && duration(self) > duration('0s')"
        bound = f"more than 0s and at most {cap}"
    message = f"must be a duration {bound}: a number and a unit (ms, s, m, h), e.g. 30s, 5m or 1h30m"
    return {"x-kubernetes-validations": [{"rule": rule, "message": message}]}


def more_than_zero(what: str, example: str) -> JsonDict:
    """The CEL rule of a Quantity field: a quantity more than zero (a zero limit would mean no
    limit at all). isQuantity() first: quantity() of anything else fails with a regex of its own."""
    return {"x-kubernetes-validations": [{
        "rule": "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
        "message": f"{what} must be a quantity more than 0, e.g. {example} (requests and limits are set to it; "
                   "0 would leave the pod unbounded)",
    }]}


class Model(BaseModel):
    """Base of API models: camelCase on the wire, snake_case in Python, unknown fields ignored
    (the API server has already pruned what the schema does not know)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_api(self) -> dict[str, object]:
        """The wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Machine(Model):
    """Machine size of a task's pod: a named preset, or explicit CPU and memory (which win)."""

    preset: Literal["micro", "small-1x", "small-2x", "medium-1x", "medium-2x", "large-1x", "large-2x"] | None = Field(
        default=None, description="Named size: micro (0.25 vCPU, 0.25 GiB) up to large-2x (8 vCPU, 16 GiB)."
    )
    cpu: Quantity | None = Field(default=None, json_schema_extra=more_than_zero("cpu", "'500m' or '2'"),
                                 description="CPU request and limit, e.g. '500m' or '2'; more than 0.")
    memory: Quantity | None = Field(default=None, json_schema_extra=more_than_zero("memory", "'512Mi' or '2Gi'"),
                                    description="Memory request and limit, e.g. '512Mi' or '2Gi'; more than 0.")


RETRY_ON_DEFAULT: tuple[Literal["Error", "OOMKilled"], ...] = ("Error", "OOMKilled")


class RetryPolicy(Model):
    """How failed attempts are retried. Delays grow from minDelay to maxDelay."""

    max_attempts: int = Field(default=3, ge=1, le=20, description="Attempts in all, the first included.")
    backoff: Literal["exponential", "linear", "fixed"] = "exponential"
    factor: float = Field(default=2.0, ge=1.0, le=10.0, description="Growth per attempt (exponential and linear).")
    min_delay: Duration = Field(default="1s", json_schema_extra=at_most(MAX_RETRY_DELAY),
                                description=f"Delay before the second attempt; at most {MAX_RETRY_DELAY}.")
    max_delay: Duration = Field(default="10m", json_schema_extra=at_most(MAX_RETRY_DELAY),
                                description=f"Upper bound of any delay; at most {MAX_RETRY_DELAY}.")
    jitter: float = Field(default=0.0, ge=0.0, le=1.0, description="Random fraction added to or taken from each delay.")
    retry_on: list[Literal["Error", "OOMKilled"]] = Field(
        default_factory=lambda: list(RETRY_ON_DEFAULT),
        description="Failures that retry: Error (any non-zero exit) and OOMKilled. Timeouts never retry.",
    )
    permanent_exit_codes: list[Annotated[int, Field(ge=1, le=255)]] = Field(
        default_factory=lambda: [78],
        description="Exit codes that fail the run at once (the SDK's AbortTaskRun exits with 78).",
    )
    out_of_memory_machine: Machine | None = Field(
        default=None, description="Machine for attempts that follow an OOMKilled attempt."
    )

    # On the policy itself, so a TaskRun's retry override is checked as the Task's is.
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                # A delay duration() cannot convert is refused by its own rule: not compared here.
                {"rule": f"!has(self.minDelay) || !has(self.maxDelay) || !{convertible('self.minDelay')} || "
                         f"!{convertible('self.maxDelay')} || duration(self.minDelay) <= duration(self.maxDelay)",
                 "message": "retry.minDelay must not exceed retry.maxDelay"},
            ]
        }
    }


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    """A Kubernetes API condition (metav1.Condition)."""

    type: str
    status: ConditionStatus
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None
