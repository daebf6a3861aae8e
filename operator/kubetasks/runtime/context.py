"""The context a task runs with, and its durable step API.

A step is a unit of work whose result is checkpointed the moment it finishes. When an attempt fails
and the run is retried, completed steps return their recorded results without running again, so
side effects (charging a card, sending a mail) happen once per run even across crashes.

Steps nest: a step that runs steps scopes their keys under its own (``"parent/child"``). The scope
is a context variable, so it follows both threads of sync code and tasks of async code.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import typing
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from kubetasks.runtime import bridge
from kubetasks.runtime.checkpoints import SCOPE_SEPARATOR, Checkpoint, Checkpoints, CheckpointStore, MemoryStore
from kubetasks.runtime.durations import DurationLike, seconds_of
from kubetasks.runtime.encoding import revive, round_trip
from kubetasks.runtime.errors import DuplicateStepKey, InvalidStepKey, SleepRequested
from kubetasks.runtime.metadata import Metadata, RunMetadata
from kubetasks.runtime.retry import Retry
from kubetasks.runtime.trigger import TaskRef
from kubetasks.runtime.any_of import Fired, wait_any
from kubetasks.runtime.tokens import Token, make_token, wait_for_token
from kubetasks.runtime.tracing import step_span
from kubetasks.runtime.events import ReceivedEvent, wait_for_event
from kubetasks.runtime.waits import all_results, first_result, wait_for_children

T = TypeVar("T")
Clock = Callable[[], datetime]

log = logging.getLogger("kubetasks.runtime")
_scope: ContextVar[tuple[str, ...]] = ContextVar("kubetasks_step_scope", default=())
_MISSING: Any = object()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def scoped_key(scope: tuple[str, ...], key: str) -> str:
    """The full key of step ``key`` run inside the steps of ``scope``; validates ``key``."""
    if not isinstance(key, str) or not key:
        raise InvalidStepKey(f"a step key must be a non-empty string, not {key!r}")
    if SCOPE_SEPARATOR in key:
        raise InvalidStepKey(f"step key {key!r}: {SCOPE_SEPARATOR!r} separates nested keys; use another character")
    return SCOPE_SEPARATOR.join((*scope, key))


def idempotency_key(run_uid: str, scoped: str) -> str:
    """A key for external services (payment APIs and the like) that is the same in every attempt
    of this run and different in every other run."""
    return f"{run_uid}:{scoped}"


def return_annotation(fn: Callable[..., Any]) -> Any:
    """The resolved return annotation of ``fn``, or None (lambdas, partials, builtins)."""
    try:
        return typing.get_type_hints(fn).get("return")
    except Exception:
        return None


class Resumed:
    """What ``sleep`` returns when the sleep is over: nothing, but awaitable, so both
    ``ctx.step.sleep(...)`` and ``await ctx.step.sleep(...)`` read naturally."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator

    def __repr__(self) -> str:
        return "Resumed()"


RESUMED = Resumed()


