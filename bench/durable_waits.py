"""Durable trigger-and-wait at scale (issue 21): N parents, each waiting for K children, on the
kwok nodes, in a fresh namespace with a fresh operator.

A kwok pod runs no code, so this process plays the parents' pods: when a parent's checkpoint
ConfigMap appears (the operator makes it just before the parent's first Job), it creates the K
children (``parentRun`` the parent, ``delay`` so that they end after the parent's attempt) and
then writes the ``wait`` record naming them, as ``ctx.step.batch_trigger_and_wait`` does. The
parent's kwok Job completes with no report, so the operator reads the record (the checkpoint says
the attempt waits) and the run is Waiting until its last child has finished.

Printed, from watches (local monotonic times of the events, not 1 s timestamps):
- parents that waited, and any whose pod was Pending or Running while it waited (must be 0): by
  etcd revision, which orders events of different watches (their local arrival times do not);
- the last child's Succeeded -> the parent's next attempt's Job ADDED, p50 and p95, beside
  TaskRun ADDED -> its Job ADDED for runs created directly, one at a time, after the burst
  (the same operator starting a run it was just told of);
- operator API requests per parent (its K children included) and per run.

Usage: python bench/durable_waits.py [N] [--children 5] [--threads 8]   (default N 200; needs the
local cluster; starts its own operator)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.side_by_side import MINE, POD, RESOURCES, Watch, burst, pct  # noqa: E402
from bench.throughput import api_requests, bench_namespace  # noqa: E402
from tests.conftest import KWOK_PLACEMENT, scrape  # noqa: E402

from kubetasks import kube  # noqa: E402  (bench.side_by_side has set KUBECONFIG)
from kubetasks.core.naming import LABEL_ATTEMPT, LABEL_RUN, checkpoint_name  # noqa: E402
from kubetasks.protocol import Checkpoint, configmap_key  # noqa: E402

DIRECT = 20  # runs created directly after the burst, for the latency beside the resumes
CHILD_DELAY = "3s"  # children end after their parent's attempt has (kwok completes a pod in about a second)


def create_tasks(ns: str) -> None:
    base = {**POD, "machine": RESOURCES, "ttlSecondsAfterFinished": 600, **KWOK_PLACEMENT}
    parent = {k: v for k, v in base.items() if k != "command"}
    for name, spec in (("child", base),
                       ("parent", {**parent, "entrypoint": "app:parent", "allowTrigger": ["child"],
                                   "retry": {"maxAttempts": 1}})):
        kube.create_or_get({"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task",
                            "metadata": {"name": name, "namespace": ns, "labels": MINE}, "spec": spec})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ((kube.get(kube.TASKS, ns, "parent") or {}).get("status") or {}).get(
            "conditions"):
        time.sleep(0.1)


class ParentPods:
    """Plays each parent's pod: on its checkpoint ConfigMap, its children, then its wait record."""

    def __init__(self, ns: str, children: int) -> None:
        self.ns, self.children = ns, children
        self.pool = ThreadPoolExecutor(8)
        self.done: set[str] = set()
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def seen(self, event: dict[str, Any]) -> None:
        meta = event["object"]["metadata"]
        run = (meta.get("labels") or {}).get(LABEL_RUN, "")
        owners = [o["uid"] for o in meta.get("ownerReferences") or []]
        if event["type"] != "ADDED" or not run.startswith("p-") or not owners \
                or meta["name"] != checkpoint_name(run, owners[0]):
            return
        with self.lock:
            if run in self.done:
                return
            self.done.add(run)
        self.pool.submit(self.wait_for_children, run, meta["name"])

    def wait_for_children(self, parent: str, configmap: str) -> None:
        try:
            names = [f"{parent}-c{i}" for i in range(self.children)]
            for name in names:
                kube.create_or_get({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
                                    "metadata": {"name": name, "namespace": self.ns, "labels": MINE},
                                    "spec": {"taskRef": "child", "parentRun": parent, "delay": CHILD_DELAY}})
            record = Checkpoint(key="fan-out", kind="wait", attempt=1, started_at=datetime.now(timezone.utc),
                                waiting_on=tuple(names))
            kube.merge_patch(kube.CONFIGMAPS, self.ns, configmap, {"data": {configmap_key("fan-out"): record.encode()}})
        except Exception as e:  # said in the summary, never silently
            self.errors.append(f"{parent}: {e}")


