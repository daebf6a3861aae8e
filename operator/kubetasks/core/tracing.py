"""Which spans a run's trace gets, decided from what the run records (pure).

The caller's W3C trace context rides on the TaskRun (ANNOTATION_TRACEPARENT, set by ``trigger()``
and ``kubetasks run``). The operator adds spans at the transitions its reconciler writes: waiting
and admission when the first attempt starts, an attempt when its record ends, the run when it
finishes. Every span id is a hash of the run's uid and what the span is, and every time is one
the status records, so an operator that dies and decides a transition again emits the same span;
one that dies after the status write but before the export loses those spans (at most once,
never twice with different ids). The attempt's span context goes into its pod as TRACEPARENT:
the runtime's attempt span, and its steps, are children of the operator's attempt span.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from kubetasks.api.taskrun import Phase, TaskRunStatus
from kubetasks.api.times import api_time

ANNOTATION_TRACEPARENT = "kubetasks.io/traceparent"
ANNOTATION_TRACESTATE = "kubetasks.io/tracestate"
TRACE_ANNOTATIONS = (ANNOTATION_TRACEPARENT, ANNOTATION_TRACESTATE)
ENV_TRACEPARENT = "TRACEPARENT"  # OpenTelemetry's environment carrier (also read by `kubetasks run`)
ENV_TRACESTATE = "TRACESTATE"
# Either turns tracing on (OpenTelemetry's own variables, read by its exporter as well).
ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# The endpoint task pods export to, when it is not the operator's (an operator outside the cluster):
# a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT.
ENV_POD_ENDPOINT = "KUBETASKS_TRACING_POD_ENDPOINT"
MAX_TRACESTATE = 512  # W3C: vendors may drop a tracestate longer than this

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
# Attempts that ended as asked: not errors on the trace.
_ENDED_WELL = {"Succeeded", "Sleeping", "Waiting"}


@dataclass(frozen=True)
class TraceParent:
    trace_id: int
    span_id: int
    flags: int = 1

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)

    def header(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"


def parse_traceparent(text: str | None) -> TraceParent | None:
    """A W3C traceparent header's fields; None for anything that is not a valid one."""
    m = _TRACEPARENT.match((text or "").strip().lower())
    if m is None or m.group(1) == "ff" or (m.group(1) == "00" and m.group(5)):
        return None
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if not trace_id or not span_id:
        return None
    return TraceParent(trace_id, span_id, int(m.group(4), 16))


def endpoint(env: Mapping[str, str]) -> str | None:
    """The OTLP endpoint the environment configures; None: tracing is off."""
    found = endpoint_variable(env)
    return found[1] if found else None


