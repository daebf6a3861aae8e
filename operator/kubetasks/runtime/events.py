"""Durable waits for events: ``ctx.step.wait_for_event``.

The step writes a ``wait`` record naming the event (core.event_waits.entry), with the match and
``since`` (when the step was first reached, minus ``lookback``) and its timeout, and ends the
attempt: the run is Waiting, with no pod. The operator chooses the oldest TaskEvent of that name
sent since then whose data the match accepts (one sent while the pod was still on its way to the
wait is not missed, inngest#1433) and writes it into the checkpoints, once; the next attempt
replays the steps before, completes the wait's record with it and returns it. Replays return the
same event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from kubetasks.api.times import format_time
from kubetasks.core.event_waits import entry, outcome_key
from kubetasks.core.events import filter_error
from kubetasks.runtime.checkpoints import Checkpoint, Checkpoints
from kubetasks.runtime.durations import DurationLike, seconds_of
from kubetasks.runtime.errors import DuplicateStepKey, EventTimeout, WaitRequested

log = logging.getLogger("kubetasks.runtime")


@dataclass(frozen=True)
class ReceivedEvent:
    """The event a ``wait_for_event`` got: as sent with ``kubetasks send``."""

    id: str
    event: str
    data: Any
    sent_at: str | None  # the TaskEvent's creationTimestamp (RFC 3339, to the second)


def wait_for_event(checkpoints: Checkpoints, scoped: str, attempt: int, now: datetime, event: str,
                   match: str | None, timeout: DurationLike | None, lookback: DurationLike) -> ReceivedEvent:
    """The first event ``event`` sent since the step was first reached minus ``lookback`` that
    ``match`` (CEL over data, event, id) accepts, once the operator has chosen it; until then the
    attempt ends (WaitRequested). Raises EventTimeout when none came in time."""
    record = checkpoints.get(scoped)
    if record is not None and record.kind != "wait":
        raise DuplicateStepKey(f"step key {scoped!r} belongs to a {record.kind}, not a wait_for_event")
    if record is not None and record.completed:
        return event_result(event, record.result)
    outcome = checkpoints.get(outcome_key(scoped))
    if record is not None and outcome is not None and outcome.completed:  # the operator chose: the wait is over
        done = replace(record, attempt=attempt, completed_at=now, result=outcome.result,
                       duration_seconds=max((now - (record.started_at or now)).total_seconds(), 0.0))
        checkpoints.put(done)
        return event_result(event, done.result)
    if record is None:
        check_match(event, match)
        timeout_at = None if timeout is None else now + timedelta(seconds=seconds_of(timeout))
        since = now - timedelta(seconds=seconds_of(lookback))
        checkpoints.put(Checkpoint(key=scoped, kind="wait", attempt=attempt, started_at=now, timeout_at=timeout_at,
                                   waiting_on=(entry(event, scoped),),
                                   result={"event": event, "match": match, "since": format_time(since)}))
        log.info("step %s: waiting for event %s (kubetasks send %s)", scoped, event, event)
    elif record.attempt != attempt:  # woken before the operator chose: the wait goes on
        checkpoints.put(replace(record, attempt=attempt))
    raise WaitRequested(scoped, [event])


def check_match(event: str, match: str | None) -> None:
    """Fails the step at once when ``match`` does not compile: it would never accept an event."""
    error = filter_error(match) if match else None
    if error:
        raise ValueError(f"wait for event {event!r}: the match {match!r} does not compile: {error}")


def event_result(event: str, result: Any) -> ReceivedEvent:
    result = result if isinstance(result, dict) else {}
    if result.get("phase") == "Received":
        got = result.get("event") or {}
        return ReceivedEvent(id=str(got.get("id")), event=str(got.get("event")), data=got.get("data"),
                             sent_at=got.get("sentAt"))
    raise EventTimeout(event, str(result.get("message") or ""))