class Steps:
    """``ctx.step``: durable steps and sleeps of one attempt."""

    def __init__(self, checkpoints: Checkpoints, run_uid: str, attempt: int, clock: Clock = utcnow,
                 run: str = "", namespace: str = "") -> None:
        self._checkpoints = checkpoints
        self._run_uid = run_uid
        self._run = run or run_uid  # the TaskRun's name (its tokens are named from it)
        self._namespace = namespace
        self._attempt = attempt
        self._clock = clock
        self._used: set[str] = set()

    # -- where we are ---------------------------------------------------------------------------

    @property
    def key(self) -> str | None:
        """The scoped key of the step running now, None outside steps."""
        scope = _scope.get()
        return SCOPE_SEPARATOR.join(scope) if scope else None

    @property
    def idempotency_key(self) -> str:
        """``"<run uid>:<scoped key>"`` of the step running now: pass it to external services so a
        step re-run after a crash (before its checkpoint was written) does not act twice."""
        key = self.key
        if key is None:
            raise RuntimeError("ctx.step.idempotency_key is only defined inside a step (ctx.step.run)")
        return idempotency_key(self._run_uid, key)

    # -- steps ----------------------------------------------------------------------------------

    def run(self, key: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs ``fn(*args, **kwargs)`` once per run and returns its (JSON round-tripped) result.

        For sync code. ``fn`` may be async when no event loop is running; in async code use
        ``await ctx.step.run_async(...)``.
        """
        scoped = self._begin(key)
        done = self._replay(scoped, fn)
        if done is not _MISSING:
            return typing.cast(T, done)
        token = _scope.set(tuple(scoped.split(SCOPE_SEPARATOR)))
        started = time.monotonic()
        try:
            with step_span(scoped):
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = _run_awaitable(value, scoped)
        finally:
            _scope.reset(token)
        return typing.cast(T, self._complete(scoped, fn, value, started))

    async def run_async(self, key: str, fn: Callable[..., T | Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``run`` for async code: ``fn`` may be sync or async. Steps gathered concurrently keep
        their own scopes."""
        scoped = self._begin(key)
        done = self._replay(scoped, fn)
        if done is not _MISSING:
            return typing.cast(T, done)
        token = _scope.set(tuple(scoped.split(SCOPE_SEPARATOR)))
        started = time.monotonic()
        try:
            with step_span(scoped):
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
        finally:
            _scope.reset(token)
        return typing.cast(T, self._complete(scoped, fn, value, started))

    # -- sleeps ---------------------------------------------------------------------------------

    def sleep(self, key: str, duration: DurationLike) -> Resumed:
        """Sleeps durably: ends this attempt (no pod waits) and resumes in a new one once
        ``duration`` (seconds, timedelta or "30s") has passed since the sleep first began.
        Code before the sleep runs again then, so put side effects in steps."""
        seconds = seconds_of(duration)
        return self._sleep(key, lambda now: now + timedelta(seconds=seconds))

    def sleep_until(self, key: str, when: datetime) -> Resumed:
        """Sleeps durably until ``when`` (naive datetimes are UTC)."""
        wake = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        return self._sleep(key, lambda now: wake)

    def _sleep(self, key: str, wake_of: Callable[[datetime], datetime]) -> Resumed:
        scoped = self._begin(key)
        now = self._clock()
        record = self._checkpoints.get(scoped)
        if record is None:
            record = Checkpoint(key=scoped, kind="sleep", attempt=self._attempt, wake_at=wake_of(now), started_at=now)
            assert record.wake_at is not None
            if record.wake_at > now:
                self._checkpoints.put(record)
                log.info("step %s: sleeping until %s", scoped, record.wake_at.isoformat())
                raise SleepRequested(scoped, record.wake_at)
        elif record.kind != "sleep":
            raise DuplicateStepKey(f"step key {scoped!r} belongs to a step, not a sleep")
        elif record.completed:
            self._used.add(scoped)
            return RESUMED
        elif record.wake_at is not None and record.wake_at > now:
            log.info("step %s: woken early; sleeping until %s", scoped, record.wake_at.isoformat())
            raise SleepRequested(scoped, record.wake_at)
        began = record.started_at or now
        self._checkpoints.put(replace(record, attempt=self._attempt, completed_at=now,
                                      duration_seconds=max((now - began).total_seconds(), 0.0)))
        self._used.add(scoped)
        return RESUMED

    # -- waits for child runs -------------------------------------------------------------------

    def trigger_and_wait(self, key: str, task: TaskRef, payload: Any = None, **options: Any) -> Any:
        """Triggers a run of ``task`` and waits for it without a pod: this attempt ends, the run is
        Waiting, and the next attempt starts when the child has finished. There, the steps before
        this one return their checkpoints and this call returns the child's result (validated into
        the task's return model, if any), or raises :class:`~kubetasks.runtime.errors.ChildFailed`.
        Options are :func:`~kubetasks.runtime.trigger.trigger`'s, but for ``idempotency_key`` (the
        child's key is made of this run and ``key``, so a retry finds the same child) and
        ``namespace`` (children run in the parent's)."""
        return first_result(self._wait(key, task, [payload], False, options))

    def batch_trigger_and_wait(self, key: str, task: TaskRef, payloads: Iterable[Any], **options: Any) -> list[Any]:
        """:meth:`trigger_and_wait` for one child per payload: their results in order, once all
        have finished. When any failed, raises the first one's ChildFailed, whose ``results``
        holds every outcome (the results, and a ChildFailed for each failure)."""
        items = list(payloads)
        if not items:
            return []
        return all_results(self._wait(key, task, items, True, options))

    def _wait(self, key: str, task: TaskRef, payloads: list[Any], batch: bool, options: dict[str, Any]) -> list[Any]:
        scoped = self._begin(key)
        outcomes = wait_for_children(self._checkpoints, scoped, self._run_uid, self._attempt, self._clock(),
                                     task, payloads, batch, options)
        self._used.add(scoped)
        return outcomes

    def wait_for_token(self, key: str, timeout: DurationLike | None = None) -> Any:
        """Waits without a pod for the token of this step to be completed (``kubetasks complete
        NAME --data JSON``, by anyone allowed to update ``waitpoints/status``) and returns the data
        it was completed with. The token is a Waitpoint named :meth:`create_token` ``(key)``, made
        now unless it was made before; ``timeout`` (seconds, timedelta or "24h") counts from then.
        Raises :class:`~kubetasks.runtime.errors.TokenTimeout` when it was not completed in time."""
        scoped = self._begin(key)
        value = wait_for_token(self._checkpoints, scoped, self._token_namespace(), self._run, self._run_uid,
                               self._attempt, self._clock(), timeout)
        self._used.add(scoped)
        return value

    def wait_for_event(self, key: str, event: str, match: str | None = None, timeout: DurationLike | None = None,
                       lookback: DurationLike = 0) -> ReceivedEvent:
        """Waits without a pod for an event ``event`` (``kubetasks send EVENT``) whose data
        ``match`` accepts (CEL over ``data``, ``event`` and ``id``; None: any), and returns it
        (:class:`~kubetasks.runtime.events.ReceivedEvent`: id, event, data, sent_at). Events sent
        from ``lookback`` (seconds, timedelta or "5m") before this step was first reached count
        too, oldest first; at a second's grain. The choice is made once: replays return the same
        event. Raises :class:`~kubetasks.runtime.errors.EventTimeout` when none came within
        ``timeout`` of the step first being reached."""
        scoped = self._begin(key)
        value = wait_for_event(self._checkpoints, scoped, self._attempt, self._clock(), event, match, timeout, lookback)
        self._used.add(scoped)
        return value

    def create_token(self, key: str, timeout: DurationLike | None = None) -> Token:
        """Makes the token that ``wait_for_token(key)`` will wait for, ahead of the wait, and
        returns it: its name (a str) and ``url``, its signed completion URL when the operator
        serves them. Send either to whoever completes it (a completion that comes before the wait
        is kept). Idempotent: a retried attempt gets the same name, and the first expiry stands."""
        scoped = scoped_key(_scope.get(), key)
        return make_token(self._token_namespace(), self._run, self._run_uid, scoped, timeout, self._clock())

    def wait_any(self, key: str, *, tokens: Sequence[str] = (), runs: Sequence[tuple[TaskRef, Any]] = (),
                 timeout: DurationLike | None = None, events: Sequence[tuple[str, str | None]] = (),
                 lookback: DurationLike = 0, **options: Any) -> Fired:
        """Waits without a pod for the first of ``tokens`` (the keys of this run's tokens, made
        now unless :meth:`create_token` made them) and ``runs`` (``(task, payload)`` pairs,
        triggered now as :meth:`trigger_and_wait` does) to end, or for ``timeout``, and returns
        which one fired (:class:`~kubetasks.runtime.any_of.Fired`: ``kind`` token, run or timeout).
        The children it no longer waits for are cancelled; the tokens are left. When several had
        ended by the time the run resumed, the first in the order given fired: tokens, then runs.
        ``events``: ``(event, match)`` pairs, as :meth:`wait_for_event` takes them (with
        ``lookback``); one fires (``kind`` event, ``index`` in ``events``) when the operator chose
        an event for it, after tokens and before runs."""
        scoped = self._begin(key)
        scope = _scope.get()
        fired = wait_any(self._checkpoints, scoped, self._token_namespace(), self._run, self._run_uid, self._attempt,
                         self._clock(), {t: scoped_key(scope, t) for t in tokens}, list(runs), timeout, options,
                         list(events), lookback)
        self._used.add(scoped)
        return fired

    def _token_namespace(self) -> str:
        from kubetasks.runtime.kube import default_namespace

        return self._namespace or default_namespace()

    # -- internals ------------------------------------------------------------------------------

    def _begin(self, key: str) -> str:
        scoped = scoped_key(_scope.get(), key)
        if scoped in self._used:
            raise DuplicateStepKey(f"step key {scoped!r} was already used in this run: step keys must be unique "
                                   "(in loops, put the item in the key, e.g. f'send-{user_id}')")
        return scoped

    def _replay(self, scoped: str, fn: Callable[..., Any]) -> Any:
        record = self._checkpoints.get(scoped)
        if record is None or not record.completed:
            return _MISSING
        if record.kind != "run":
            raise DuplicateStepKey(f"step key {scoped!r} belongs to a {record.kind}, not a step")
        self._used.add(scoped)
        log.info("step %s: completed in attempt %d, skipped", scoped, record.attempt)
        return revive(record.result, return_annotation(fn))

    def _complete(self, scoped: str, fn: Callable[..., Any], value: Any, started: float) -> Any:
        result = round_trip(value, f"the result of step {scoped!r}")
        elapsed = time.monotonic() - started
        self._checkpoints.put(Checkpoint(key=scoped, result=result, attempt=self._attempt,
                                         duration_seconds=elapsed, completed_at=self._clock()))
        self._used.add(scoped)
        log.info("step %s: completed in %.3fs", scoped, elapsed)
        return revive(result, return_annotation(fn))


def _run_awaitable(awaitable: Awaitable[T], scoped: str) -> T:
    """Runs an async step function from sync code, on the attempt's event loop (runtime.bridge),
    where its async hooks and middleware run too."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return bridge.run(awaitable)
    if inspect.iscoroutine(awaitable):
        awaitable.close()
    raise TypeError(f"step {scoped!r}: the step function is async and an event loop is running: "
                    "use `await ctx.step.run_async(...)`")


@dataclass
class Context:
    """What a task knows about its run. Passed as the second argument of the task function."""

    run_id: str  # the TaskRun's name
    task_id: str
    attempt: int
    namespace: str
    payload: Any
    step: Steps
    run_uid: str = ""
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("kubetasks.task"))
    replay_of: str | None = None  # the run this one replays (`kubetasks replay`), by name
    # status.metadata: ctx.metadata.set("progress", 0.5), .increment, .append; .parent and .root
    metadata: Metadata = field(default_factory=Metadata.in_memory)
    # What middleware hands to the task and its hooks (a client, a connection): this attempt's only
    locals: dict[str, Any] = field(default_factory=dict)
    # Blocks retried inside the attempt: ctx.retry.on_throw(fn), ctx.retry.fetch(url)
    retry: Retry = field(default_factory=Retry)

    @property
    def is_replay(self) -> bool:
        """True in a run made by ``kubetasks replay``: its steps reused from the original return
        their recorded results, as a retry's do; the others run again."""
        return self.replay_of is not None

    @classmethod
    def local(cls, payload: Any = None, *, task_id: str = "local", run_id: str = "local", attempt: int = 1,
              namespace: str = "default", store: CheckpointStore | None = None, clock: Clock = utcnow,
              replay_of: str | None = None) -> Context:
        """A context with checkpoints in memory: for calling task functions in tests and scripts.
        Pass the same ``store`` to a second context to see what a retry would do."""
        checkpoints = Checkpoints(store if store is not None else MemoryStore())
        steps = Steps(checkpoints, run_id, attempt, clock, run=run_id, namespace=namespace)
        return cls(run_id=run_id, task_id=task_id, attempt=attempt, namespace=namespace, payload=payload,
                   step=steps, run_uid=run_id, logger=logging.getLogger(f"kubetasks.task.{task_id}"),
                   replay_of=replay_of, metadata=Metadata(RunMetadata(checkpoints, flush_seconds=0.0)))
