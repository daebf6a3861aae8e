"""How long after a Job's POST returns its ADDED event reaches a watch, beside one kind of load.

bench/side_by_side.py finds that while TaskRuns run, most of TaskRun ADDED -> Job ADDED is the
Job's watch event arriving late after its POST returned, for every Job, not only the operator's.
This script looks for the load that does it, with no operator: in a fresh namespace it
creates N plain Jobs (8 client threads, on the kwok nodes) while one kind of load runs beside
them, and prints each Job's POST-returned -> ADDED delay (local monotonic times), per load:

  none           nothing beside the Jobs
  runs           N TaskRun creates
  runs+status    N TaskRun creates, each then patched twice on its status (as the operator does)
  runs+events    N TaskRun creates, each with three Events (about what a run brings)
  owned          each Job owned by a TaskRun, blockOwnerDeletion (OwnerReferencesPermissionEnforcement is on)
  owned-noblock  the same without blockOwnerDeletion
  slow-watcher   a Job watcher that takes 200 ms per event

Usage: python bench/job_watch_delay.py [N] [--loads none runs ...]   (needs `make cluster-up`)
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.side_by_side import KUBECONFIG, Watch, burst, create_job, pct  # noqa: E402
from tests.conftest import kubectl  # noqa: E402

os.environ.setdefault("KUBECONFIG", KUBECONFIG)
from kubetasks import kube  # noqa: E402

LOADS = ("none", "runs", "runs+status", "runs+events", "owned", "owned-noblock", "slow-watcher")


def run(ns: str, name: str) -> dict[str, Any]:
    _, body = kube.create_or_get({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
                                  "metadata": {"name": name, "namespace": ns}, "spec": {"taskRef": "noop"}})
    assert body is not None
    return body


def one_load(load: str, n: int) -> None:
    ns = f"watch-delay-{int(time.time() * 1000) % 10**8}"
    kubectl("create", "namespace", ns)
    try:
        owners: dict[str, dict[str, Any]] = {}
        if load.startswith("owned"):
            def own(name: str) -> None:
                body = run(ns, name)
                owners[name] = {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "name": name,
                                "uid": body["metadata"]["uid"], "controller": True,
                                "blockOwnerDeletion": load == "owned"}
            burst(n, 8, own, prefix="r")
        stop = threading.Event()
        if load == "slow-watcher":
            def slow() -> None:
                version = kube.list_page(kube.JOBS, ns, limit=0)["metadata"]["resourceVersion"]
                for _ in kube.watch(kube.JOBS, ns, "", version, 300):
                    if stop.wait(0.2):
                        return
            threading.Thread(target=slow, daemon=True).start()
        seen = Watch(kube.JOBS, ns, lambda e: e["object"]["metadata"]["name"] if e["type"] == "ADDED" else None,
                     lists=False)
        beside: threading.Thread | None = None
        if load.startswith("runs"):
            def runs_load(name: str) -> None:
                body = run(ns, name)
                if load == "runs+status":
                    for phase in ("Running", "Succeeded"):
                        kube.merge_patch(kube.TASKRUNS, ns, name, {"status": {"phase": phase}}, subresource="status")
                if load == "runs+events":
                    for i in range(3):
                        kube.post_event(body, "Normal", f"Probe{i}", "an Event like a run's")
            beside = threading.Thread(target=burst, args=(n, 8, runs_load), kwargs={"prefix": "r"})
            beside.start()
        created = burst(n, 8, create_job(ns, owners), prefix="r")
        if beside:
            beside.join()
        deadline = time.monotonic() + 60
        while len(seen.seen) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        seen.stop()
        stop.set()
        delay = [1000 * (seen.seen[f"job-{name}"] - returned) for name, (_, returned) in created.items()
                 if f"job-{name}" in seen.seen]
        print(f"{load:14} {len(delay)}/{n} Jobs: POST returned -> ADDED on a watch p50 {pct(delay, 50):.0f} ms, "
              f"p90 {pct(delay, 90):.0f} ms", flush=True)
    finally:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="?", type=int, default=300)
    parser.add_argument("--loads", nargs="+", choices=LOADS, default=list(LOADS))
    args = parser.parse_args()
    for load in args.loads:
        one_load(load, args.n)


if __name__ == "__main__":
    main()
