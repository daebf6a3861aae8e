"""The kubetasks SDK: what task code imports (``from kubetasks import task``).

Declare tasks with :func:`task`, make work durable with ``ctx.step.run`` and ``ctx.step.sleep``,
wait for child runs without a pod with ``ctx.step.trigger_and_wait``, report progress with
``ctx.metadata`` (status.metadata),
fail for good with :class:`AbortTaskRun`, wrap attempts in middleware and lifecycle hooks
(:mod:`kubetasks.runtime.lifecycle`), retry a block inside an attempt with ``ctx.retry``, start runs with ``my_task.trigger(...)``
and find them with :func:`list_runs`. Task pods run
``python -m kubetasks.runtime`` (see :mod:`kubetasks.runtime.entry`).
"""

from kubetasks.api.flow import Debounce
from kubetasks.runtime.any_of import Fired
from kubetasks.runtime.checkpoints import CheckpointStore, ConfigMapStore, MemoryStore, steps_from_configmap
from kubetasks.runtime.context import Context, Steps
from kubetasks.runtime.errors import (
    AbortTaskRun, AbortTaskRunError, CheckpointTooLarge, ChildFailed, DuplicateStepKey, EventTimeout, IdempotencyConflict, InvalidPayload, InvalidResult,
    InvalidMetadata, InvalidStepKey, MetadataTooLarge, PermanentError, ResultTooLarge, RunFailed, Stopped, TokenError,
    TokenTimeout,
)
from kubetasks.runtime.events import ReceivedEvent
from kubetasks.runtime.lifecycle import (
    CatchResult, Outcome, Wait, catch_error, middleware, on_cancel, on_complete, on_failure, on_resume, on_start_attempt,
    on_success, on_wait,
)
from kubetasks.runtime.retry import Backoff, Headers, Retry, backoff
from kubetasks.runtime.metadata import Metadata
from kubetasks.runtime.runs import list_runs
from kubetasks.runtime.task import TaskDefinition, get_task, registered_tasks, task
from kubetasks.runtime.tokens import Token
from kubetasks.runtime.trigger import RunHandle, batch_trigger, trigger, trigger_and_wait

__all__ = [
    "task", "TaskDefinition", "get_task", "registered_tasks",
    "Context", "Steps", "Fired", "Metadata",
    "trigger", "trigger_and_wait", "batch_trigger", "RunHandle", "list_runs", "Debounce",
    "middleware", "on_start_attempt", "catch_error", "on_success", "on_failure", "on_complete", "on_cancel", "on_wait", "on_resume",
    "Wait", "CatchResult",
    "Outcome", "Retry", "Backoff", "Headers", "backoff",
    "AbortTaskRun", "AbortTaskRunError", "PermanentError", "CheckpointTooLarge", "DuplicateStepKey", "IdempotencyConflict", "InvalidPayload",
    "InvalidResult", "InvalidStepKey", "ResultTooLarge", "RunFailed", "Stopped", "ChildFailed", "Token", "TokenError", "TokenTimeout",
    "EventTimeout", "ReceivedEvent", "InvalidMetadata", "MetadataTooLarge",
    "CheckpointStore", "ConfigMapStore", "MemoryStore", "steps_from_configmap",
]
