"""Middleware and lifecycle hooks: in-process functions around a task's attempt (Trigger.dev's
order and error rules), per task (``@task(on_success=...)``) and global (``kubetasks.runtime.on_success(fn)``,
once per process, for every task).

Not the Task's ``spec.onSuccess``/``onFailure``/``onComplete``: those make the operator trigger
*another Task* when the run ends. These run inside the task's own pod, in this order:

1. ``middleware(payload, ctx, next)``, global ones then the task's, each wrapping the rest and all
   of 2-5: call ``next()`` (``await next()`` in an ``async def`` one; it returns the task's output
   or raises its error) and return what it returns; may set ``ctx.locals``. A throw before
   ``next()`` fails the attempt; once ``next()`` has returned or raised, the outcome is decided
   (and the ending hooks have run): a throw after it is logged, never the outcome.
2. ``on_start_attempt(payload, ctx)``: a throw fails the attempt.
3. the task function.
4. on a failure, ``catch_error(payload, error, ctx)``, global ones then the task's, until one
   returns a :class:`CatchResult` (or a dict of its fields, or a replacement exception). None: the
   Task's retry policy decides. Not called for :class:`AbortTaskRun`, which never retries.
5. when the *run* ends in this attempt: ``on_success(payload, output, ctx)`` or, after the last
   attempt only, ``on_failure(payload, error, ctx)``; then ``on_complete(payload, outcome, ctx)``.
   Their errors are logged as warnings and never change the outcome.

6. when the pod is told to stop (SIGTERM) because the run was cancelled (``spec.cancel``, a
   cancelled parent, an overlap that cancels the running run) or deleted:
   ``on_cancel(payload, ctx)``, within the pod's grace period: the Task's ``stopGracePeriod``,
   else 5 s (which frees a cancelled attempt's resources soon). The task is
   interrupted by :class:`~kubetasks.runtime.errors.Stopped` (a BaseException, as
   KeyboardInterrupt: ``except Exception`` does not catch it, ``finally`` blocks run); no
   catch_error, no on_success/on_failure/on_complete then. Errors are logged. The run has ended:
   the operator has taken the pod's access, so checkpoints and metadata are no longer written
   (the hook's own clients and credentials reach what it must release). As Trigger.dev's
   onCancel, it is not called for a run cancelled while no pod runs it (queued, sleeping), nor when
   the pod stops for another reason (maxDuration, an eviction): the task is interrupted all the same.

A durable sleep or wait ends the pod without ending the attempt's work: no catch_error, no
on_success/on_failure/on_complete then, but ``on_wait(payload, wait, ctx)`` as the pod ends for it
(after the task's ``finally`` blocks and the middleware have unwound), and
``on_resume(payload, wait, ctx)`` in the pod that goes on, when that step returns (its
:class:`Wait`: what it waited for). Their errors are logged. The pod that resumes runs middleware and on_start_attempt
again (they run once per pod, i.e. once per attempt as the operator counts them: a resume is a new
attempt number), so middleware is where per-process resources (clients, connections) belong.

Any of them may be ``async def``: an attempt's async code all runs on one event loop, its sync
code in the main thread (runtime.bridge).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from kubetasks.runtime import bridge
from kubetasks.runtime.durations import DurationLike, seconds_of

log = logging.getLogger("kubetasks.runtime.lifecycle")

Next = Callable[[], Any]
Middleware = Callable[[Any, Any, Next], Any]
StartHook = Callable[[Any, Any], Any]
CatchHook = Callable[[Any, BaseException, Any], Any]
SuccessHook = Callable[[Any, Any, Any], Any]
FailureHook = Callable[[Any, BaseException, Any], Any]
CompleteHook = Callable[[Any, "Outcome", Any], Any]
CancelHook = Callable[[Any, Any], Any]
WaitHook = Callable[[Any, "Wait", Any], Any]


@dataclass(frozen=True)
class CatchResult:
    """What a ``catch_error`` hook decides for a failed attempt. ``error`` replaces the one
    reported; ``skip_retrying`` fails the run now; ``retry_at`` or ``retry_delay`` sets when the
    next attempt starts (the operator still counts it against maxAttempts, and bounds the time to
    a day after the failure)."""

    skip_retrying: bool = False
    retry_at: datetime | None = None
    retry_delay: DurationLike | None = None
    error: BaseException | None = None

    def when(self, now: datetime) -> datetime | None:
        """The next attempt's time it asks for, if any."""
        if self.retry_at is not None:
            at = self.retry_at
            return at if at.tzinfo else at.replace(tzinfo=timezone.utc)
        if self.retry_delay is not None:
            return now + timedelta(seconds=seconds_of(self.retry_delay))
        return None


