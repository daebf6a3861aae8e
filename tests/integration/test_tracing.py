"""Tracing end to end on the real cluster, against a real OTLP receiver: Jaeger's all-in-one
(hack/cluster/build.sh jaeger), in memory, its OTLP/HTTP port on the node's address so task pods
reach it, its query API on loopback (about 40 s).

A function of this test process, in a span of its own, triggers a task with steps that fails once:
the caller's span, the operator's run, wait, admission and attempt spans, and the pods' attempt
and step spans arrive under one trace id, each under its parent. A run of an operator with no
endpoint carries its caller's context all the same, and its Job gets no tracing environment.
``kubetasks dev`` running the same task on this machine gives the same trace.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetasks.core.naming import LABEL_RUN_UID
from kubetasks.core.tracing import ANNOTATION_TRACEPARENT, span_id
from tests.conftest import (
    CACHE, INSTANCE, REPO, REQUIRE_CLUSTER, VERSIONS, OperatorProcess, apply, free_port, get, kubectl, node_ip,
    wait_until,
)
from tests.integration.test_dev import dev_log, stop
from tests.integration.test_runtime import sdk_task
from tests.integration.test_taskruns import FINISHED, wait_phase

pytestmark = pytest.mark.cluster
JAEGER = CACHE / "bin" / f"jaeger-{VERSIONS['JAEGER_VERSION']}" / "jaeger"
ENTRYPOINT = "kubetasks_examples.traced:traced"


@dataclass
class Jaeger:
    otlp: str  # http://<node address>:<port>, where this host and task pods send spans
    query: str  # http://127.0.0.1:<port>, the query API

    def trace(self, trace_id: str, processes: bool = False) -> list[dict[str, Any]]:
        """The spans Jaeger holds for ``trace_id`` (none yet: []); with ``processes``, each with
        its process (its ``serviceName``) under ``"process"``."""
        try:
            with urllib.request.urlopen(f"{self.query}/api/traces/{trace_id}", timeout=5) as r:
                data = json.load(r)["data"]
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return []
            raise
        return [{**s, "process": t["processes"][s["processID"]]} if processes else s for t in data for s in t["spans"]]

    def counted(self, trace_id: str, wanted: dict[str, int]) -> list[dict[str, Any]]:
        """The trace's spans, if it holds exactly ``wanted`` of each name; else AssertionError
        (for wait_until: it asks again)."""
        spans = self.trace(trace_id)
        counts = {n: sum(s["operationName"] == n for s in spans) for n in wanted}
        assert counts == wanted, counts
        return spans


@pytest.fixture(scope="module")
def jaeger(cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    if not JAEGER.exists():
        problem = f"no Jaeger at {JAEGER}: run hack/cluster/build.sh jaeger"
        if REQUIRE_CLUSTER:
            pytest.fail(f"CI requires the OTLP receiver: {problem}")
        pytest.skip(problem)
    host, home = node_ip(), tmp_path_factory.mktemp("jaeger")
    with socket.create_server((host, 0)) as s:
        otlp_port = s.getsockname()[1]
    query_port, query_grpc = free_port(), free_port()
    config = {  # the all-in-one's pipeline with an in-memory store, on ports of its own, no telemetry
        "service": {"extensions": ["jaeger_storage", "jaeger_query"],
                    "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                             "exporters": ["jaeger_storage_exporter"]}},
                    "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}}},
        "extensions": {"jaeger_storage": {"backends": {"memory": {"memory": {"max_traces": 10000}}}},
                       # enable_tracing: its own spans would go to localhost:4317, where nothing
                       # listens, and its shutdown would wait on their export (27 s once, past the 20 below)
                       "jaeger_query": {"enable_tracing": False, "storage": {"traces": "memory"},
                                        "http": {"endpoint": f"127.0.0.1:{query_port}"},
                                        "grpc": {"endpoint": f"127.0.0.1:{query_grpc}"}}},
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"{host}:{otlp_port}"}}}},
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memory"}},
    }
    (home / "config.yaml").write_text(yaml.safe_dump(config))
    log = open(home / "jaeger.log", "ab")
    proc = subprocess.Popen([str(JAEGER), "--config", str(home / "config.yaml")], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    receiver = Jaeger(f"http://{host}:{otlp_port}", f"http://127.0.0.1:{query_port}")
    try:
        wait_until("Jaeger's query API", lambda: proc.poll() is None and _answers(f"{receiver.query}/api/services"),
                   timeout=60)
        yield receiver
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        print(f"jaeger log: {home / 'jaeger.log'}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (OSError, urllib.error.URLError):
        return False


@pytest.fixture(scope="module")
def traced_process(crds: None, jaeger: Jaeger, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[str, OperatorProcess]]:
    """An operator instance of its own that exports to Jaeger: its instance id and process."""
    instance = f"{INSTANCE}-tr-{uuid.uuid4().hex[:6]}"
    proc = OperatorProcess(tmp_path_factory.mktemp("traced") / "operator.log", metrics_port=free_port(),
                           env={"KUBETASKS_INSTANCE_ID": instance, "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp,
                                "OTEL_BSP_SCHEDULE_DELAY": "200"})  # ms: spans leave within the test's patience
    proc.start()
    yield instance, proc
    proc.stop()
    print(f"traced operator log: {proc.log_path}")


@pytest.fixture
def traced_operator(traced_process: tuple[str, OperatorProcess]) -> str:
    if traced_process[1].proc is None or traced_process[1].proc.poll() is not None:
        traced_process[1].start()  # a test killed it
    return traced_process[0]


def caller_tracer(endpoint: str | None) -> Any:
    """A tracer of this process, exporting to ``endpoint`` (None: exporting nothing)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "test-caller"}))
    if endpoint:
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    return provider.get_tracer("tests.tracing")


