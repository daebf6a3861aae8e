"""The contract between the operator and the in-pod runtime.

The operator passes a run's identity in environment variables and its payload as a file; the
runtime answers with its exit code and a JSON termination message (``/dev/termination-log``, at
most 4096 bytes), which the kubelet copies into the pod's status, where the operator reads it
(no extra API permissions needed). Completed steps are records in the run's checkpoint ConfigMap,
which both sides read: their wire format is here too, so the operator never imports the runtime.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kubetasks.api.taskrun import StepRecord
from kubetasks.api.times import api_time, format_time, parse_time

log = logging.getLogger("kubetasks.protocol")


def json_object(text: str | None) -> dict[str, Any] | None:
    """``text`` read as a JSON object; None when it is empty or anything else. Pods write what is
    read this way (termination messages, metadata documents): nothing in it is trusted."""
    if not text:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None

def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON: what a limit on data stored in an object counts."""
    return len(json.dumps(value, separators=(",", ":")).encode())


ENV_RUN = "KUBETASKS_RUN"
ENV_RUN_UID = "KUBETASKS_RUN_UID"
ENV_NAMESPACE = "KUBETASKS_NAMESPACE"
ENV_TASK = "KUBETASKS_TASK"
ENV_ATTEMPT = "KUBETASKS_ATTEMPT"
ENV_ENTRYPOINT = "KUBETASKS_ENTRYPOINT"
ENV_PAYLOAD_FILE = "KUBETASKS_PAYLOAD_FILE"
# The payload as JSON text in the environment: read by the runtime for local runs and Jobs of
# operators before KUBETASKS_PAYLOAD_FILE, never rendered (exec fails past ~128 KiB per variable,
# and anyone who may read Jobs would read it).
ENV_PAYLOAD = "KUBETASKS_PAYLOAD"
ENV_CHECKPOINTS = "KUBETASKS_CHECKPOINTS"
# Attempts that may follow a failure of this one (core.plan.retries_left): 0 = the last attempt.
ENV_RETRIES_LEFT = "KUBETASKS_RETRIES_LEFT"
ENV_REPLAY_OF = "KUBETASKS_REPLAY_OF"  # a replay's original run (spec.replayOf.name): ctx.is_replay
# The operator instance the run belongs to (naming.LABEL_INSTANCE): the runs a task triggers carry it too.
ENV_INSTANCE = "KUBETASKS_INSTANCE_ID"

# The payload travels in the run's immutable payload ConfigMap (naming.payload_name) under
# PAYLOAD_KEY, mounted read-only at PAYLOAD_FILE, when its JSON text fits PAYLOAD_FILE_LIMIT (runs
# started before it had a ConfigMap of its own kept it in the checkpoints' ConfigMap). A larger payload has no file: the runtime
# then reads it from the TaskRun (which the API server caps at about 1.5 MiB).
PAYLOAD_KEY = "payload.json"
PAYLOAD_DIR = "/var/run/kubetasks"
PAYLOAD_FILE = f"{PAYLOAD_DIR}/{PAYLOAD_KEY}"
PAYLOAD_FILE_LIMIT = 256 * 1024

EXIT_SUCCESS = 0
EXIT_RETRYABLE = 1
EXIT_PERMANENT = 78  # sysexits EX_CONFIG; RetryPolicy.permanentExitCodes defaults to it

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096  # the kubelet keeps at most this much of it
RESULT_LIMIT = 3072  # what is left of the termination message for a result, after the envelope
# A larger result travels by reference (api.storage.BlobRef, "resultRef" in the Report): its JSON
# text is kept in the run's checkpoint ConfigMap under result_key(attempt) up to
# RESULT_CONFIGMAP_LIMIT, or PUT to the operator's object store through the attempt's grant (a
# presigned URL in a Secret mounted at GRANT_DIR) above the grant's threshold.
RESULT_KEY_PREFIX = "result.attempt-"
RESULT_CONFIGMAP_LIMIT = 256 * 1024
CONFIGMAP_DATA_LIMIT = 1024 * 1024  # what the API server lets one ConfigMap's data hold
GRANT_DIR = "/var/run/kubetasks-grant"
GRANT_PUT_URL = "result-put-url"  # the presigned PUT of this attempt's result blob
GRANT_URI = "result-uri"  # the uri the operator expects in the ref: where that blob is
GRANT_THRESHOLD = "threshold"  # bytes above which a result goes to the store, not the ConfigMap
GRANT_EXPIRES = "expires"  # when the URL stops working (ISO 8601)
# A payload kept in the store (TaskRun spec.payloadRef): a presigned GET of it, and what it must be.
GRANT_PAYLOAD_URL = "payload-get-url"
GRANT_PAYLOAD_URI = "payload-uri"
GRANT_PAYLOAD_SHA256 = "payload-sha256"
GRANT_PAYLOAD_SIZE = "payload-size"
# Signed completion URLs of the run's tokens (core.token_urls), when the operator serves them:
GRANT_TOKEN_URL_KEY = "token-url-key"  # the run key (hex) the pod signs its tokens' URLs with
GRANT_TOKEN_URL_BASE = "token-url-base"  # where the operator serves them, as the outside reaches it


