"""Exceptions of the SDK, and how each one ends an attempt.

Anything not listed here that escapes a task fails the attempt as retryable (exit 1). Errors that a
retry cannot fix derive from :class:`PermanentError`, so the run fails at once (exit 78).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class Stopped(BaseException):
    """The pod was told to stop (SIGTERM): its run was cancelled or deleted, its maxDuration passed,
    or Kubernetes moved the pod. Raised in the task's main thread, once; a BaseException, as
    KeyboardInterrupt, so that ``except Exception`` in task code does not swallow it and the
    attempt ends within the pod's grace period (``finally`` blocks and on_cancel hooks run)."""


class PermanentError(Exception):
    """Base of errors that retrying cannot fix: the attempt exits with 78 and the run fails."""


class AbortTaskRun(PermanentError):
    """Raise to fail the run now, without further retries: ``raise AbortTaskRun("no such user")``."""


AbortTaskRunError = AbortTaskRun  # Trigger.dev's name for it


class InvalidPayload(PermanentError):
    """The payload does not match the task's payload model; the task function is never called."""


class InvalidEntrypoint(PermanentError):
    """KUBETASKS_ENTRYPOINT is unset, malformed, or names nothing callable."""


class InvalidResult(PermanentError, TypeError):
    """A task or step result is not JSON, so it could not be reported or checkpointed."""


class ResultTooLarge(PermanentError):
    """A task result does not fit in the termination message (protocol.RESULT_LIMIT bytes)."""


class CheckpointTooLarge(PermanentError):
    """A step's checkpoint does not fit in the run's checkpoint ConfigMap. Nothing was truncated:
    the step failed. Keep large data elsewhere (object storage, a database) and return a reference."""


class InvalidMetadata(PermanentError, ValueError):
    """A ctx.metadata operation the value cannot take: incrementing a string, appending to a
    number, a value that is not JSON."""


class MetadataTooLarge(InvalidMetadata):
    """The run's metadata would exceed 256 KiB of JSON: the operation was not applied."""


class StepOutputUnavailable(PermanentError):
    """A completed step's output, kept in the object store, cannot be read as it was written
    (missing, changed, or not granted to this attempt): the run fails rather than go on with a
    wrong value."""


class InvalidStepKey(PermanentError, ValueError):
    """A step key that cannot name a step: empty, not a string, or containing "/" (the separator
    of nested keys)."""


class DuplicateStepKey(InvalidStepKey):
    """The same step key was used twice in one scope: keys name steps, so they must be unique
    (use e.g. ``f"send-{user_id}"`` in loops)."""


class IdempotencyConflict(PermanentError):
    """``trigger(..., idempotency_key=...)`` found the key's run name taken by a run that is not the
    one this trigger would have made (another task or payload, or not made by ``trigger`` with this
    key: someone squatting the name). The other run is not returned: it is not yours to wait on."""

    def __init__(self, namespace: str, run: str, task: str, key: str, reason: str) -> None:
        self.namespace = namespace
        self.run = run
        self.task = task
        self.key = key
        self.reason = reason
        shown = key if len(key) <= 80 else key[:77] + "..."
        super().__init__(f"idempotency key {shown!r} of task {task!r}: its TaskRun {namespace}/{run} exists "
                         f"but {reason}")


class RunFailed(Exception):
    """A triggered run ended without succeeding (Failed, Cancelled, Skipped or TimedOut)."""

    def __init__(self, run: str, phase: str, error: dict[str, Any] | None = None) -> None:
        self.run = run
        self.phase = phase
        self.error = error or {}
        detail = ""
        if self.error.get("message"):
            kind = self.error.get("type")
            detail = f": {kind}: {self.error['message']}" if kind else f": {self.error['message']}"
        super().__init__(f"TaskRun {run} ended {phase}{detail}")


class ChildFailed(RunFailed):
    """A child run a task waited for (``ctx.step.trigger_and_wait``) ended without succeeding. Catch
    it to go on without that child's result; the parent never runs the child again itself. From
    ``batch_trigger_and_wait``, ``results`` holds every child's outcome in order: its result, or the
    ChildFailed of a child that failed."""

    def __init__(self, run: str, phase: str, error: dict[str, Any] | None = None,
                 results: list[Any] | None = None) -> None:
        super().__init__(run, phase, error)
        self.results = results


class TokenError(Exception):
    """A token a task waited for (``ctx.step.wait_for_token``) ended without a completion: its
    Waitpoint was deleted (NotFound), or its data was refused (Refused, over 64 KiB)."""

    def __init__(self, token: str, phase: str, message: str = "") -> None:
        super().__init__(f"token {token} {phase}" + (f": {message}" if message else ""))
        self.token = token
        self.phase = phase
        self.message = message


class TokenTimeout(TokenError):
    """The token was not completed before its timeout. Catch it to go on without it."""

    def __init__(self, token: str, message: str = "") -> None:
        super().__init__(token, "TimedOut", message)


class EventTimeout(Exception):
    """No event matched ``ctx.step.wait_for_event`` before its timeout. Catch it to go on without one."""

    def __init__(self, event: str, message: str = "") -> None:
        super().__init__(f"event {event} timed out" + (f": {message}" if message else ""))
        self.event = event
        self.message = message


class WaitRequested(BaseException):
    """Internal: a durable wait for child runs ends the attempt (a BaseException, as
    :class:`SleepRequested`); the entry point turns it into outcome "waiting"."""

    def __init__(self, key: str, runs: list[str]) -> None:
        super().__init__(f"step {key!r} waits for {len(runs)} child run(s)")
        self.key = key
        self.runs = runs


class SleepRequested(BaseException):
    """Internal: a durable sleep ends the attempt. A BaseException so that the ``except Exception``
    blocks of task code do not swallow it; the entry point turns it into outcome "sleeping"."""

    def __init__(self, key: str, wake_at: datetime) -> None:
        super().__init__(f"step {key!r} sleeps until {wake_at.isoformat()}")
        self.key = key
        self.wake_at = wake_at