def trigger_in_span(tracer: Any, namespace: str, instance: str, payload: dict[str, Any],
                    monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, str]:
    """Triggers the traced task inside a span of ``tracer``: (run name, trace id, the span's
    traceparent header)."""
    from kubetasks import protocol
    from kubetasks.runtime import trigger

    monkeypatch.setenv(protocol.ENV_INSTANCE, instance)  # the run is that operator's
    with tracer.start_as_current_span("handle request") as span:
        handle = trigger("traced", payload, namespace=namespace)
        context = span.get_span_context()
    header = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    return handle.id, f"{context.trace_id:032x}", header


def jobs_env(namespace: str, uid: str) -> list[dict[str, str]]:
    jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-l", f"{LABEL_RUN_UID}={uid}", "-o", "json"))["items"]
    return [{e["name"]: e.get("value", "") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
            for job in jobs]


def test_a_triggered_task_joins_its_callers_trace(namespace: str, traced_operator: str, jaeger: Jaeger,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    apply(sdk_task("traced", ENTRYPOINT, retry={"maxAttempts": 2, "minDelay": "1s", "maxDelay": "1s"}), namespace,
          traced_operator)
    name, trace_id, header = trigger_in_span(caller_tracer(jaeger.otlp), namespace, traced_operator,
                                             {"fail_once": True}, monkeypatch)
    caller = header.split("-")[2]
    done = wait_phase(namespace, name, FINISHED, timeout=120)
    assert done["phase"] == "Succeeded" and done["attempt"] == 2, done
    run = get("taskrun", name, namespace)
    uid = run["metadata"]["uid"]
    assert run["metadata"]["annotations"][ANNOTATION_TRACEPARENT] == header
    envs = {int(e["KUBETASKS_ATTEMPT"]): e for e in jobs_env(namespace, uid)}
    assert envs[2]["TRACEPARENT"] == f"00-{trace_id}-{span_id(uid, 'attempt', 2):016x}-01", envs[2]
    assert envs[2]["OTEL_EXPORTER_OTLP_ENDPOINT"] == jaeger.otlp

    first, pod1 = failed_once_trace(jaeger, trace_id, caller, uid)
    tags = {t["key"]: t["value"] for t in first["tags"]}
    assert tags["otel.status_code"] == "ERROR" and tags["kubetasks.attempt"] == 1, tags
    pod_tags = {t["key"]: t["value"] for t in pod1["tags"]}
    assert pod_tags["otel.status_code"] == "ERROR" and "on purpose" in pod_tags["otel.status_description"]


def failed_once_trace(jaeger: Jaeger, trace_id: str, caller: str, uid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Waits for the whole trace of a traced run that failed once (``fail_once``) and asserts its
    spans hang as docs/tracing.md says; attempt 1's span from the operator's side and the pod's."""
    wanted = {"handle request": 1, "taskrun traced": 1, "kubetasks.wait": 1, "kubetasks.admission": 1,
              "kubetasks.attempt": 2, "task traced": 2, "step fetch": 1, "step total": 1}
    spans = wait_until(f"the spans of trace {trace_id} in Jaeger", lambda: jaeger.counted(trace_id, wanted),
                       timeout=60)
    by_id = {s["spanID"]: s for s in spans}

    def parent(span: dict[str, Any]) -> dict[str, Any] | None:
        refs = [r for r in span.get("references") or [] if r["refType"] == "CHILD_OF"]
        assert all(r["traceID"] == trace_id for r in refs), refs
        return by_id.get(refs[0]["spanID"]) if refs else None

    def named(name: str) -> list[dict[str, Any]]:
        return sorted((s for s in spans if s["operationName"] == name), key=lambda s: s["startTime"])

    assert all(s["traceID"] == trace_id for s in spans)
    (root,) = named("taskrun traced")
    assert parent(root)["operationName"] == "handle request" and root["references"][0]["spanID"] == caller
    for operator_span in named("kubetasks.wait") + named("kubetasks.admission") + named("kubetasks.attempt"):
        assert parent(operator_span) is root, operator_span["operationName"]
    first, second = named("kubetasks.attempt")
    assert (first["spanID"], second["spanID"]) == (f"{span_id(uid, 'attempt', 1):016x}", f"{span_id(uid, 'attempt', 2):016x}")
    pod1, pod2 = named("task traced")
    assert parent(pod1) is first and parent(pod2) is second  # each pod's attempt under the operator's
    (fetch,), (total,) = named("step fetch"), named("step total")
    assert parent(fetch) is pod1 and parent(total) is pod2  # attempt 2 skipped the step attempt 1 completed
    return first, pod1


def test_kubetasks_dev_traces_as_the_operator_does(namespace: str, jaeger: Jaeger, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The same task, run by ``kubetasks dev`` on this machine with no Job: the same trace, the
    run's spans from the CLI (service kubetasks-dev), the attempts' from their processes."""
    instance = f"dev-tr-{uuid.uuid4().hex[:6]}"
    log = (tmp_path / "dev.log").open("w+")
    dev = subprocess.Popen([sys.executable, "-m", "kubetasks.cli.main", "dev", "kubetasks_examples.traced",
                            "--instance", instance, "-n", namespace], cwd=REPO / "examples" / "python",
                           stdout=log, stderr=subprocess.STDOUT,
                           env={**os.environ, "PYTHONPATH": str(REPO / "operator"),
                                "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp, "OTEL_BSP_SCHEDULE_DELAY": "200"})
    try:
        wait_until("the dev instance's Task", lambda: "traced" in kubectl(
            "get", "tasks", "-n", namespace, "-l", f"kubetasks.io/instance={instance}", "-o", "name", check=False))
        name, trace_id, header = trigger_in_span(caller_tracer(jaeger.otlp), namespace, instance, {"fail_once": True},
                                                 monkeypatch)
        done = wait_phase(namespace, name, FINISHED, timeout=120)
        assert done["phase"] == "Succeeded" and done["attempt"] == 2, (done, dev_log(log))
        uid = get("taskrun", name, namespace)["metadata"]["uid"]
        assert jobs_env(namespace, uid) == []  # run here, not by an operator
        first, pod1 = failed_once_trace(jaeger, trace_id, header.split("-")[2], uid)
        services = {s["operationName"]: s["process"]["serviceName"] for s in jaeger.trace(trace_id, processes=True)}
        assert services["taskrun traced"] == services["kubetasks.attempt"] == "kubetasks-dev", services
        assert services["task traced"] == "traced", services
    finally:
        stop(dev)
    assert dev.returncode == 0, dev_log(log)


def test_an_operator_with_no_endpoint_adds_nothing(namespace: str, operator: OperatorProcess, jaeger: Jaeger,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    apply(sdk_task("traced", ENTRYPOINT), namespace)
    name, trace_id, header = trigger_in_span(caller_tracer(None), namespace, INSTANCE, {}, monkeypatch)
    done = wait_phase(namespace, name, FINISHED, timeout=120)
    assert done["phase"] == "Succeeded", done
    run = get("taskrun", name, namespace)
    assert run["metadata"]["annotations"][ANNOTATION_TRACEPARENT] == header  # carried all the same
    (env,) = jobs_env(namespace, run["metadata"]["uid"])
    assert not {"TRACEPARENT", "TRACESTATE", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_SERVICE_NAME"} & set(env), env
    assert jaeger.trace(trace_id) == []  # neither the operator nor the pod exported a span


def test_kubetasks_run_carries_traceparent(namespace: str, traced_operator: str, jaeger: Jaeger,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.integration.test_cli import cli

    apply(sdk_task("traced", ENTRYPOINT), namespace, traced_operator)
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    monkeypatch.setenv("TRACEPARENT", f"00-{trace_id}-{caller}-01")  # OpenTelemetry's environment carrier
    done = cli("run", "traced", "-n", namespace, "--wait", "--timeout", "120")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    name = out.split()[0].removeprefix("taskrun/")
    assert get("taskrun", name, namespace)["metadata"]["annotations"][ANNOTATION_TRACEPARENT] == \
        f"00-{trace_id}-{caller}-01"

    def run_span() -> dict[str, Any] | None:
        roots = [s for s in jaeger.trace(trace_id) if s["operationName"] == "taskrun traced"]
        assert len(roots) <= 1, roots
        return roots[0] if roots else None

    root = wait_until("the run's span under the CLI caller's", run_span, timeout=60)
    assert root["references"][0]["spanID"] == caller



def test_a_child_triggered_in_a_step_hangs_under_that_step(namespace: str, traced_operator: str, jaeger: Jaeger,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    apply(sdk_task("traced", ENTRYPOINT, allowTrigger=["traced"]), namespace, traced_operator)
    name, trace_id, _ = trigger_in_span(caller_tracer(jaeger.otlp), namespace, traced_operator, {"child": True},
                                        monkeypatch)
    parent = wait_phase(namespace, name, FINISHED, timeout=120)
    assert parent["phase"] == "Succeeded", parent
    child_name = parent["result"]["child"]
    assert wait_phase(namespace, child_name, FINISHED, timeout=120)["phase"] == "Succeeded"
    assert get("taskrun", child_name, namespace)["metadata"]["annotations"][ANNOTATION_TRACEPARENT].split("-")[1] \
        == trace_id  # the step's context, carried by trigger() in the pod

    def arrived() -> list[dict[str, Any]]:
        spans = jaeger.trace(trace_id)
        assert sum(s["operationName"] == "taskrun traced" for s in spans) == 2, [s["operationName"] for s in spans]
        return spans

    spans = wait_until("the parent's and the child's runs in one trace", arrived, timeout=60)
    by_id = {s["spanID"]: s for s in spans}
    (notify,) = [s for s in spans if s["operationName"] == "step notify"]
    runs = [s for s in spans if s["operationName"] == "taskrun traced"]
    parents = sorted(by_id[s["references"][0]["spanID"]]["operationName"] for s in runs)
    assert parents == ["handle request", "step notify"], parents
    (child_run,) = [s for s in runs if s["references"][0]["spanID"] == notify["spanID"]]
    assert {t["key"]: t["value"] for t in child_run["tags"]}["kubetasks.run"] == child_name


def test_an_operator_killed_mid_run_emits_each_span_once(namespace: str, traced_process: tuple[str, OperatorProcess],
                                                         jaeger: Jaeger, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILLed while the attempt runs, its wait and admission already exported: the restarted
    operator decides the run again from its status and Jobs and adds the attempt and the run,
    with the ids they were always to have, and nothing twice."""
    instance, proc = traced_process
    apply(sdk_task("traced", ENTRYPOINT), namespace, instance)
    name, trace_id, _ = trigger_in_span(caller_tracer(jaeger.otlp), namespace, instance, {"seconds": 8}, monkeypatch)
    wait_phase(namespace, name, "Running", timeout=60)
    wait_until("the wait and admission spans", lambda: {"kubetasks.wait", "kubetasks.admission"}
               <= {s["operationName"] for s in jaeger.trace(trace_id)}, timeout=30)
    proc.restart()  # SIGKILL, then a new process
    done = wait_phase(namespace, name, FINISHED, timeout=120)
    assert done["phase"] == "Succeeded" and done["attempt"] == 1, done
    uid = get("taskrun", name, namespace)["metadata"]["uid"]
    wanted = {"handle request": 1, "taskrun traced": 1, "kubetasks.wait": 1, "kubetasks.admission": 1,
              "kubetasks.attempt": 1, "task traced": 1, "step fetch": 1, "step total": 1}
    spans = wait_until(f"the spans of trace {trace_id}", lambda: jaeger.counted(trace_id, wanted), timeout=60)
    ids = {s["operationName"]: s["spanID"] for s in spans}
    assert (ids["taskrun traced"], ids["kubetasks.attempt"]) == (f"{span_id(uid, 'run'):016x}",
                                                                 f"{span_id(uid, 'attempt', 1):016x}")
    pod = next(s for s in spans if s["operationName"] == "task traced")
    assert pod["references"][0]["spanID"] == ids["kubetasks.attempt"]