def endpoint_variable(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(the variable, its value) that configures the endpoint: a ..._TRACES_ENDPOINT is the whole
    URL (exporters add no /v1/traces to it), so pods get it under the same name."""
    return next(((name, env[name]) for name in ENDPOINT_ENVS if env.get(name)), None)


def trace_annotations(traceparent: str | None, tracestate: str | None = None) -> dict[str, str]:
    """The annotations a new TaskRun carries for the caller's context; none for an invalid one."""
    if parse_traceparent(traceparent) is None:
        return {}
    notes = {ANNOTATION_TRACEPARENT: str(traceparent).strip().lower()}
    if tracestate and len(tracestate) <= MAX_TRACESTATE:
        notes[ANNOTATION_TRACESTATE] = tracestate.strip()
    return notes


def _hash(uid: str, *parts: object, size: int) -> int:
    digest = hashlib.sha256("/".join([uid, *map(str, parts)]).encode()).digest()
    return int.from_bytes(digest[:size], "big") or 1  # an all-zero id is invalid


def span_id(uid: str, *what: object) -> int:
    """The span id of one part of a run (``"run"``, ``"attempt", 2``...): the same after a restart."""
    return _hash(uid, *what, size=8)


@dataclass(frozen=True)
class RunTrace:
    """Where a run's spans go: the caller's trace (or one of its own) under the caller's span."""

    uid: str
    trace_id: int
    parent_id: int | None  # the caller's span; None: the run's span is a root
    sampled: bool = True
    tracestate: str | None = None

    def attempt_parent(self, attempt: int) -> str:
        """The TRACEPARENT of attempt ``attempt``'s pod: its span is the operator's attempt span."""
        return TraceParent(self.trace_id, span_id(self.uid, "attempt", attempt)).header()


def run_trace(metadata: Mapping[str, object]) -> RunTrace:
    """The trace of a run, from its annotations; a run no caller traced gets a trace of its own
    (its id a hash of the run's uid)."""
    uid = str(metadata.get("uid") or "")
    notes = metadata.get("annotations") or {}
    assert isinstance(notes, Mapping)
    caller = parse_traceparent(notes.get(ANNOTATION_TRACEPARENT))
    if caller is None:
        return RunTrace(uid, _hash(uid, "trace", size=16), None)
    return RunTrace(uid, caller.trace_id, caller.span_id, caller.sampled, notes.get(ANNOTATION_TRACESTATE))


def job_env(trace: RunTrace, attempt: int, otlp_endpoint: tuple[str, str], service: str) -> dict[str, str]:
    """What an attempt's pod needs to continue the trace (``otlp_endpoint``: the variable and its
    value, as endpoint_variable gives them); nothing for a trace its caller did not sample."""
    if not trace.sampled:
        return {}
    env = {ENV_TRACEPARENT: trace.attempt_parent(attempt), otlp_endpoint[0]: otlp_endpoint[1],
           "OTEL_SERVICE_NAME": service}
    if trace.tracestate:
        env[ENV_TRACESTATE] = trace.tracestate
    return env


@dataclass(frozen=True)
class SpanPlan:
    """A finished span to export, with its ids and times decided."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int | None
    start: datetime
    end: datetime
    attributes: dict[str, str | int] = field(default_factory=dict)
    error: str | None = None  # the status message of a span that failed


def transition_spans(metadata: Mapping[str, object], task: str, old: TaskRunStatus, new: TaskRunStatus,
                     ) -> list[SpanPlan]:
    """The spans the write from ``old`` to ``new`` completes: each exactly at the transition that
    records its end, so one status write emits it once."""
    trace = run_trace(metadata)
    created = api_time(metadata.get("creationTimestamp"))
    if not trace.sampled or created is None:
        return []
    uid, run_id = trace.uid, span_id(trace.uid, "run")
    base = {"kubetasks.run": str(metadata.get("name") or ""), "kubetasks.namespace": str(metadata.get("namespace") or ""),
            "kubetasks.task": task}

    def span(name: str, what: tuple[object, ...], start: datetime, end: datetime,
             attributes: dict[str, str | int] | None = None, parent: int | None = run_id,
             error: str | None = None) -> SpanPlan:
        return SpanPlan(name, trace.trace_id, span_id(uid, *what), parent, start, max(start, end),
                        {**base, **(attributes or {})}, error)

    spans: list[SpanPlan] = []
    first = next((a for a in new.attempts if a.attempt == 1), None)
    if old.attempt == 0 and new.attempt >= 1 and first is not None and first.start_time:
        waited: dict[str, str | int] = {"kubetasks.waited_for": old.waiting_for.reason if old.waiting_for else "nothing"}
        spans.append(span("kubetasks.wait", ("wait",), created, first.start_time, waited))
        spans.append(span("kubetasks.admission", ("admission",), first.start_time, first.start_time, waited))
    before = {a.attempt: a for a in old.attempts}
    for record in new.attempts:
        ended = record.completion_time
        if ended is None or (before.get(record.attempt) and before[record.attempt].completion_time):
            continue
        reason = record.reason or ""
        spans.append(span("kubetasks.attempt", ("attempt", record.attempt), record.start_time or ended, ended,
                          {"kubetasks.attempt": record.attempt, "kubetasks.reason": reason},
                          error=None if reason in _ENDED_WELL else (record.message or reason or "failed")))
    if new.phase.finished and not old.phase.finished:
        end = new.completion_time or (new.attempts[-1].completion_time if new.attempts else None) or created
        if new.attempt == 0:  # it never started: it waited all along
            spans.append(span("kubetasks.wait", ("wait",), created, end))
        message = new.error.message if new.error else new.phase.value
        spans.append(span(f"taskrun {task}", ("run",), created, end,
                          {"kubetasks.phase": new.phase.value, "kubetasks.attempts": new.attempt},
                          parent=trace.parent_id, error=None if new.phase == Phase.SUCCEEDED else message))
    return spans

