"""The spans core.tracing decides for a run, exported over OTLP when an endpoint is configured: the
operator's, and ``kubetasks dev``'s when it runs the attempts in the operator's place.

Spans are built whole, with the ids and times core.tracing chose, and handed to a batching
processor: nothing is held open across reconciles, so a restart loses no span state. With no
endpoint, ``enabled`` is False and OpenTelemetry is never imported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kubetasks.core.tracing import ENV_POD_ENDPOINT, SpanPlan, endpoint, endpoint_variable, job_env, run_trace

log = logging.getLogger(__name__)
SERVICE = "kubetasks-operator"


class Tracing:
    def __init__(self, service: str = SERVICE, scope: str = "kubetasks.controller") -> None:
        self.service, self.scope = service, scope  # who the spans say they come from
        self.endpoint: str | None = None
        self.pod_endpoint: tuple[str, str] | None = None  # the variable task pods get, and its value
        self._processor: Any = None
        self._resource: Any = None

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None

    def configure(self, env: Mapping[str, str]) -> None:
        """On when the environment names an OTLP endpoint (and OpenTelemetry is installed)."""
        self.endpoint = endpoint(env)
        if self.endpoint is None:
            return
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as e:
            log.warning("an OTLP endpoint is configured but OpenTelemetry is not installed "
                        "(pip install 'kubetasks[tracing]'): no spans (%s)", e)
            self.endpoint = None
            return
        pods = env.get(ENV_POD_ENDPOINT)
        self.pod_endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", pods) if pods else endpoint_variable(env)
        self._resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or self.service})
        self._processor = BatchSpanProcessor(OTLPSpanExporter())
        log.info("tracing: spans go to %s (task pods: %s)", self.endpoint, self.pod_endpoint[1] if self.pod_endpoint else "")

    def job_env(self, run: Mapping[str, Any], attempt: int, service: str) -> dict[str, str]:
        """The variables an attempt's pod continues its run's trace with (``run``: its metadata);
        none when tracing is off, and then the trace is not even worked out."""
        if self.pod_endpoint is None:
            return {}
        return job_env(run_trace(run), attempt, self.pod_endpoint, service)

    def emit(self, spans: list[SpanPlan]) -> None:
        if not spans or self._processor is None:
            return
        from opentelemetry import trace
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        scope = InstrumentationScope(self.scope)
        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        for s in spans:
            context = trace.SpanContext(s.trace_id, s.span_id, is_remote=False, trace_flags=flags)
            parent = (trace.SpanContext(s.trace_id, s.parent_id, is_remote=True, trace_flags=flags)
                      if s.parent_id else None)
            status = trace.Status(trace.StatusCode.ERROR, s.error) if s.error else trace.Status(trace.StatusCode.OK)
            self._processor.on_end(ReadableSpan(
                s.name, context, parent, resource=self._resource, attributes=s.attributes, status=status,
                start_time=_nanos(s.start), end_time=_nanos(s.end), instrumentation_scope=scope))

    def shutdown(self) -> None:
        if self._processor is not None:
            self._processor.shutdown()  # flushes what is batched


def _nanos(when: Any) -> int:
    return int(when.timestamp() * 1_000_000_000)
