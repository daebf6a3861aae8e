"""The ``@task`` decorator: a function plus the settings of its Task, kept in a registry by id.

The decorated object still calls the function (handy in tests), triggers runs of it
(``send_email.trigger({...})``) and renders its Task manifest, so the settings written next to the
code are the ones deployed.
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypedDict, TypeVar, Unpack

from pydantic import BaseModel

from kubetasks.api.common import API_VERSION, DNS1123_LABEL, Machine, RetryPolicy
from kubetasks.api.machines import machine_of
from kubetasks.api.task import TaskSpec
from kubetasks.runtime.trigger import RunHandle, batch_trigger, trigger, trigger_and_wait
from kubetasks.runtime.durations import DurationLike, duration_string
from kubetasks.runtime.encoding import model_type
from kubetasks.runtime.lifecycle import (
    HOOK_KINDS, CancelHook, CatchHook, CompleteHook, FailureHook, Hooks, Middleware, StartHook, SuccessHook, WaitHook,
)

P = ParamSpec("P")
R = TypeVar("R")

_registry: dict[str, TaskDefinition[Any, Any]] = {}
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def default_task_id(fn: Callable[..., Any]) -> str:
    """``send_email`` -> ``send-email``: Task ids are DNS-1123 labels."""
    return re.sub(r"[^a-z0-9-]+", "-", fn.__name__.lower()).strip("-")


def payload_model_of(fn: Callable[..., Any], explicit: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The model payloads are validated with: ``@task(payload=...)``, else the pydantic model that
    annotates the function's first parameter."""
    if explicit is not None:
        return explicit
    params = _positional(fn)
    if not params or params[0].name in ("ctx", "context"):
        return None
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    return model_type(hints.get(params[0].name))


def call_arguments(fn: Callable[..., Any], payload: Any, ctx: Any) -> tuple[Any, ...]:
    """Arguments for ``fn`` by its signature: ``fn()``, ``fn(payload)``, ``fn(ctx)`` (a single
    parameter named ctx or context) or ``fn(payload, ctx)``."""
    params = _positional(fn)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params) or len(params) >= 2:
        return (payload, ctx)
    if len(params) == 1:
        return (ctx,) if params[0].name in ("ctx", "context") else (payload,)
    return ()


def _positional(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
             inspect.Parameter.VAR_POSITIONAL)
    return [p for p in inspect.signature(fn).parameters.values() if p.kind in kinds]


def _retry_policy(retry: RetryPolicy | dict[str, Any] | int | None) -> RetryPolicy | None:
    if retry is None or isinstance(retry, RetryPolicy):
        return retry
    if isinstance(retry, int) and not isinstance(retry, bool):
        return RetryPolicy(max_attempts=retry)
    return RetryPolicy.model_validate(retry)


class TaskOptions(TypedDict, total=False):
    """What ``@task(...)`` takes, stated once for the decorator and TaskDefinition."""

    id: str | None
    retry: RetryPolicy | dict[str, Any] | int | None
    machine: Machine | dict[str, Any] | str | None
    max_duration: DurationLike | None
    stop_grace_period: DurationLike | None
    payload: type[BaseModel] | None
    middleware: Middleware | list[Middleware] | None
    on_start_attempt: StartHook | list[StartHook] | None
    catch_error: CatchHook | list[CatchHook] | None
    on_success: SuccessHook | list[SuccessHook] | None
    on_failure: FailureHook | list[FailureHook] | None
    on_complete: CompleteHook | list[CompleteHook] | None
    on_cancel: CancelHook | list[CancelHook] | None
    on_wait: WaitHook | list[WaitHook] | None
    on_resume: WaitHook | list[WaitHook] | None