# ctx.metadata (core.metadata): the pod's document in its checkpoint ConfigMap under METADATA_KEY,
# flushed at most once a second and when the attempt ends; each flush sets METADATA_LABEL on the
# ConfigMap to a digest of the document, so the operator watches (metadata only) just the
# ConfigMaps of runs that use it, and reads one when its digest changes.
METADATA_KEY = "metadata.json"
METADATA_LABEL = "kubetasks.io/metadata"
METADATA_FLUSH_SECONDS = 1.0


def metadata_digest(text: str) -> str:
    """METADATA_LABEL's value for a document: a valid label value that changes with it."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def result_key(attempt: int) -> str:
    """The key of an attempt's result in the run's checkpoint ConfigMap."""
    return f"{RESULT_KEY_PREFIX}{attempt}"

# The task container's command when it runs the runtime: only then is its termination message a
# Report. Any other command's is its result (core.results), whatever it looks like.
RUNTIME_COMMAND = ["python", "-m", "kubetasks.runtime"]


def canonical(value: Any) -> Any:
    """JSON data as the API server gives it back: a float with an integral value is an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def encode_payload(payload: Any) -> str:
    """The payload's JSON text as its file holds it: compact, and UTF-8 rather than ASCII escapes,
    so that its size is close to what the user sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Report:
    """What an attempt reports when it ends."""

    outcome: str  # "succeeded" | "failed" | "sleeping" | "waiting" (for the runs its checkpoint names)
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    wake_at: datetime | None = None
    # A result kept elsewhere: {"uri", "size", "sha256"} (api.storage.BlobRef) as the task reported
    # it. The operator checks it names this attempt's own place and reads it before believing it.
    result_ref: dict[str, Any] | None = None
    # What the task's catch_error hook decided for a failed attempt (runtime.lifecycle): fail the
    # run now, or retry at a time of its choosing; the operator still bounds both (core.plan).
    skip_retrying: bool = False
    retry_at: datetime | None = None

    def encode(self) -> str:
        body: dict[str, Any] = {"kubetasks": 1, "outcome": self.outcome}
        if self.outcome == "succeeded":
            if self.result_ref is not None:
                body["resultRef"] = self.result_ref
            else:
                body["result"] = self.result
        if self.error_message is not None:
            body["error"] = {"type": self.error_type, "message": self.error_message}
            if self.traceback:
                body["error"]["traceback"] = self.traceback
        if self.wake_at is not None:
            body["wakeAt"] = self.wake_at.isoformat()
        if self.outcome == "failed" and (self.skip_retrying or self.retry_at is not None):
            body["retry"] = {"skip": True} if self.skip_retrying else {"at": self.retry_at.isoformat()}  # type: ignore[union-attr]
        text = json.dumps(body, separators=(",", ":"), default=str)
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT and "traceback" in body.get("error", {}):
            # The traceback is the one part that may be cut: keep its end, where the error is.
            tb = body["error"]["traceback"]
            room = TERMINATION_MESSAGE_LIMIT - (len(text.encode()) - len(tb.encode())) - 8
            body["error"]["traceback"] = "..." + tb[-max(room, 0):]
            text = json.dumps(body, separators=(",", ":"), default=str)
        return text

    @classmethod
    def decode(cls, text: str | None) -> Report | None:
        """Parses a termination message; None when it is not one of ours (plain commands). The task
        writes it, so nothing in it is trusted: a field of the wrong type or an unknown outcome
        reads as a failure with what could be understood, never as an error of the operator."""
        body = json_object(text)
        if body is None or body.get("kubetasks") != 1:
            return None
        error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
        outcome, wake_at = body.get("outcome"), api_time(body.get("wakeAt"))
        if outcome == "sleeping" and wake_at is None:
            return cls(outcome="failed", error_type=INVALID_REPORT,
                       error_message="the task reported a durable sleep without a valid wakeAt")
        ref = body.get("resultRef")
        if ref is not None and not isinstance(ref, dict):
            return cls(outcome="failed", error_type=INVALID_REPORT,
                       error_message="the task reported a resultRef that is not an object")
        return cls(
            outcome=outcome if outcome in OUTCOMES else "failed",
            result=body.get("result"),
            error_type=_text(error.get("type"), 256),
            error_message=_text(error.get("message"), TERMINATION_MESSAGE_LIMIT),
            traceback=_text(error.get("traceback"), TERMINATION_MESSAGE_LIMIT),
            wake_at=wake_at,
            result_ref=ref if outcome == "succeeded" else None,
            **_retry_decision(body.get("retry") if outcome == "failed" else None),
        )


OUTCOMES = ("succeeded", "failed", "sleeping", "waiting")
INVALID_REPORT = "InvalidReport"  # a report the runtime would never write (a forged one, say)


def _retry_decision(value: Any) -> dict[str, Any]:
    """A failed attempt's ``retry`` as the task wrote it: ``{"skip": true}`` or ``{"at": time}``;
    anything else (a wrong type, an unreadable time) is no decision, so the Task's policy applies."""
    if not isinstance(value, dict):
        return {}
    if value.get("skip") is True:
        return {"skip_retrying": True}
    at = api_time(value.get("at"))
    return {"retry_at": at} if at is not None else {}


