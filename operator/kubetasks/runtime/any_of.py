"""``ctx.step.wait_any``: waits without a pod for the first of several tokens and child runs, or
a timeout, and says which one fired.

The first time, the tokens not made yet are made, the children are triggered (idempotency keys
of this run and the step, as ``trigger_and_wait``'s), and a ``wait`` record naming them all with
``anyOf`` (and its ``timeoutAt``) is checkpointed; the attempt ends. The operator resumes the run
once one of them has ended (a token completed or timed out, a child finished) or at the timeout,
and cancels the children it no longer waits for (core.waits.wait_state); tokens are left. The
next attempt finds what fired, in the order given (tokens, then runs), completes the record with
it, and later attempts return the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from kubetasks.api.times import format_time
from kubetasks.core.event_waits import entry, outcome_key
from kubetasks.core.naming import idempotent_run_name, token_name
from kubetasks.protocol import TOKEN
from kubetasks.runtime.checkpoints import Checkpoint, Checkpoints
from kubetasks.runtime.durations import DurationLike, seconds_of
from kubetasks.runtime.errors import DuplicateStepKey, TokenError, WaitRequested
from kubetasks.runtime.events import ReceivedEvent, check_match
from kubetasks.runtime.tokens import make_token, token_result
from kubetasks.runtime.trigger import RunHandle, TaskLike, TaskRef, task_id_of, trigger_child
from kubetasks.runtime.waits import child_keys, child_outcome, read_child

log = logging.getLogger("kubetasks.runtime")


@dataclass(frozen=True)
class Fired:
    """What ended a ``wait_any``: a token (``key`` as given), an event (``index`` in ``events``), a
    run (``index`` in ``runs``), or the timeout. ``value`` is the token's data, the event (a
    ReceivedEvent) or the run's result; ``error`` the token's TokenError (TokenTimeout) or the
    run's ChildFailed, when it did not complete or succeed."""

    kind: Literal["token", "event", "run", "timeout"]
    key: str | None = None
    index: int | None = None
    value: Any = None
    error: Exception | None = None


def wait_any(checkpoints: Checkpoints, scoped: str, namespace: str, run: str, run_uid: str, attempt: int,
             now: datetime, tokens: dict[str, str], runs: list[tuple[TaskRef, Any]], timeout: DurationLike | None,
             options: dict[str, Any], events: list[tuple[str, str | None]] | None = None,
             lookback: DurationLike = 0) -> Fired:
    """``tokens``: each token's key as given -> its scoped key; ``events``: (event, match) pairs,
    as wait_for_event takes them. See the module's docstring."""
    events = events or []
    if not tokens and not runs and not events:
        raise TypeError("wait_any needs a token or a run to wait for (to wait for time alone, use ctx.step.sleep)")
    if "idempotency_key" in options or "namespace" in options:
        raise TypeError("wait_any makes its children's idempotency keys and starts them in the run's namespace: "
                        "pass neither idempotency_key nor namespace")
    record = checkpoints.get(scoped)
    if record is not None and (record.kind != "wait" or not record.any_of):
        raise DuplicateStepKey(f"step key {scoped!r} belongs to a {record.kind}, not a wait_any")
    models = [task.result_model if isinstance(task, TaskLike) else None for task, _ in runs]
    if record is not None and record.completed:
        return _fired((record.result or {}).get("fired") or {}, models)
    names = {key: token_name(run, run_uid, scoped_token) for key, scoped_token in tokens.items()}
    keys = child_keys(run_uid, scoped, len(runs))
    children = [idempotent_run_name(task_id_of(task), key) for (task, _), key in zip(runs, keys)]
    event_keys = [f"{scoped}#event-{i}" for i in range(len(events))]
    waited = [entry(event, key) for (event, _), key in zip(events, event_keys)]
    if record is None:
        for event, match in events:
            check_match(event, match)
        for key, scoped_token in tokens.items():
            make_token(namespace, run, run_uid, scoped_token, None, now)
        for (task, payload), key in zip(runs, keys):
            trigger_child(task, payload, key, **options)
        timeout_at = None if timeout is None else now + timedelta(seconds=seconds_of(timeout))
        since = format_time(now - timedelta(seconds=seconds_of(lookback)))
        params = {"events": [{"key": key, "event": event, "match": match, "since": since}
                             for (event, match), key in zip(events, event_keys)]} if events else None
        checkpoints.put(Checkpoint(key=scoped, kind="wait", attempt=attempt, started_at=now, any_of=True,
                                   timeout_at=timeout_at, result=params,
                                   waiting_on=(*(TOKEN + n for n in names.values()), *waited, *children)))
        log.info("step %s: waiting for the first of %d tokens and %d runs", scoped, len(names), len(children))
        raise WaitRequested(scoped, [*names.values(), *children])
    fired = _first(checkpoints, names, event_keys, children, namespace)
    if fired is None and record.timeout_at is not None and now >= record.timeout_at:
        fired = {"kind": "timeout"}
    if fired is None:  # woken before anything ended: the wait goes on
        if record.attempt != attempt:
            checkpoints.put(replace(record, attempt=attempt))
        raise WaitRequested(scoped, [*names.values(), *children])
    began = record.started_at or now
    checkpoints.put(replace(record, attempt=attempt, completed_at=now, result={"fired": fired},
                            duration_seconds=max((now - began).total_seconds(), 0.0)))
    log.info("step %s: %s fired", scoped, fired.get("key") or fired.get("index") or fired["kind"])
    return _fired(fired, models)


def _first(checkpoints: Checkpoints, names: dict[str, str], event_keys: list[str], children: list[str],
           namespace: str) -> dict[str, Any] | None:
    """The first entry, in the order given, that has ended: a token whose outcome the operator
    wrote, an event it chose, or a child that finished."""
    for key, name in names.items():
        outcome = checkpoints.get(TOKEN + name)
        if outcome is not None and outcome.completed:
            return {"kind": "token", "key": key, "outcome": outcome.result}
    for index, key in enumerate(event_keys):
        outcome = checkpoints.get(outcome_key(key))
        if outcome is not None and outcome.completed and (outcome.result or {}).get("phase") == "Received":
            return {"kind": "event", "index": index, "outcome": outcome.result}
    for index, name in enumerate(children):
        found = read_child(RunHandle(name, namespace))
        if found is not None:
            return {"kind": "run", "index": index, "outcome": found}
    return None


def _fired(fired: dict[str, Any], models: list[Any]) -> Fired:
    kind, outcome = fired.get("kind"), fired.get("outcome") or {}
    if kind == "token":
        try:
            data = token_result(Checkpoint(key="", result={"tokens": [outcome]}))
        except TokenError as e:
            return Fired("token", key=fired.get("key"), error=e)
        return Fired("token", key=fired.get("key"), value=data)
    if kind == "event":
        got = outcome.get("event") or {}
        return Fired("event", index=int(fired.get("index") or 0), value=ReceivedEvent(
            id=str(got.get("id")), event=str(got.get("event")), data=got.get("data"), sent_at=got.get("sentAt")))
    if kind == "run":
        index = int(fired.get("index") or 0)
        value = child_outcome(outcome, models[index] if index < len(models) else None)
        if isinstance(value, Exception):
            return Fired("run", index=index, error=value)
        return Fired("run", index=index, value=value)
    return Fired("timeout")
