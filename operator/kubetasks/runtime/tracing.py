"""OpenTelemetry in the SDK: the caller's context onto the runs it triggers, and in task pods a span
per attempt and per step (core.tracing says where they go).

Nothing here imports OpenTelemetry unless it is needed: ``trigger()`` looks only when the caller
has imported it already (with no OpenTelemetry loaded, no span can be current), and a pod starts
a tracer only when the operator gave it a TRACEPARENT and an OTLP endpoint. Otherwise every
function is a dictionary lookup.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from kubetasks.core.tracing import ENV_TRACESTATE, ENV_TRACEPARENT, TraceParent, endpoint, trace_annotations

log = logging.getLogger(__name__)
SCOPE = "kubetasks.runtime"
_tracer: Any = None  # the attempt's tracer while a traced attempt runs


def caller_annotations() -> dict[str, str]:
    """The annotations that carry the current OpenTelemetry span into a new TaskRun (none without one)."""
    if "opentelemetry.trace" not in sys.modules:
        return {}
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    state = context.trace_state.to_header() if context.trace_state else None
    return trace_annotations(TraceParent(context.trace_id, context.span_id, int(context.trace_flags)).header(), state)


def env_annotations(env: Mapping[str, str]) -> dict[str, str]:
    """The annotations for the context in OpenTelemetry's environment carrier (``kubetasks run``)."""
    return trace_annotations(env.get(ENV_TRACEPARENT), env.get(ENV_TRACESTATE))


Ended = Callable[[str | None], None]  # the attempt's error message, None when it ended well


@contextmanager
def attempt_span(env: Mapping[str, str], name: str, attributes: dict[str, str | int]) -> Iterator[Ended]:
    """A span for the attempt, child of the operator's (TRACEPARENT), exported to the configured
    endpoint and flushed when the attempt ends. Without both, or without OpenTelemetry, nothing."""
    global _tracer
    traceparent = env.get(ENV_TRACEPARENT)
    if not traceparent or not endpoint(env):
        yield lambda _: None
        return
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError as e:
        log.warning("tracing is configured but OpenTelemetry is not installed (pip install 'kubetasks[tracing]'): %s", e)
        yield lambda _: None
        return
    provider = TracerProvider(resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "kubetasks"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)  # the task's own instrumentation joins the trace (once per process)
    carrier = {"traceparent": traceparent, "tracestate": env.get(ENV_TRACESTATE) or ""}
    parent = TraceContextTextMapPropagator().extract(carrier)
    tracer = provider.get_tracer(SCOPE)
    try:
        with tracer.start_as_current_span(name, context=parent, attributes=attributes) as span:
            _tracer = tracer

            def ended(error: str | None) -> None:
                if error is not None:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, error))

            yield ended
    finally:
        _tracer = None
        provider.shutdown()  # flushes: the pod ends right after


def step_span(key: str) -> AbstractContextManager[Any]:
    """A span around one step's function in a traced attempt; nothing otherwise."""
    if _tracer is None:
        return nullcontext()
    return _tracer.start_as_current_span(f"step {key}", attributes={"kubetasks.step": key})
