"""Events (TaskEvent) and the Tasks subscribed to them (pure): names, filters, the runs an event
starts, and when an event expires.

Filters are CEL (cel-python, pure Python), evaluated with the event's ``data`` (at most 64 KiB),
its name ``event`` and ``id``. An expression is capped at 1024 characters, so one evaluation costs
at most a small multiple of the data's size (a comprehension over a list is quadratic at worst).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

import celpy

from kubetasks.api.common import API_VERSION
from kubetasks.api.task import Task
from kubetasks.api.taskevent import EVENT_DATA_LIMIT
from kubetasks.api.times import parse_time
from kubetasks.core.naming import LABEL_INSTANCE, LABEL_TASK, MAX_SUBDOMAIN, fit_name, instance_of, label_value
from kubetasks.protocol import json_size

LABEL_EVENT = "kubetasks.io/event"
LABEL_EVENT_ID = "kubetasks.io/event-id"
ANNOTATION_EVENT_OF = "kubetasks.io/event-of"  # the TaskEvent (its name) that started the run

Body = dict[str, Any]
_ENV = celpy.Environment()


def _hash(*parts: str, length: int = 10) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def event_object_name(event: str, id_: str) -> str:
    """The TaskEvent of (event, id): ``<event with dashes>-<hash>``. One name per pair, so a resend
    with the same id is a 409."""
    return fit_name(re.sub(r"[^a-z0-9.-]+", "-", event).strip("-."), f"-{_hash(event, id_)}", MAX_SUBDOMAIN)


def event_run_name(task: str, event: str, id_: str) -> str:
    """The run that the event (event, id) starts of ``task``: one per Task and event, so a resend
    or a restarted operator makes nothing twice."""
    return fit_name(task, f"-ev-{_hash(task, event, id_)}", MAX_SUBDOMAIN)


@lru_cache(maxsize=1024)
def _compiled(expression: str) -> Any:
    return _ENV.program(_ENV.compile(expression))


def filter_error(expression: str) -> str | None:
    """Why a filter does not compile, in one line; None when it does."""
    try:
        _compiled(expression)
    except Exception as e:  # celpy's parse errors are the expression and a caret under the fault
        lines = str(e).splitlines()
        if len(lines) >= 2 and lines[1].strip() == "^":
            return f"syntax error at character {lines[1].index('^') + 1}"
        return f"{type(e).__name__}: {lines[0] if lines else ''}"
    return None


def subscription_errors(task: Task) -> list[str]:
    """One line per subscription of ``task`` whose filter does not compile."""
    out = []
    for i, sub in enumerate(task.spec.on):
        error = filter_error(sub.filter) if sub.filter else None
        if error:
            out.append(f"spec.on[{i}] ({sub.event}): the filter {sub.filter!r} does not compile: {error}")
    return out


class Match(NamedTuple):
    matched: bool
    error: str | None = None  # why the filter could not be evaluated on this event (no match then)


def evaluate(expression: str, data: Any, event: str, id_: str) -> Match:
    """Whether the filter is true of the event; a filter that fails on it (a missing field, a
    type error, not a bool) does not match, with the reason."""
    try:
        result = _compiled(expression).evaluate({
            "data": celpy.json_to_cel(data), "event": celpy.celtypes.StringType(event),
            "id": celpy.celtypes.StringType(id_)})
    except Exception as e:
        return Match(False, f"{type(e).__name__}: {e}")
    if isinstance(result, Exception):  # celpy may return its error as the value
        return Match(False, f"{type(result).__name__}: {result}")
    if not isinstance(result, (bool, celpy.celtypes.BoolType)):
        return Match(False, f"the filter is not a bool but {type(result).__name__}")
    return Match(bool(result))


class Subscriber(NamedTuple):
    task: Task
    error: str | None  # the filter failed on this event: no run


def subscribers(tasks: Iterable[Task], event: str, id_: str, data: Any) -> list[Subscriber]:
    """The Tasks an event starts a run of (error None), and those whose filter failed on it (error
    set), by name. A subscription whose filter does not compile is skipped (its Task says so)."""
    out = []
    for task in sorted(tasks, key=lambda t: t.name):
        failed = None
        for sub in task.spec.on:
            if sub.event != event or (sub.filter and filter_error(sub.filter)):
                continue
            match = evaluate(sub.filter, data, event, id_) if sub.filter else Match(True)
            if match.matched:
                out.append(Subscriber(task, None))
                break
            failed = failed or match.error
        else:
            if failed:
                out.append(Subscriber(task, failed))
    return out


def render_event_run(task: Task, taskevent: Body) -> Body:
    """The run an event starts of a Task: its data as payload, labelled with the event's name and
    id, annotated with the TaskEvent's name (see :func:`is_run_of`)."""
    spec = taskevent.get("spec") or {}
    event, id_ = str(spec["event"]), str(spec["id"])
    labels = {LABEL_TASK: label_value(task.task_id), LABEL_EVENT: event, LABEL_EVENT_ID: id_}
    instance = instance_of({"metadata": task.metadata})
    if instance:
        labels[LABEL_INSTANCE] = instance
    run_spec: Body = {"taskRef": task.name}
    if spec.get("data") is not None:
        run_spec["payload"] = spec["data"]
    return {"apiVersion": API_VERSION, "kind": "TaskRun",
            "metadata": {"name": event_run_name(task.name, event, id_), "namespace": task.metadata["namespace"],
                         "labels": labels,
                         "annotations": {ANNOTATION_EVENT_OF: taskevent["metadata"]["name"]}},
            "spec": run_spec}


def is_run_of(existing: Body, wanted: Body) -> bool:
    """Whether ``existing``, which holds the name of ``wanted`` (a :func:`render_event_run`), is
    that event's run of that Task: its labels, annotation and taskRef."""
    meta, want = existing.get("metadata") or {}, wanted["metadata"]
    labels = meta.get("labels") or {}
    return (all(labels.get(k) == want["labels"][k] for k in (LABEL_TASK, LABEL_EVENT, LABEL_EVENT_ID))
            and (meta.get("annotations") or {}).get(ANNOTATION_EVENT_OF) == want["annotations"][ANNOTATION_EVENT_OF]
            and (existing.get("spec") or {}).get("taskRef") == wanted["spec"]["taskRef"])


def too_large(taskevent: Body) -> str | None:
    data = (taskevent.get("spec") or {}).get("data")
    size = json_size(data) if data is not None else 0
    if size > EVENT_DATA_LIMIT:
        return f"its data is {size} bytes, more than {EVENT_DATA_LIMIT}: it starts nothing"
    return None


def expires_at(taskevent: Body, retention: timedelta) -> datetime | None:
    """When the operator deletes an event: ``retention`` after its creation; None keeps it (a
    retention of 0, or no creation time)."""
    created = parse_time((taskevent.get("metadata") or {}).get("creationTimestamp"))
    if not retention or created is None:
        return None
    return created + retention
