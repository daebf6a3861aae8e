"""Throughput and latency of the operator on the local cluster.

Creates N TaskRuns of a trivial Task at once and prints runs/s end to end, the latency from
creation to Running (reconcile + Job creation) and to Succeeded, and the operator's RSS.

Usage: python bench/throughput.py [N]   (needs `make cluster-up`; starts its own operator)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import VERSIONS, OperatorProcess, apply, kubectl  # noqa: E402


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(n: int) -> None:
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    op = OperatorProcess(Path(f"/tmp/{ns}-operator.log"))
    op.start()
    try:
        apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "noop"},
               "spec": {"image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never", "command": ["true"],
                        "machine": {"cpu": "10m", "memory": "32Mi"}}}, ns)
        time.sleep(3)  # let the operator list and watch before the burst
        runs = [{"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": f"r{i}"},
                 "spec": {"taskRef": "noop"}} for i in range(n)]
        start = time.monotonic()
        apply(runs, ns)
        while True:
            items = json.loads(kubectl("get", "taskruns", "-n", ns, "-o", "json"))["items"]
            done = [r for r in items if (r.get("status") or {}).get("phase") == "Succeeded"]
            if len(done) == n or time.monotonic() - start > 900:
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
        print(f"operator RSS: {rss_mib(op.proc.pid):.0f} MiB with {n} runs in its cache")
    finally:
        op.stop()
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