@dataclass(frozen=True)
class Outcome:
    """What ``on_complete`` hooks receive: the run's result, or the error that ended it."""

    ok: bool
    output: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class Wait:
    """A durable sleep or wait, as on_wait and on_resume hooks receive it."""

    kind: str  # "sleep", or "wait": for child runs, tokens or events (or the first of them)
    key: str  # its step's key
    until: datetime | None = None  # when a sleep ends, or a wait times out
    on: tuple[str, ...] = ()  # what a wait waits for: child runs by name, tokens, events


@dataclass
class Hooks:
    """One set of hooks: a task's own, or the process's global ones."""

    middleware: list[Middleware] = field(default_factory=list)
    on_start_attempt: list[StartHook] = field(default_factory=list)
    catch_error: list[CatchHook] = field(default_factory=list)
    on_success: list[SuccessHook] = field(default_factory=list)
    on_failure: list[FailureHook] = field(default_factory=list)
    on_complete: list[CompleteHook] = field(default_factory=list)
    on_cancel: list[CancelHook] = field(default_factory=list)
    on_wait: list[WaitHook] = field(default_factory=list)
    on_resume: list[WaitHook] = field(default_factory=list)

    @classmethod
    def of(cls, **given: Any) -> Hooks:
        """From ``@task`` arguments: each a function, a list of them, or None."""
        return cls(**{name: _listed(value) for name, value in given.items()})

    def then(self, other: Hooks) -> Hooks:
        """These hooks, then ``other``'s, for every kind."""
        return Hooks(**{name: [*getattr(self, name), *getattr(other, name)] for name in HOOK_KINDS})


HOOK_KINDS = ("middleware", "on_start_attempt", "catch_error", "on_success", "on_failure", "on_complete", "on_cancel",
              "on_wait", "on_resume")
_global = Hooks()


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _registrar(kind: str) -> Callable[[Any], Any]:
    def register(fn: Any) -> Any:
        getattr(_global, kind).append(fn)
        return fn  # usable as a decorator
    register.__name__ = kind
    register.__doc__ = f"Adds a global ``{kind}`` hook, run for every task of this process; returns it."
    return register


middleware = _registrar("middleware")
on_start_attempt = _registrar("on_start_attempt")
catch_error = _registrar("catch_error")
on_success = _registrar("on_success")
on_failure = _registrar("on_failure")
on_complete = _registrar("on_complete")
on_cancel = _registrar("on_cancel")
on_wait = _registrar("on_wait")
on_resume = _registrar("on_resume")


def global_hooks() -> Hooks:
    return _global


def clear_global_hooks() -> None:
    """Forgets every global hook (for tests)."""
    for kind in HOOK_KINDS:
        getattr(_global, kind).clear()


