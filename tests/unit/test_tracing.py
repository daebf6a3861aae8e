"""core.tracing: the spans of a run, their ids and times, decided from its status alone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kubetasks.api.flow import WaitingFor
from kubetasks.api.taskrun import AttemptRecord, ErrorInfo, Phase, TaskRunStatus
from kubetasks.core.tracing import (
    ANNOTATION_TRACEPARENT, ANNOTATION_TRACESTATE, ENV_TRACEPARENT, RunTrace, endpoint, job_env, parse_traceparent,
    run_trace, span_id, trace_annotations, transition_spans,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
META = {"name": "r1", "namespace": "ns", "uid": "uid-1", "creationTimestamp": "2026-01-01T00:00:00Z",
        "annotations": {ANNOTATION_TRACEPARENT: CALLER}}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_traceparent_parsing_follows_w3c() -> None:
    parsed = parse_traceparent(CALLER)
    assert parsed is not None and parsed.header() == CALLER and parsed.sampled
    assert parse_traceparent(CALLER.upper()) == parsed
    for bad in (None, "", "00-" + "0" * 32 + "-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01",
                "ff" + CALLER[2:], CALLER + "-extra", "00-xyz", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71-01"):
        assert parse_traceparent(bad) is None, bad
    assert parse_traceparent("01" + CALLER[2:] + "-future") is not None  # a later version may add fields


def test_annotations_carry_a_valid_context_only() -> None:
    assert trace_annotations(CALLER, "a=b") == {ANNOTATION_TRACEPARENT: CALLER, ANNOTATION_TRACESTATE: "a=b"}
    assert trace_annotations("garbage", "a=b") == {}
    assert trace_annotations(CALLER, "x" * 600) == {ANNOTATION_TRACEPARENT: CALLER}


def test_endpoint_from_either_variable() -> None:
    assert endpoint({}) is None
    assert endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318"}) == "http://a:4318"
    assert endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b"}) == "http://b"


def test_a_run_joins_its_callers_trace_and_an_untraced_one_gets_its_own() -> None:
    trace = run_trace(META)
    assert f"{trace.trace_id:032x}" == CALLER.split("-")[1] and f"{trace.parent_id:016x}" == CALLER.split("-")[2]
    own = run_trace({"uid": "uid-1"})
    assert own.parent_id is None and own.trace_id == run_trace({"uid": "uid-1"}).trace_id != trace.trace_id
    assert run_trace({"uid": "uid-2"}).trace_id != own.trace_id


def test_the_pod_continues_under_the_operators_attempt_span() -> None:
    trace = run_trace(META)
    env = job_env(trace, 2, ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"), "send-email")
    assert env[ENV_TRACEPARENT] == f"00-{trace.trace_id:032x}-{span_id('uid-1', 'attempt', 2):016x}-01"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318" and env["OTEL_SERVICE_NAME"] == "send-email"
    assert job_env(RunTrace("u", 1, 2, sampled=False), 1, ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), "t") == {}  # the caller did not sample it


def test_ids_depend_on_the_run_and_the_part_only() -> None:
    assert span_id("uid-1", "attempt", 1) == span_id("uid-1", "attempt", 1)
    assert len({span_id("uid-1", "attempt", 1), span_id("uid-1", "attempt", 2), span_id("uid-2", "attempt", 1),
                span_id("uid-1", "run")}) == 4


def started(attempt: int, start: float) -> AttemptRecord:
    return AttemptRecord(attempt=attempt, job_name=f"r1-{attempt}", start_time=at(start))


def ended(attempt: int, start: float, end: float, reason: str) -> AttemptRecord:
    return AttemptRecord(attempt=attempt, job_name=f"r1-{attempt}", start_time=at(start), completion_time=at(end),
                         reason=reason, message="boom" if reason == "Error" else None)


def test_a_run_that_fails_once_then_succeeds() -> None:
    trace = run_trace(META)
    run_id = span_id("uid-1", "run")
    queued = TaskRunStatus(phase=Phase.QUEUED, waiting_for=WaitingFor(reason="TaskLimit"))
    running = TaskRunStatus(phase=Phase.RUNNING, attempt=1, attempts=[started(1, 5)])
    admitted = transition_spans(META, "t", queued, running)
    assert [(s.name, s.start, s.end, s.parent_id) for s in admitted] == [
        ("kubetasks.wait", T0, at(5), run_id), ("kubetasks.admission", at(5), at(5), run_id)]
    assert admitted[0].attributes["kubetasks.waited_for"] == "TaskLimit"
    assert transition_spans(META, "t", running, running) == []  # no transition, no span

    retrying = TaskRunStatus(phase=Phase.RETRYING, attempt=1, attempts=[ended(1, 6, 9, "Error")])
    (first,) = transition_spans(META, "t", running, retrying)
    assert (first.name, first.span_id, first.start, first.end, first.error) == (
        "kubetasks.attempt", span_id("uid-1", "attempt", 1), at(6), at(9), "boom")
    assert first.trace_id == trace.trace_id and first.parent_id == run_id

    second = TaskRunStatus(phase=Phase.RUNNING, attempt=2, attempts=[ended(1, 6, 9, "Error"), started(2, 12)])
    assert transition_spans(META, "t", retrying, second) == []
    done = TaskRunStatus(phase=Phase.SUCCEEDED, attempt=2, completion_time=at(20),
                         attempts=[ended(1, 6, 9, "Error"), ended(2, 12, 20, "Succeeded")])
    attempt2, run = transition_spans(META, "t", second, done)
    assert (attempt2.span_id, attempt2.error) == (span_id("uid-1", "attempt", 2), None)
    assert (run.name, run.span_id, run.parent_id, run.start, run.end, run.error) == (
        "taskrun t", run_id, trace.parent_id, T0, at(20), None)
    assert transition_spans(META, "t", done, done) == []  # decided again after a restart: nothing twice


def test_a_run_cancelled_before_it_started_waited_all_along() -> None:
    queued = TaskRunStatus(phase=Phase.QUEUED)
    cancelled = TaskRunStatus(phase=Phase.CANCELLED, completion_time=at(30), error=ErrorInfo(message="cancelled"))
    wait, run = transition_spans(META, "t", queued, cancelled)
    assert (wait.name, wait.end, run.end, run.error) == ("kubetasks.wait", at(30), at(30), "cancelled")


def test_a_caller_that_did_not_sample_gets_no_spans() -> None:
    meta = {**META, "annotations": {ANNOTATION_TRACEPARENT: CALLER[:-2] + "00"}}
    done = TaskRunStatus(phase=Phase.SUCCEEDED, completion_time=at(2))
    assert transition_spans(meta, "t", TaskRunStatus(), done) == []


def test_with_no_endpoint_nothing_imports_opentelemetry(tmp_path) -> None:
    """No endpoint: the operator's Tracing, a pod's attempt and steps, and trigger()'s look at the
    caller's context cost no OpenTelemetry import (a fresh interpreter, so nothing was loaded before)."""
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
from kubetasks.otlp import Tracing
from kubetasks.runtime import tracing
t = Tracing(); t.configure({})
assert not t.enabled and t.job_env({}, 1, "t") == {}
with tracing.attempt_span({"TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, "a", {}) as ended:
    with tracing.step_span("s"):
        ended(None)
assert tracing.caller_annotations() == {}
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
"""
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(repo / "operator")}, timeout=60)
    assert done.returncode == 0, done.stderr


def test_trigger_carries_the_current_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from kubetasks.runtime.tracing import caller_annotations, env_annotations

    assert caller_annotations() == {}  # no current span
    with TracerProvider().get_tracer("t").start_as_current_span("caller") as span:
        context = span.get_span_context()
        notes = caller_annotations()
    flags = int(context.trace_flags)  # sampled, and OpenTelemetry's random-trace-id bit
    assert flags & 1 and notes == {ANNOTATION_TRACEPARENT: f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"}
    assert env_annotations({"TRACEPARENT": CALLER, "TRACESTATE": "k=v"}) == {
        ANNOTATION_TRACEPARENT: CALLER, ANNOTATION_TRACESTATE: "k=v"}
    assert env_annotations({}) == {}


def test_the_operators_cache_keeps_a_runs_trace_context() -> None:
    from kubetasks.controller.cache import slim_run

    body = {"metadata": {**META, "annotations": {**META["annotations"], "other": "x" * 1000,
                                                 ANNOTATION_TRACESTATE: "k=v"}},
            "spec": {"taskRef": "t"}, "status": {"phase": "Running"}}
    kept = slim_run("kubetasks.io/v1alpha1")(body)
    assert kept["metadata"]["annotations"] == {ANNOTATION_TRACEPARENT: CALLER, ANNOTATION_TRACESTATE: "k=v"}
    assert run_trace(kept["metadata"]) == run_trace(body["metadata"])
    assert "annotations" not in slim_run("kubetasks.io/v1alpha1")({"metadata": {"name": "r"}, "spec": {}})["metadata"]


def test_pods_get_the_endpoint_under_the_operators_variable() -> None:
    from kubetasks.otlp import Tracing

    whole = "http://collector:4318/v1/traces"  # a traces endpoint is the whole URL: no path is added to it
    tracing = Tracing()
    tracing.configure({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": whole})
    env = tracing.job_env(META, 1, "t")
    assert env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == whole and "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    tracing.configure({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": whole, "KUBETASKS_TRACING_POD_ENDPOINT": "http://node:4318"})
    assert tracing.job_env(META, 1, "t")["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://node:4318"
    tracing.shutdown()