def _text(value: Any, limit: int) -> str | None:
    return None if value is None else str(value)[:limit]


# -- step checkpoints -----------------------------------------------------------------------------
#
# One ConfigMap key per completed step, written with a JSON merge patch when the step finishes:
#
#     step.<sanitised key>: {"key": "parent/child", "result": ..., "attempt": 2,
#                            "durationSeconds": 0.41, "completedAt": "2025-01-01T00:00:00.000Z"}
#
# Durable sleeps are records too, with ``"kind": "sleep"``, ``"wakeAt"`` and ``"startedAt"``;
# ``completedAt`` stays null until a later attempt finds the wake time passed. Durable waits for
# child runs are ``"kind": "wait"`` with ``"waitingOn"`` (the children's names, written before they
# are triggered): the operator starts the next attempt once they have all finished, and that
# attempt completes the record with their outcomes as its result. A ConfigMap holds
# at most 1 MiB: one record may take RECORD_LIMIT and all data (the payload included) TOTAL_LIMIT.

KEY_PREFIX = "step."
SCOPE_SEPARATOR = "/"
# A token's outcome (ctx.step.wait_for_token), written by the operator as a record of this key
# once the token is completed or timed out: the pod may not read Waitpoints. The wait's own
# record stays the pod's, completed by the attempt that reads the outcome, as a child wait's is.
# Not a step: never shown in status. Also how a wait names a token ("waitpoint:<name>"); run
# names have no ':'.
TOKEN = "waitpoint:"
# An event wait (ctx.step.wait_for_event): its entry in a wait is "taskevent:<event>:<hash of the
# step key>", and the operator writes the event it chose (or the timeout) as a record of the key
# EVENT + step key, as a token's outcome. Not a step either.
EVENT = "taskevent:"
CONFIGMAP_KEY_LIMIT = 253
RECORD_LIMIT = 256 * 1024
TOTAL_LIMIT = 900 * 1024
STATUS_STEPS_LIMIT = 200  # TaskRunStatus.steps holds at most this many
_UNSAFE = re.compile(r"[^-._a-zA-Z0-9]")
_DIGEST = 10


def configmap_key(scoped_key: str) -> str:
    """The ConfigMap key of a step: readable, valid ([-._a-zA-Z0-9]+, at most 253 characters) and
    unique. Keys that had to be changed (nesting, other characters, length) get a short sha256 of
    the full key, so that ``a/b`` and ``a.b`` never share a record."""
    readable = _UNSAFE.sub("_", scoped_key.replace(SCOPE_SEPARATOR, "."))
    if readable == scoped_key and len(KEY_PREFIX) + len(readable) <= CONFIGMAP_KEY_LIMIT:
        return KEY_PREFIX + readable
    digest = hashlib.sha256(scoped_key.encode()).hexdigest()[:_DIGEST]
    room = CONFIGMAP_KEY_LIMIT - len(KEY_PREFIX) - _DIGEST - 1
    return f"{KEY_PREFIX}{readable[:room]}-{digest}"


