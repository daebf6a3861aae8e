"""An operator (re)starting on a namespace that holds N finished TaskRuns.

With the operator stopped, creates N TaskRuns and writes each a finished status (as if they had
run), then starts the operator and prints: how long until its informers are synced, how long
until a TaskRun created right after the start has its Job (ADDED, seen on a watch), and the
operator's RSS once it has settled with N finished runs in its store.

Usage: python bench/restart.py [N] [--threads 8]   (needs `make cluster-up`)
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.side_by_side import POD, RESOURCES, Watch, client, kube  # noqa: E402
from bench.throughput import bench_namespace, rss_mib  # noqa: E402
from tests.conftest import INSTANCE, INSTANCE_LABEL, KWOK_PLACEMENT, scrape  # noqa: E402
MINE = {INSTANCE_LABEL: INSTANCE}  # the bench operator's instance: an installed kubetasks keeps out

GROUP, VERSION = "kubetasks.io", "v1alpha1"
SYNCED = re.compile(r"informers synced")


def queue_depth(port: int) -> float | None:
    """The operator's TaskRun queue depth (its gauge is refreshed every 5 s)."""
    try:
        return next(s.value for s in scrape(port).get("kubetasks_queue_depth", []) if s.labels.get("queue") == "taskruns")
    except (OSError, StopIteration):
        return None


def main(n: int, threads: int) -> None:
    k8s = client()
    custom = k8s.client.CustomObjectsApi()
    with bench_namespace() as (ns, op, port):
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "tasks", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Task", "metadata": {"name": "noop", "labels": MINE},
            "spec": {**POD, "machine": RESOURCES, **KWOK_PLACEMENT,
                     "retention": {"ttlSecondsAfterFinished": 0, "historyLimit": 0}}})  # keep all N
        done = {"phase": "Succeeded", "attempt": 1, "startTime": "2026-01-01T00:00:00Z",
                "completionTime": "2026-01-01T00:00:01Z", "result": {"rows": 1234, "note": "x" * 200},
                "attempts": [{"attempt": 1, "jobName": "j", "reason": "Succeeded", "exitCode": 0,
                              "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:01Z"}],
                "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "done",
                                "lastTransitionTime": "2026-01-01T00:00:01Z"}]}

        def one(i: int) -> None:
            name = f"old-{i}"
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "taskruns", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskRun", "metadata": {"name": name, "labels": MINE},
                "spec": {"taskRef": "noop", "payload": {"id": i, "items": list(range(20))}}})
            custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, "taskruns", name, {"status": done})

        start = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(n)))
        print(f"{n} finished TaskRuns written in {time.monotonic() - start:.0f}s")

        job_added = Watch(kube.JOBS, ns, lambda e: (e["object"]["metadata"].get("labels") or {}).get(
            "kubetasks.io/run") if e["type"] == "ADDED" else None, lists=False)
        started = time.monotonic()
        op.start()
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "taskruns", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskRun", "metadata": {"name": "new", "labels": MINE},
            "spec": {"taskRef": "noop"}})
        synced = None
        while time.monotonic() - started < 300 and ("new" not in job_added.seen or synced is None):
            if synced is None and SYNCED.search(op.log_path.read_text(errors="replace")):
                synced = time.monotonic() - started
            time.sleep(0.05)
        job_added.wait(1, 0)
        if synced is not None:
            print(f"operator start -> informers synced: {synced:.1f}s")
        if "new" in job_added.seen:
            print(f"operator start -> the new run's Job ADDED: {job_added.seen['new'] - started:.1f}s")
        else:
            print("the new run's Job did not appear within 300s")
        deadline = time.monotonic() + 120  # settled: every run looked at once after the first list
        while time.monotonic() < deadline and queue_depth(port) != 0:
            time.sleep(0.5)
        print(f"operator RSS with {n} finished runs in its store: {rss_mib(op.proc.pid):.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=10000, help="finished TaskRuns (default 10000)")
    parser.add_argument("--threads", type=int, default=8, help="client threads writing them (default 8)")
    args = parser.parse_args()
    main(args.n, args.threads)
