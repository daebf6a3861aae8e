"""kube-apiserver's CPU per TaskRun status write, with the TaskRun CRD as the cluster has it.

The operator writes a run's status twice in its life at least (started, finished), and the API
server validates the whole object on each write: schema, CEL rules, managed fields. This writes
the status of one TaskRun N times in a row (a locked Task version with retry delays and a
machine, as a run's status holds) and prints the API server's CPU seconds per write, from
/proc. Apply another CRD (kubectl apply --server-side -f ...) and run it again to compare.

Usage: python bench/status_writes.py [N]   (needs `make cluster-up` and the CRDs; no operator)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.throughput import cpu_seconds  # noqa: E402
from tests.conftest import KUBECONFIG, component_pid, kubectl  # noqa: E402

os.environ.setdefault("KUBECONFIG", KUBECONFIG)  # before kubetasks.kube loads its configuration
from kubetasks import kube  # noqa: E402

NAMESPACE = "bench-status-writes"
STATUS = {
    "phase": "Running", "startTime": "2026-01-01T00:00:00Z",
    "taskVersion": {"version": "1.0", "specHash": "0123456789abcdef", "generation": 1, "spec": {
        "image": "python:3.12-slim", "command": ["python", "-m", "app"],
        "retry": {"maxAttempts": 3, "minDelay": "1s", "maxDelay": "30s", "factor": 2},
        "machine": {"cpu": "500m", "memory": "512Mi"}}},
}


def main(n: int) -> None:
    kubectl("create", "namespace", NAMESPACE, check=False)
    kubectl("delete", "taskrun", "-n", NAMESPACE, "--all", "--wait=true", check=False)
    kubectl("create", "-n", NAMESPACE, "-f", "-", input=json.dumps({
        "apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": "r"},
        "spec": {"taskRef": "t", "payload": {"a": 1}}}))
    pid = component_pid("kube-apiserver")
    cpu, start = cpu_seconds(pid), time.monotonic()
    for attempt in range(1, n + 1):
        kube.patch_status("taskruns", NAMESPACE, "r", {**STATUS, "attempt": attempt})
    cpu, wall = cpu_seconds(pid) - cpu, time.monotonic() - start
    run = kube.get(kube.TASKRUNS, NAMESPACE, "r")
    assert run and run["status"]["attempt"] == n, "the writes did not land"
    print(f"{n} TaskRun status writes in {wall:.1f}s: kube-apiserver CPU {1000 * cpu / n:.2f} ms per write")
    kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 600)