@dataclass(frozen=True)
class Checkpoint:
    """One step's record. ``result`` is plain JSON data (the runtime converts results first)."""

    key: str
    result: Any = None
    attempt: int = 0
    duration_seconds: float | None = None
    completed_at: datetime | None = None
    kind: str = "run"  # "run" | "sleep"
    wake_at: datetime | None = None
    started_at: datetime | None = None
    # A result kept in the object store (core.step_grants): {"uri", "size", "sha256"}, written as
    # "resultRef" instead of "result"; read back only through the attempt's grant, verified.
    result_ref: dict[str, Any] | None = None
    waiting_on: tuple[str, ...] | None = None  # a wait's child runs, by name, and tokens (TOKEN + name)
    any_of: bool = False  # a wait that ends when the first of waiting_on ends, or at timeout_at (wait_any)
    timeout_at: datetime | None = None

    @property
    def completed(self) -> bool:
        return self.completed_at is not None

    def encode(self) -> str:
        body: dict[str, Any] = {
            "key": self.key,
            **({"resultRef": self.result_ref} if self.result_ref is not None else {"result": self.result}),
            "attempt": self.attempt,
            "durationSeconds": None if self.duration_seconds is None else round(self.duration_seconds, 3),
            "completedAt": format_time(self.completed_at) if self.completed_at else None,
        }
        if self.kind != "run":
            body["kind"] = self.kind
        if self.wake_at is not None:
            body["wakeAt"] = format_time(self.wake_at)
        if self.started_at is not None:
            body["startedAt"] = format_time(self.started_at)
        if self.waiting_on is not None:
            body["waitingOn"] = list(self.waiting_on)
        if self.any_of:
            body["anyOf"] = True
        if self.timeout_at is not None:
            body["timeoutAt"] = format_time(self.timeout_at)
        return json.dumps(body, separators=(",", ":"), allow_nan=False)

    @classmethod
    def decode(cls, text: str) -> Checkpoint | None:
        """The record in a ConfigMap value; None when the value is not one (it is then ignored)."""
        try:
            body = json.loads(text)
            if not isinstance(body, dict) or not isinstance(body.get("key"), str):
                return None
            duration = body.get("durationSeconds")
            return cls(
                key=body["key"],
                result=body.get("result"),
                attempt=int(body.get("attempt") or 0),
                duration_seconds=float(duration) if duration is not None else None,
                completed_at=parse_time(body.get("completedAt")),
                kind=str(body.get("kind") or "run"),
                wake_at=parse_time(body.get("wakeAt")),
                started_at=parse_time(body.get("startedAt")),
                result_ref=body["resultRef"] if isinstance(body.get("resultRef"), dict) else None,
                waiting_on=_names(body.get("waitingOn")),
                any_of=body.get("anyOf") is True,
                timeout_at=parse_time(body.get("timeoutAt")),
            )
        except (ValueError, TypeError):
            return None


WAIT_LIMIT = 1000  # child runs one wait may name


def _names(value: Any) -> tuple[str, ...] | None:
    """A wait's run names as the pod wrote them: the names that could be runs', at most WAIT_LIMIT."""
    if not isinstance(value, list):
        return None
    return tuple(v for v in value if isinstance(v, str) and 0 < len(v) <= 253)[:WAIT_LIMIT]


def parse_checkpoints(data: Mapping[str, str] | None) -> dict[str, Checkpoint]:
    """Scoped step key -> record, from ConfigMap data. Keys not starting with ``step.`` (the
    payload) and values that are not records are skipped: a lost record only means the step runs
    again."""
    records: dict[str, Checkpoint] = {}
    for cm_key, text in (data or {}).items():
        if not cm_key.startswith(KEY_PREFIX):
            continue
        record = Checkpoint.decode(text) if isinstance(text, str) else None
        if record is None:
            log.warning("ignoring unreadable checkpoint %s", cm_key)
            continue
        records[record.key] = record
    return records


def steps_from_configmap(data: Mapping[str, str] | None, limit: int = STATUS_STEPS_LIMIT) -> list[StepRecord]:
    """The steps to show in TaskRun status, oldest first; pending sleeps and waits last, with their
    wake time or the runs they wait for (which also tell the operator an attempt slept or waits
    when its pod is gone). When there are
    more than ``limit`` (the status holds 200), the most recent are kept."""
    records = [r for r in parse_checkpoints(data).values() if not r.key.startswith((TOKEN, EVENT))]
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    ordered = sorted(records, key=lambda r: (r.completed_at is None, r.completed_at or epoch, r.key))
    return [
        StepRecord(name=r.key, attempt=r.attempt, duration_seconds=r.duration_seconds, completed_at=r.completed_at,
                   wake_at=None if r.completed else r.wake_at,
                   waiting_on=list(r.waiting_on) if r.waiting_on is not None and not r.completed else None,
                   any_of=r.any_of and not r.completed or None,
                   timeout_at=None if r.completed else r.timeout_at)
        for r in ordered[-limit:] if limit > 0
    ]
