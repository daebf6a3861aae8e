"""kubetasks beside plain Jobs, on the same cluster, in one run.

N plain Jobs, then N TaskRuns of a Task with the same pod (`command: ["true"]`, the same
resources), both on the kwok nodes (which complete pods at once: the control plane and the
operator are measured, not the kubelet), created by the same client with the same parallelism.
Prints both wall times (first create to last completion, seen on a watch) and their ratio;
TaskRun create -> its Job ADDED in milliseconds (local monotonic times of the create's return
and of the watch event, not 1 s creationTimestamps); the operator's API requests per run by
verb and resource, its CPU seconds per run and its peak RSS.

Usage: python bench/side_by_side.py [N] [--threads 8]   (needs `make cluster-up`; starts its own operator)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.throughput import api_requests, apiserver_requests, bench_namespace, cpu_seconds, rss_mib  # noqa: E402
from tests.conftest import INSTANCE, INSTANCE_LABEL, KWOK_PLACEMENT, KUBECONFIG, VERSIONS, component_pid, scrape  # noqa: E402
MINE = {INSTANCE_LABEL: INSTANCE}  # the bench operator's instance: an installed kubetasks keeps out

os.environ.setdefault("KUBECONFIG", KUBECONFIG)  # before kubetasks.kube loads its configuration
from kubetasks import kube  # noqa: E402

POD = {"image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never", "command": ["true"]}
RESOURCES = {"cpu": "10m", "memory": "32Mi"}


def client() -> Any:
    import kubernetes

    kubernetes.config.load_kube_config(KUBECONFIG)
    kubernetes.client.Configuration._default.connection_pool_maxsize = 32  # type: ignore[attr-defined]
    return kubernetes


class Watch:
    """Local monotonic time of each event of interest, from a watch started before the burst.
    Raw JSON (kubetasks.kube's list and watch): decoding client models would make this process,
    not the cluster, the slow part of what it measures."""

    def __init__(self, resource: Any, namespace: str, pick: Any, lists: bool = True) -> None:
        self.seen: dict[str, float] = {}
        self.pick = pick  # event -> name to record, or None
        self.lists = lists  # count what a (re)list shows, not only events
        self._resource, self._ns = resource, namespace
        self._stop = threading.Event()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(30)

    def _run(self) -> None:
        from kubetasks import kube

        rv = None
        while not self._stop.is_set():
            try:
                if rv is None:  # (re)list: what is already there counts too, unless only events do
                    listed = kube.list_page(self._resource, self._ns, limit=0)
                    for item in listed["items"] if self.lists else ():
                        self._see({"type": "LISTED", "object": item})
                    rv = listed["metadata"]["resourceVersion"]
                self._ready.set()
                for type_, obj in kube.watch(self._resource, self._ns, "", rv, 60):
                    rv = obj["metadata"]["resourceVersion"]
                    if type_ != "BOOKMARK":
                        self._see({"type": type_, "object": obj})
                    if self._stop.is_set():
                        return
            except kube.Gone:
                rv = None
            except Exception:  # a dropped connection: resume from the last version seen
                time.sleep(0.2)

    def _see(self, event: dict[str, Any]) -> None:
        name = self.pick(event)
        if name and name not in self.seen:
            self.seen[name] = time.monotonic()

    def wait(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()


def condition(obj: dict[str, Any], type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def burst(n: int, threads: int, create: Any) -> dict[str, float]:
    """Creates n objects with ``threads`` workers; the local time each create returned."""
    returned: dict[str, float] = {}

    def one(i: int) -> None:
        name = f"x{i}"
        create(name)
        returned[name] = time.monotonic()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    return returned


CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok")


class ControlPlane:
    """What a phase of the bench cost the control plane: kube-apiserver's requests from every
    client, and the CPU seconds of each component. On this 2-core VM they share the cores with the
    operator: the bound on how fast anything can go."""

    def __init__(self) -> None:
        self.requests, self.busy = apiserver_requests()
        self.cpu = {c: cpu_seconds(component_pid(c)) for c in CONTROL_PLANE}

    def report(self, what: str, n: int) -> dict[str, float]:
        requests, busy = apiserver_requests()
        delta, serving = requests - self.requests, busy - self.busy
        cpu = {c: cpu_seconds(component_pid(c)) - v for c, v in self.cpu.items()}
        top = ", ".join(f"{k} {v / n:.2f}" for k, v in delta.most_common(8))
        # A create's mean time inside kube-apiserver (admission, etcd): a floor under any latency
        # that needs the create, whoever sends it.
        creates = ", ".join(f"{k} {1000 * serving[k] / delta[k]:.0f} ms" for k in ("POST jobs", "POST taskruns")
                            if delta[k])
        print(f"  control plane per {what}: {sum(delta.values()) / n:.1f} API requests ({top}); "
              f"apiserver serving {1000 * sum(serving.values()) / n:.0f} ms; CPU ms "
              + ", ".join(f"{c} {1000 * v / n:.0f}" for c, v in cpu.items())
              + f"; mean time in kube-apiserver: {creates}")
        return {"requests": round(sum(delta.values()) / n, 1), "cpu_ms": round(1000 * sum(cpu.values()) / n)}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main(n: int, threads: int) -> None:
    k8s = client()
    batch, custom = k8s.client.BatchV1Api(), k8s.client.CustomObjectsApi()
    with bench_namespace() as (ns, op, port):
        op.start()
        # Plain Jobs.
        done = Watch(kube.JOBS, ns, lambda e: e["object"]["metadata"]["name"]
                     if condition(e["object"], "Complete") else None)
        plane = ControlPlane()
        start = time.monotonic()
        burst(n, threads, lambda name: batch.create_namespaced_job(ns, {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"job-{name}"},
            "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 600, "template": {"spec": {
                "restartPolicy": "Never", **KWOK_PLACEMENT,
                "containers": [{"name": "task", **POD, "resources": {"requests": RESOURCES, "limits": RESOURCES}}]}}}}))
        done.wait(n, max(600, n))
        jobs_wall = max(done.seen.values(), default=start) - start
        print(f"{len(done.seen)}/{n} plain Jobs Complete after {jobs_wall:.1f}s")
        jobs_plane = plane.report("Job", n)

        # TaskRuns.
        custom.create_namespaced_custom_object("kubetasks.io", "v1alpha1", ns, "tasks", {
            "apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "noop", "labels": MINE},
            "spec": {**POD, "machine": RESOURCES, "ttlSecondsAfterFinished": 600, **KWOK_PLACEMENT}})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (custom.get_namespaced_custom_object(
                "kubetasks.io", "v1alpha1", ns, "tasks", "noop").get("status") or {}).get("conditions"):
            time.sleep(0.1)  # the operator has seen the Task: the burst measures runs, not start-up
        before, cpu_before = api_requests(scrape(port)), cpu_seconds(op.proc.pid)
        job_added = Watch(kube.JOBS, ns, lambda e: (e["object"]["metadata"].get("labels") or {}).get(
            "kubetasks.io/run") if e["type"] == "ADDED" else None, lists=False)

        run_added = Watch(kube.TASKRUNS, ns, lambda e: e["object"]["metadata"]["name"]
                          if e["type"] == "ADDED" else None, lists=False)
        succeeded = Watch(kube.TASKRUNS, ns, lambda e: e["object"]["metadata"]["name"]
                          if (e["object"].get("status") or {}).get("phase") == "Succeeded" else None)
        peak = [0.0]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], rss_mib(op.proc.pid))
                time.sleep(0.2)

        threading.Thread(target=sample, daemon=True).start()
        plane = ControlPlane()
        start = time.monotonic()
        created = burst(n, threads, lambda name: custom.create_namespaced_custom_object(
            "kubetasks.io", "v1alpha1", ns, "taskruns", {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
                                                         "metadata": {"name": name, "labels": MINE}, "spec": {"taskRef": "noop"}}))
        succeeded.wait(n, max(900, 2 * n))
        job_added.wait(n, 10)
        sampling.set()
        runs_wall = max(succeeded.seen.values(), default=start) - start
        latency = [1000 * (job_added.seen[r] - created[r]) for r in created if r in job_added.seen]
        calls = api_requests(scrape(port)) - before
        cpu = cpu_seconds(op.proc.pid) - cpu_before
        print(f"{len(succeeded.seen)}/{n} TaskRuns Succeeded after {runs_wall:.1f}s")
        runs_plane = plane.report("TaskRun (operator included)", n)
        print(f"ratio TaskRuns/Jobs: {runs_wall / jobs_wall:.2f}x  ({n} each, {threads} client threads); "
              f"control-plane requests {runs_plane['requests'] / jobs_plane['requests']:.2f}x, "
              f"CPU {runs_plane['cpu_ms'] / max(jobs_plane['cpu_ms'], 1):.2f}x")
        if latency:
            print(f"TaskRun created -> Job ADDED (ms): p50 {pct(latency, 50):.0f}, p90 {pct(latency, 90):.0f}, "
                  f"p99 {pct(latency, 99):.0f}, max {max(latency):.0f}  ({len(latency)} runs)")
        reaction = [1000 * (job_added.seen[r] - run_added.seen[r]) for r in created
                    if r in job_added.seen and r in run_added.seen]
        if reaction:
            # What the operator adds: from the TaskRun's watch event (what the operator sees too)
            # to its Job's, a Job create and a watch delivery included.
            print(f"TaskRun ADDED -> Job ADDED, both on a watch (ms): p50 {pct(reaction, 50):.0f}, "
                  f"p90 {pct(reaction, 90):.0f}, p99 {pct(reaction, 99):.0f}")
        print(f"operator API requests per run: {sum(calls.values()) / n:.2f} "
              f"({', '.join(f'{k} {v / n:.2f}' for k, v in calls.most_common())})")
        print(f"operator CPU per run: {1000 * cpu / n:.1f} ms; peak RSS {peak[0]:.0f} MiB")
        print(json.dumps({"n": n, "jobs_s": round(jobs_wall, 2), "taskruns_s": round(runs_wall, 2),
                          "ratio": round(runs_wall / jobs_wall, 2),
                          "p50_ms": round(pct(latency, 50)) if latency else None,
                          "p99_ms": round(pct(latency, 99)) if latency else None,
                          "requests_per_run": round(sum(calls.values()) / n, 2),
                          "cpu_ms_per_run": round(1000 * cpu / n, 1), "peak_rss_mib": round(peak[0])}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=50, help="Jobs and TaskRuns to create (default 50)")
    parser.add_argument("--threads", type=int, default=8, help="client threads creating them (default 8)")
    args = parser.parse_args()
    main(args.n, args.threads)