class TaskDefinition(Generic[P, R]):
    """A task function with its id and Task settings. Calling it calls the function."""

    def __init__(self, fn: Callable[P, R], **options: Unpack[TaskOptions]) -> None:
        unknown = sorted(set(options) - set(TaskOptions.__annotations__))
        if unknown:  # a typo is no silent default (mypy says so before this runs)
            raise TypeError(f"@task got unexpected keyword argument(s): {', '.join(unknown)}")
        functools.update_wrapper(self, fn)  # first: it copies fn.__dict__ over ours
        self.fn = fn
        self.id = options.get("id") or default_task_id(fn)
        if not re.fullmatch(DNS1123_LABEL, self.id) or len(self.id) > 63:
            raise ValueError(f"task id {self.id!r} is not a DNS-1123 label (a-z, 0-9 and '-', at most 63 characters)")
        self.retry = _retry_policy(options.get("retry"))
        self.machine = machine_of(options.get("machine"))
        max_duration = options.get("max_duration")
        self.max_duration = duration_string(max_duration) if max_duration is not None else None
        grace = options.get("stop_grace_period")  # the time on_cancel hooks have (Task.spec.stopGracePeriod)
        self.stop_grace_period = duration_string(grace) if grace is not None else None
        self.payload_model = payload_model_of(fn, options.get("payload"))
        # In-pod hooks (runtime.lifecycle), not the Task's spec.onSuccess (which runs another Task)
        self.hooks = Hooks.of(**{kind: options.get(kind) for kind in HOOK_KINDS})

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<task {self.id!r} {self.fn.__module__}.{self.fn.__qualname__}>"

    @property
    def result_model(self) -> type[BaseModel] | None:
        """The pydantic model of the function's return annotation, if any: results are validated
        into it by ``trigger_and_wait``."""
        try:
            return model_type(typing.get_type_hints(self.fn).get("return"))
        except Exception:
            return None

    @property
    def entrypoint(self) -> str:
        """``module:function`` for the Task's ``entrypoint``."""
        module, name = self.fn.__module__, self.fn.__name__
        if module == "__main__" or not _ENTRYPOINT.fullmatch(f"{module}:{name}"):
            raise ValueError(f"task {self.id!r}: cannot derive an entry point from {module}.{name}; pass entrypoint=")
        return f"{module}:{name}"

    # -- triggering (kubetasks.runtime.trigger, which knows a task by its shape: no import back) ---
    # The methods share the names of the module's functions they call (globals, not the methods).

    def trigger(self, payload: Any = None, **options: Any) -> RunHandle:
        """Starts a run; returns its RunHandle. Options as :func:`kubetasks.runtime.trigger`
        (``delay``, ``idempotency_key``, ``concurrency_key``, ``priority``, ``debounce``...)."""
        return trigger(self, payload, **options)

    def trigger_and_wait(self, payload: Any = None, *, timeout: float | None = None, **options: Any) -> R:
        """Starts a run and returns its result (validated into the return model, if any)."""
        return typing.cast(R, trigger_and_wait(self, payload, timeout=timeout, **options))

    def batch_trigger(self, payloads: Iterable[Any], **options: Any) -> list[RunHandle]:
        """Starts one run per payload; returns their RunHandles."""
        return batch_trigger(self, payloads, **options)

    # -- deployment -----------------------------------------------------------------------------

    def to_task_manifest(self, image: str, entrypoint: str | None = None, *, namespace: str | None = None,
                         **spec: Any) -> dict[str, Any]:
        """The Task manifest of this task (``yaml.safe_dump`` it, or apply it). ``spec`` sets other
        TaskSpec fields by their Python names (``env``, ``schedule``, ``concurrency``...). The
        payload model becomes the Task's payloadSchema, so the operator rejects bad payloads
        before a pod starts."""
        fields: dict[str, Any] = {"image": image, "entrypoint": entrypoint or self.entrypoint}
        if self.retry is not None:
            fields["retry"] = self.retry
        if self.machine is not None:
            fields["machine"] = self.machine
        if self.max_duration is not None:
            fields["max_duration"] = self.max_duration
        if self.stop_grace_period is not None:
            fields["stop_grace_period"] = self.stop_grace_period
        if self.payload_model is not None:
            fields["payload_schema"] = self.payload_model.model_json_schema()
        task_spec = TaskSpec.model_validate({**fields, **spec})
        metadata: dict[str, Any] = {"name": self.id}
        if namespace:
            metadata["namespace"] = namespace
        return {"apiVersion": API_VERSION, "kind": "Task", "metadata": metadata,
                "spec": task_spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)}


def register(definition: TaskDefinition[Any, Any]) -> None:
    """Adds a task to the registry; an id may name one function only."""
    existing = _registry.get(definition.id)
    if existing is not None and _origin(existing) != _origin(definition):
        raise ValueError(f"task id {definition.id!r} is already used by {'.'.join(_origin(existing))}")
    _registry[definition.id] = definition


def _origin(definition: TaskDefinition[Any, Any]) -> tuple[str, str]:
    return definition.fn.__module__, definition.fn.__qualname__


def get_task(task_id: str) -> TaskDefinition[Any, Any]:
    """The registered task with this id (its module must have been imported)."""
    try:
        return _registry[task_id]
    except KeyError:
        raise KeyError(f"no task with id {task_id!r} is registered (is its module imported?)") from None


def registered_tasks() -> dict[str, TaskDefinition[Any, Any]]:
    return dict(_registry)


@typing.overload
def task(fn: Callable[P, R], /) -> TaskDefinition[P, R]: ...


@typing.overload
def task(**options: Unpack[TaskOptions]) -> Callable[[Callable[P, R]], TaskDefinition[P, R]]: ...


def task(fn: Callable[..., Any] | None = None, /, **options: Unpack[TaskOptions]) -> Any:
    """Declares a task: ``@task`` or ``@task(id="send-email", retry=5, machine="small-2x",
    max_duration="10m", payload=Email)``. The function takes ``(payload, ctx)`` (or fewer) and may
    be async; ``id`` defaults to the function name with dashes. ``middleware``, ``on_start_attempt``,
    ``catch_error``, ``on_success``, ``on_failure``, ``on_complete``, ``on_cancel``, ``on_wait`` and
    ``on_resume`` take a function or a list of them: in-pod hooks around each attempt
    (runtime.lifecycle)."""

    def decorate(f: Callable[P, R]) -> TaskDefinition[P, R]:
        definition = TaskDefinition(f, **options)
        register(definition)
        return definition

    return decorate(fn) if fn is not None else decorate