def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Calls a hook or the task, sync or async: async ones all on the attempt's one event loop
    (runtime.bridge), so that what one makes (a client) serves the others."""
    value = fn(*args)
    if inspect.isawaitable(value):
        value = bridge.run(value)
    return value


def wrapped(middleware: list[Middleware], payload: Any, ctx: Any, body: Next) -> Next:
    """``body`` inside the middleware, the first listed outermost."""
    chain: Next = body
    for mw in reversed(middleware):
        chain = _around(mw, payload, ctx, chain)
    return chain


def _around(mw: Middleware, payload: Any, ctx: Any, inner: Next) -> Next:
    called = False

    def next_() -> Any:
        nonlocal called
        if called:  # no hook (nor the task) runs twice for one attempt
            raise RuntimeError(f"middleware {getattr(mw, '__name__', mw)!r} called next() twice")
        called = True
        if bridge.on_loop():  # an async middleware's `await next()`: the rest runs in the waiting thread
            handed = bridge.hand_back(inner)
            handed.__qualname__ = "next"  # type: ignore[attr-defined]  # "coroutine 'next' was never awaited"
            return handed
        return inner()

    return lambda: call(mw, payload, ctx, next_)


def decide(hooks: Hooks, payload: Any, error: BaseException, ctx: Any) -> CatchResult | None:
    """The first decision of the catch_error hooks. A hook that raises replaces the error with
    its own (Trigger.dev's rule: a throw in catchError is the attempt's error)."""
    for hook in hooks.catch_error:
        try:
            answer = call(hook, payload, error, ctx)
        except Exception as e:
            return CatchResult(error=e)
        decision = as_decision(answer)
        if decision is not None:
            return decision
    return None


def as_decision(answer: Any) -> CatchResult | None:
    """A catch_error hook's return value as a CatchResult (None: no decision)."""
    if answer is None or isinstance(answer, CatchResult):
        return answer
    if isinstance(answer, BaseException):
        return CatchResult(error=answer)
    if isinstance(answer, Mapping):
        known = {k: answer[k] for k in ("skip_retrying", "retry_at", "retry_delay", "error") if k in answer}
        if len(known) != len(answer):
            raise TypeError(f"catch_error returned unknown keys: {sorted(set(answer) - set(known))}")
        return CatchResult(**known)
    raise TypeError(f"catch_error must return None, a CatchResult, a dict or an exception, not {type(answer).__name__}")


def after(hooks: Hooks, payload: Any, ctx: Any, outcome: Outcome, last: bool) -> list[str]:
    """on_success, or on_failure when this was the last attempt; then on_complete when the run
    ended here. Errors are logged and returned (as lines), never raised."""
    if not outcome.ok and not last:
        return []
    problems: list[str] = []
    ending: list[tuple[str, Callable[..., Any], Any]] = (
        [("on_success", h, outcome.output) for h in hooks.on_success] if outcome.ok
        else [("on_failure", h, outcome.error) for h in hooks.on_failure])
    ending += [("on_complete", h, outcome) for h in hooks.on_complete]
    for kind, hook, arg in ending:
        problem = _tolerated(kind, hook, payload, arg, ctx)
        if problem:
            problems.append(problem)
    return problems


def cancelled(hooks: Hooks, payload: Any, ctx: Any) -> list[str]:
    """The on_cancel hooks, in order; errors are logged and returned (as lines), never raised."""
    return [p for hook in hooks.on_cancel if (p := _tolerated("on_cancel", hook, payload, ctx))]


def waited(hooks: Hooks, payload: Any, wait: Wait, ctx: Any, kind: str = "on_wait") -> list[str]:
    """The on_wait (or on_resume) hooks, in order; errors are logged and returned, never raised."""
    return [p for hook in getattr(hooks, kind) if (p := _tolerated(kind, hook, payload, wait, ctx))]


def _tolerated(kind: str, hook: Callable[..., Any], *args: Any) -> str | None:
    """Calls a hook whose errors cannot change the outcome; what it raised, as a logged line, or None."""
    try:
        call(hook, *args)
    except Exception as e:
        line = f"{kind} hook {getattr(hook, '__name__', hook)!r} raised {type(e).__name__}: {e} (the outcome stands)"
        log.warning("%s", line, exc_info=True)
        return line
    return None