def main(n: int, children: int, threads: int) -> dict[str, Any]:
    print(f"== durable waits: {n} parents, each waiting for {children} children, on kwok nodes")
    with bench_namespace() as (ns, op, port):
        op.start()
        create_tasks(ns)
        pods = ParentPods(ns, children)
        first_seen: dict[str, float] = {}
        waiting_since: dict[str, int] = {}  # etcd revisions, from here on where events of two watches are compared
        child_done: dict[str, float] = {}
        phases: dict[str, str] = {}

        def run_event(e: dict[str, Any]) -> None:
            obj, now = e["object"], time.monotonic()
            name, phase = obj["metadata"]["name"], (obj.get("status") or {}).get("phase")
            first_seen.setdefault(name, now)
            if phase:
                phases[name] = phase
            if phase == "Waiting":
                waiting_since.setdefault(name, int(obj["metadata"]["resourceVersion"]))
            if phase in ("Succeeded", "Failed") and (obj.get("spec") or {}).get("parentRun"):
                child_done.setdefault(name, now)

        jobs: dict[tuple[str, str], float] = {}
        job_rv: dict[tuple[str, str], int] = {}
        active_pods: dict[str, list[int]] = defaultdict(list)

        def job_event(e: dict[str, Any]) -> None:
            meta = e["object"]["metadata"]
            labels = meta.get("labels") or {}
            if e["type"] == "ADDED" and labels.get(LABEL_RUN):
                key = (labels[LABEL_RUN], labels.get(LABEL_ATTEMPT, ""))
                jobs.setdefault(key, time.monotonic())
                job_rv.setdefault(key, int(meta["resourceVersion"]))

        def pod_event(e: dict[str, Any]) -> None:
            obj = e["object"]
            run = (obj["metadata"].get("labels") or {}).get(LABEL_RUN, "")
            if run.startswith("p-") and "-c" not in run and e["type"] != "DELETED" \
                    and (obj.get("status") or {}).get("phase") in ("Pending", "Running"):
                active_pods[run].append((int(obj["metadata"]["resourceVersion"]),
                                         f"{obj['metadata']['name']} {obj['status'].get('phase')} ({e['type']})"))

        watches = [Watch(kube.CONFIGMAPS, ns, lambda e: pods.seen(e), lists=False),
                   Watch(kube.TASKRUNS, ns, lambda e: run_event(e), lists=False),
                   Watch(kube.JOBS, ns, lambda e: job_event(e), lists=False),
                   Watch(kube.PODS, ns, lambda e: pod_event(e), lists=False)]
        before = api_requests(scrape(port))
        started = time.monotonic()

        def create_parent(name: str) -> None:
            kube.create_or_get({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
                                "metadata": {"name": name, "namespace": ns, "labels": MINE},
                                "spec": {"taskRef": "parent"}})

        burst(n, threads, create_parent, prefix="p-")
        parents = [f"p-{i}" for i in range(n)]
        deadline = time.monotonic() + max(600, 3 * n)
        while time.monotonic() < deadline and not all(phases.get(p) in ("Succeeded", "Failed") for p in parents):
            time.sleep(0.2)
        wall = time.monotonic() - started
        calls = api_requests(scrape(port)) - before
        direct = []  # runs created directly, one at a time: TaskRun ADDED -> its Job ADDED
        for i in range(DIRECT):
            name = f"direct-{i}"
            kube.create_or_get({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
                                "metadata": {"name": name, "namespace": ns, "labels": MINE}, "spec": {"taskRef": "child"}})
            until = time.monotonic() + 30
            while (name, "1") not in jobs and time.monotonic() < until:
                time.sleep(0.01)
            if (name, "1") in jobs and name in first_seen:
                direct.append(1000 * (jobs[(name, "1")] - first_seen[name]))
        for w in watches:
            w.stop()

    finished = [p for p in parents if phases.get(p) == "Succeeded"]
    waited = [p for p in parents if p in waiting_since]
    resumes, pods_while_waiting, wrong = [], 0, []
    for p in parents:
        last_child = max((child_done.get(f"{p}-c{i}", 0.0) for i in range(children)), default=0.0)
        if (p, "2") in jobs and last_child:
            resumes.append(1000 * (jobs[(p, "2")] - last_child))
        if p in waiting_since and (p, "2") in job_rv:
            seen = [what for rv, what in active_pods[p] if waiting_since[p] < rv < job_rv[(p, "2")]]
            pods_while_waiting += len(seen)
            wrong += [f"{p} (Waiting at revision {waiting_since[p]}, next Job at {job_rv[(p, '2')]}): {w}" for w in seen]
    runs = n * (children + 1)
    result = {
        "parents": n, "children_each": children, "succeeded": len(finished), "waited": len(waited),
        "resumed_with_attempt_2": sum(1 for p in parents if (p, "2") in jobs),
        "parent_pods_active_while_waiting": pods_while_waiting,
        "child_done_to_next_job_p50_ms": round(pct(resumes, 50)) if resumes else None,
        "child_done_to_next_job_p95_ms": round(pct(resumes, 95)) if resumes else None,
        "direct_run_added_to_job_p50_ms": round(pct(direct, 50)) if direct else None,
        "requests_per_parent": round(sum(calls.values()) / n, 1),
        "requests_per_run": round(sum(calls.values()) / runs, 2),
        "wall_s": round(wall, 1), "errors": pods.errors[:5], "pods_while_waiting": wrong[:5],
    }
    print(f"  {len(finished)}/{n} parents Succeeded in {result['wall_s']} s; {len(waited)} were seen Waiting; "
          f"{result['resumed_with_attempt_2']} resumed in a second attempt")
    print(f"  parent pods Pending or Running while their run was Waiting: {pods_while_waiting} (must be 0)"
          + "".join(f"\n    {w}" for w in wrong[:5]))
    print(f"  last child Succeeded -> parent's next Job ADDED: p50 {result['child_done_to_next_job_p50_ms']} ms, "
          f"p95 {result['child_done_to_next_job_p95_ms']} ms; beside a run created directly (one at a time, "
          f"{len(direct)} runs): TaskRun ADDED -> its Job ADDED p50 {result['direct_run_added_to_job_p50_ms']} ms")
    print(f"  operator API requests: {result['requests_per_parent']} per parent with its {children} children "
          f"({result['requests_per_run']} per run; "
          f"{', '.join(f'{k} {v / n:.1f}' for k, v in calls.most_common(6))} per parent)")
    if pods.errors:
        print(f"  the parents' stand-in pods failed {len(pods.errors)} times, e.g. {pods.errors[0]}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=200, help="parents (default 200)")
    parser.add_argument("--children", type=int, default=5, help="children each parent waits for (default 5)")
    parser.add_argument("--threads", type=int, default=8, help="client threads creating the parents (default 8)")
    args = parser.parse_args()
    main(args.n, args.children, args.threads)
