"""Waits for events (``ctx.step.wait_for_event``): which event a waiting run gets (pure).

The pod writes the wait (a ``wait`` record whose ``waitingOn`` is one :func:`entry`, whose
``result`` holds the parameters: the event's name, the CEL ``match``, ``since`` = when the step
was first reached minus its lookback) and ends its attempt. The operator looks for the oldest
TaskEvent of that name created at or after ``since`` (at the second: creationTimestamp has no
finer grain) whose data the match accepts, and writes it as a record of the key
protocol.EVENT + step key; or, once ``timeoutAt`` has passed with none, a TimedOut record. Once
written, that record is the choice: a replay, or a reconcile after a restart, reads it and chooses
nothing again. An event sent while the run waits wakes it (the run store's index of waits by
event name); one sent before is found by the lookback.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from kubetasks.api.times import format_time, parse_time
from kubetasks.core.events import evaluate
from kubetasks.protocol import EVENT, Checkpoint

Body = dict[str, Any]


def entry(event: str, scoped_key: str) -> str:
    """The wait's entry, as its run's status shows it: the event's name, and a hash of the step
    key (keys may be long; the record holds the key)."""
    return f"{EVENT}{event}:{hashlib.sha256(scoped_key.encode()).hexdigest()[:10]}"


def event_of(entry_: str) -> str:
    return entry_[len(EVENT):].split(":", 1)[0]


def outcome_key(scoped_key: str) -> str:
    return EVENT + scoped_key


class EventWait(NamedTuple):
    key: str  # the step's scoped key
    event: str
    match: str | None
    since: datetime
    timeout_at: datetime | None


def event_waits(records: Mapping[str, Checkpoint], attempt: int) -> list[EventWait]:
    """The event waits ``attempt`` wrote that are not over (no outcome record yet). A
    wait_for_event's record holds one (``result``: event, match, since); a wait_any's holds a list
    (``result.events``, each with its own key), and its timeout is the wait_any's (core.waits)."""
    out = []
    for record in records.values():
        if (record.kind != "wait" or record.completed or record.attempt != attempt or not record.waiting_on
                or not any(e.startswith(EVENT) for e in record.waiting_on)):
            continue
        params = record.result if isinstance(record.result, dict) else {}
        items = params.get("events") if record.any_of else [{**params, "key": record.key}]
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or not item.get("event") or not item.get("key"):
                continue
            since = parse_time(item.get("since")) or record.started_at
            if since is None or outcome_key(str(item["key"])) in records:
                continue
            out.append(EventWait(str(item["key"]), str(item["event"]), item.get("match") or None, since,
                                 None if record.any_of else record.timeout_at))
    return out


def candidates(events: Iterable[Body], wait: EventWait) -> list[Body]:
    """The TaskEvents the wait may get, oldest first: of its name, created at or after ``since``
    taken to the second (the grain of creationTimestamp)."""
    floor = wait.since.replace(microsecond=0)
    found = []
    for body in events:
        created = parse_time((body.get("metadata") or {}).get("creationTimestamp"))
        if (body.get("spec") or {}).get("event") == wait.event and created is not None and created >= floor:
            found.append((created, body["metadata"].get("name", ""), body))
    return [b for _, _, b in sorted(found, key=lambda t: (t[0], t[1]))]


def accepts(wait: EventWait, body: Body) -> bool:
    """Whether the wait's match accepts the event (no match: any). A match that fails on the
    event's data (a missing field) does not accept it."""
    if not wait.match:
        return True
    spec = body.get("spec") or {}
    return evaluate(wait.match, spec.get("data"), str(spec.get("event", "")), str(spec.get("id", ""))).matched


def received(wait: EventWait, body: Body, attempt: int, now: datetime) -> Checkpoint:
    """The record of the event chosen for the wait, as the next attempt returns it."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    return Checkpoint(key=outcome_key(wait.key), kind="event", attempt=attempt, completed_at=now, result={
        "phase": "Received", "event": {"id": spec.get("id"), "event": spec.get("event"), "data": spec.get("data"),
                                       "sentAt": meta.get("creationTimestamp"), "name": meta.get("name")}})


def timed_out(wait: EventWait, attempt: int, now: datetime) -> Checkpoint:
    when = format_time(wait.timeout_at) if wait.timeout_at else "its timeout"
    return Checkpoint(key=outcome_key(wait.key), kind="event", attempt=attempt, completed_at=now, result={
        "phase": "TimedOut", "message": f"no {wait.event} event matched by {when}"})
