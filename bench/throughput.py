"""Throughput and latency of the operator on the local cluster.

Creates N TaskRuns of a trivial Task at once and prints runs/s end to end, the latency from
creation to Running (reconcile + Job creation) and to Succeeded, the operator's reconcile time and
API requests per run (from its Prometheus metrics), and its RSS.

Usage: python bench/throughput.py [N] [--kwok]   (needs `make cluster-up`; starts its own operator)

--kwok places the pods on the cluster's kwok nodes, which complete them without running a
container: the operator and the control plane are measured at scale, not the kubelet.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import KWOK_PLACEMENT, VERSIONS, OperatorProcess, apply, free_port, get, kubectl, scrape, wait_until  # noqa: E402


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def api_requests(metrics: dict[str, list]) -> Counter:
    return Counter({f"{s.labels['method']} {s.labels['resource']}": s.value
                    for s in metrics.get("kubetasks_api_requests", []) if s.name.endswith("_total")})


def reconcile_mean_ms(metrics: dict[str, list], kind: str) -> float:
    samples = {s.name: s.value for s in metrics.get("kubetasks_reconcile_seconds", []) if s.labels.get("kind") == kind
               and s.name.endswith(("_sum", "_count"))}
    count = samples.get("kubetasks_reconcile_seconds_count", 0)
    return 1000 * samples.get("kubetasks_reconcile_seconds_sum", 0) / count if count else float("nan")


def apiserver_requests(left_out: tuple[str, ...] = ("WATCH", "CONNECT")) -> tuple[Counter, Counter]:
    """Every client's requests served by kube-apiserver so far, by verb and resource (long-running
    WATCHes left out unless asked for: each counts when it ends), and the seconds spent serving
    them, by the same keys: the control plane's side of a bench."""
    from prometheus_client.parser import text_string_to_metric_families

    text = kubectl("get", "--raw", "/metrics")
    counts: Counter = Counter()
    busy: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            verb, resource = s.labels.get("verb", ""), s.labels.get("resource", "")
            if not resource or verb in left_out:
                continue
            sub = s.labels.get("subresource")
            key = f"{verb} {resource}{'/' + sub if sub else ''}"
            if s.name == "apiserver_request_total":
                counts[key] += s.value
            elif s.name == "apiserver_request_duration_seconds_sum":
                busy[key] += s.value
    return counts, busy


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def bench_namespace() -> Iterator[tuple[str, OperatorProcess, int]]:
    """A fresh namespace with the CRDs applied, and an operator for it (not started yet) with its
    metrics port; the operator is stopped and the namespace deleted afterwards."""
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    port = free_port()
    op = OperatorProcess(Path(f"/tmp/{ns}-operator.log"), namespaces=ns, metrics_port=port)
    try:
        yield ns, op, port
    finally:
        op.stop()
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def main(n: int, kwok: bool) -> None:
    with bench_namespace() as (ns, op, port):
        op.start()
        apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "noop"},
               "spec": {"image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never", "command": ["true"],
                        "machine": {"cpu": "10m", "memory": "32Mi"}, **(KWOK_PLACEMENT if kwok else {})}}, ns)
        # The Task's Ready condition shows the operator is watching before the burst starts.
        wait_until("the operator marks the Task Ready", lambda: any(
            c["type"] == "Ready" for c in (get("task", "noop", ns).get("status") or {}).get("conditions", [])))
        before = api_requests(scrape(port))
        runs = [{"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": f"r{i}"},
                 "spec": {"taskRef": "noop"}} for i in range(n)]
        start, peak_rss = time.monotonic(), 0.0
        apply(runs, ns)
        while True:
            peak_rss = max(peak_rss, rss_mib(op.proc.pid))
            items = json.loads(kubectl("get", "taskruns", "-n", ns, "-o", "json"))["items"]
            done = [r for r in items if (r.get("status") or {}).get("phase") == "Succeeded"]
            if len(done) == n or time.monotonic() - start > max(900, 2 * n):
                break
            time.sleep(1)
        elapsed = time.monotonic() - start
        to_running = [(ts(r["status"]["startTime"]) - ts(r["metadata"]["creationTimestamp"])).total_seconds()
                      for r in done]
        to_done = [(ts(r["status"]["completionTime"]) - ts(r["metadata"]["creationTimestamp"])).total_seconds()
                   for r in done]
        print(f"runs: {len(done)}/{n} succeeded in {elapsed:.1f}s -> {len(done) / elapsed:.2f} runs/s")
        print(f"created -> Running (s, 1s resolution): median {statistics.median(to_running):.0f}, max {max(to_running):.0f}")
        print(f"created -> Succeeded (s): median {statistics.median(to_done):.0f}, max {max(to_done):.0f}")
        metrics = scrape(port)
        calls = api_requests(metrics) - before
        print(f"operator reconcile time (mean ms): TaskRun {reconcile_mean_ms(metrics, 'taskrun'):.1f}")
        print(f"operator API requests per run: {sum(calls.values()) / n:.1f} "
              f"({', '.join(f'{k} {v / n:.1f}' for k, v in calls.most_common())})")
        print(f"operator RSS: {rss_mib(op.proc.pid):.0f} MiB with {n} finished runs in its cache "
              f"(peak {peak_rss:.0f} MiB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=30, help="TaskRuns to create (default 30)")
    parser.add_argument("--kwok", action="store_true", help="run the pods on the kwok nodes")
    args = parser.parse_args()
    main(args.n, args.kwok)
