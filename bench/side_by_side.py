"""kubetasks beside plain Jobs, on the same cluster, in one run, and issue 17 item 10's targets.

For each burst size N (50, 300 and 1000 unless given), in a fresh namespace with its own
operator: N TaskRuns created with the operator stopped (then deleted: the API server's own create
rate), N plain Jobs, then N TaskRuns of a Task with the same pod (`command: ["true"]`, the same
resources), all on the kwok nodes (which complete pods at once: the control plane and the
operator are measured, not the kubelet), created by the same client (kubetasks.kube) with the
same parallelism. Prints both wall times (first create to last completion, seen on a watch) and
their ratio; each plain Job POST's round trip; TaskRun ADDED -> its Job ADDED (local monotonic
times of watch events, not 1 s creationTimestamps) and the operator's own share of it (its
kubetasks_job_start_latency_seconds histogram), its Job POST's round trip
(kubetasks_api_request_duration_seconds) and what is left, the Job's watch event, beside that
event's delay after a plain Job's POST, and how much of it kube-apiserver alone holds (from the
Job's create on a watch on etcd itself to its ADDED on a kube-apiserver watch); the operator's
API requests per run by verb and resource, its CPU per run, reconciles per run and peak RSS;
TaskRun creates/s with the operator stopped and working; beside them, what Kubernetes' own
Job controller does on the same machine (plain Job ADDED -> its Pod ADDED, and Job creates/s with
kube-controller-manager stopped and working); per phase, how long
kube-controller-manager's own client rate limiter held its requests (when that grows, the Job
controller sets the pace of both). Then a table of item
10's targets beside the values, per size, with ok/FAIL. The targets are ratios within one run:
the development VM's 2 cores are shared, and absolute figures move with whatever else runs.

Usage: python bench/side_by_side.py [N ...] [--threads 8]   (needs `make cluster-up`; starts its own operator)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.throughput import api_requests, apiserver_requests, bench_namespace, cpu_seconds, rss_mib  # noqa: E402
from tests.conftest import CLUSTER_DIR, INSTANCE, INSTANCE_LABEL, KWOK_PLACEMENT, KUBECONFIG, VERSIONS, component_pid, kubectl, kubectl_run, paused, scrape  # noqa: E402
MINE = {INSTANCE_LABEL: INSTANCE}  # the bench operator's instance: an installed kubetasks keeps out

os.environ.setdefault("KUBECONFIG", KUBECONFIG)  # before kubetasks.kube loads its configuration
from kubetasks import kube  # noqa: E402

POD = {"image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never", "command": ["true"]}
RESOURCES = {"cpu": "10m", "memory": "32Mi"}
ETCD = "http://127.0.0.1:2379"  # the local cluster's etcd (hack/cluster/up.sh)


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
        self.stop()

    def stop(self) -> None:
        self._stop.set()


class EtcdWatch:
    """Local monotonic time at which each object created under an etcd key prefix reached a watch
    on etcd itself (its JSON gateway). Beside a kube-apiserver watch's time for the same object,
    what kube-apiserver adds between etcd and its watchers: reading its own watch on etcd, then
    its watch cache."""

    def __init__(self, prefix: str) -> None:
        self.seen: dict[str, float] = {}
        key = prefix.encode()
        end = key[:-1] + bytes([key[-1] + 1])  # the prefix's range
        request = {"create_request": {"key": base64.b64encode(key).decode(),
                                      "range_end": base64.b64encode(end).decode()}}
        self._stream = urllib.request.urlopen(urllib.request.Request(
            f"{ETCD}/v3/watch", data=json.dumps(request).encode()), timeout=3600)
        self._stream.readline()  # etcd's "created": the watch is on before the burst
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for line in self._stream:
                now = time.monotonic()
                for event in json.loads(line).get("result", {}).get("events") or []:
                    kv = event.get("kv") or {}
                    if kv.get("create_revision") == kv.get("mod_revision"):  # a create, not an update
                        self.seen.setdefault(base64.b64decode(kv["key"]).decode().rsplit("/", 1)[1], now)
        except (OSError, ValueError, AttributeError):
            pass  # stopped: closed under the reader (http.client then drops its file: AttributeError)

    def stop(self) -> None:
        self._stream.close()


def condition(obj: dict[str, Any], type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def burst(n: int, threads: int, create: Any, prefix: str = "x") -> dict[str, tuple[float, float]]:
    """Creates n objects with ``threads`` workers; by name, the local times each create was sent
    and returned."""
    times: dict[str, tuple[float, float]] = {}

    def one(i: int) -> None:
        name = f"{prefix}{i}"
        sent = time.monotonic()
        create(name)
        times[name] = (sent, time.monotonic())

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    return times


def rate(times: dict[str, tuple[float, float]]) -> float:
    """Creates a second, first sent to last returned."""
    return len(times) / max(1e-9, max(r for _, r in times.values()) - min(s for s, _ in times.values()))


def round_trips(times: dict[str, tuple[float, float]]) -> list[float]:
    return [1000 * (r - s) for s, r in times.values()]


CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok")


class ControlPlane:
    """What a phase of the bench cost the control plane: kube-apiserver's requests from every
    client, and the CPU seconds of each component. On this 2-core VM they share the cores with the
    operator: the bound on how fast anything can go."""

    def __init__(self) -> None:
        self.requests, self.busy = apiserver_requests()
        self.cpu = {c: cpu_seconds(component_pid(c)) for c in CONTROL_PLANE}
        self.throttled = controller_manager_throttled()

    def report(self, what: str, n: int) -> dict[str, float]:
        requests, busy = apiserver_requests()
        delta, serving = requests - self.requests, busy - self.busy
        cpu = {c: cpu_seconds(component_pid(c)) - v for c, v in self.cpu.items()}
        throttled = controller_manager_throttled() - self.throttled
        top = ", ".join(f"{k} {v / n:.2f}" for k, v in delta.most_common(8))
        # A write's mean time inside kube-apiserver (admission, etcd): a floor under any latency
        # that needs it, whoever sends it.
        writes = ("POST jobs", "POST taskruns", "PATCH taskruns/status")
        writes_ms = ", ".join(f"{k} {1000 * serving[k] / delta[k]:.0f} ms" for k in writes if delta[k])
        print(f"  control plane per {what}: {sum(delta.values()) / n:.1f} API requests ({top}); "
              f"apiserver serving {1000 * sum(serving.values()) / n:.0f} ms; CPU ms "
              + ", ".join(f"{c} {1000 * v / n:.0f}" for c, v in cpu.items())
              + f"; mean time in kube-apiserver: {writes_ms}; kube-controller-manager's requests held by "
              f"its own client QPS limit {1000 * throttled / n:.0f} ms")
        return {"requests": round(sum(delta.values()) / n, 1), "cpu_ms": round(1000 * sum(cpu.values()) / n)}


def controller_manager_throttled() -> float:
    """Seconds kube-controller-manager's requests have waited on its client-side rate limiter
    (--kube-api-qps): when this grows with the burst, the Job controller, not the API server or
    the CPU, sets the pace of plain Jobs and TaskRuns' Jobs alike."""
    import ssl
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # its serving certificate is self-signed
    context.load_cert_chain(CLUSTER_DIR / "pki" / "admin.crt", CLUSTER_DIR / "pki" / "admin.key")
    with urllib.request.urlopen("https://127.0.0.1:10257/metrics", context=context, timeout=10) as response:
        text = response.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "rest_client_rate_limiter_duration_seconds_sum")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def histogram_p50(before: dict[str, list], after: dict[str, list], name: str,
                  **labels: str) -> tuple[float, int] | None:
    """The median of what a Prometheus histogram observed between two scrapes (interpolated in
    its bucket, as histogram_quantile does), and how many observations; of its series with
    ``labels``, if given."""
    def buckets(metrics: dict[str, list]) -> dict[float, float]:
        out: dict[float, float] = {}
        for s in metrics.get(name, []):
            if s.name.endswith("_bucket") and all(s.labels.get(k) == v for k, v in labels.items()):
                bound = float(s.labels["le"])
                out[bound] = out.get(bound, 0.0) + s.value
        return out

    was, now = buckets(before), buckets(after)
    cumulative = sorted((le, v - was.get(le, 0.0)) for le, v in now.items())
    total = cumulative[-1][1] if cumulative else 0
    if not total:
        return None
    low, below = 0.0, 0.0
    for le, count in cumulative:
        if count >= total / 2:
            if le == float("inf"):
                return low, int(total)
            return low + (le - low) * (total / 2 - below) / max(count - below, 1e-9), int(total)
        low, below = le, count
    return low, int(total)


def reconcile_count(metrics: dict[str, list]) -> float:
    return sum(s.value for s in metrics.get("kubetasks_reconcile_seconds", [])
               if s.name.endswith("_count") and s.labels.get("kind") == "taskrun")


def job_of_new_pod(event: dict[str, Any]) -> str | None:
    """The Job of a pod just made (its Job controller's label)."""
    labels = event["object"]["metadata"].get("labels") or {}
    return labels.get("batch.kubernetes.io/job-name") if event["type"] == "ADDED" else None


def create_job(ns: str, owners: dict[str, dict[str, Any]] | None = None) -> Any:
    """Creates Job job-NAME, owned by owners[NAME] where that is given (an ownerReference)."""
    def create(name: str) -> None:
        meta: dict[str, Any] = {"name": f"job-{name}", "namespace": ns}
        if owners and name in owners:
            meta["ownerReferences"] = [owners[name]]
        kube.create_or_get({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 600, "template": {"spec": {
                "restartPolicy": "Never", **KWOK_PLACEMENT,
                "containers": [{"name": "task", **POD, "resources": {"requests": RESOURCES, "limits": RESOURCES}}]}}}})
    return create


def create_run(ns: str) -> Any:
    def create(name: str) -> None:
        kube.create_or_get({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
                            "metadata": {"name": name, "namespace": ns, "labels": MINE}, "spec": {"taskRef": "noop"}})
    return create


def wait_no_runs(ns: str, timeout: float = 300) -> None:
    """Deletes the namespace's TaskRuns and waits until they are gone (a 429 while another
    session's CRD change reinitialises the storage is waited out)."""
    deadline = time.monotonic() + timeout
    while kubectl_run("delete", "taskruns", "--all", "-n", ns, "--wait=false").returncode:
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not delete the TaskRuns of {ns} in {timeout:.0f}s")
        time.sleep(1)
    while kube.list_page(kube.TASKRUNS, ns, limit=1)["items"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"TaskRuns of {ns} still there after {timeout:.0f}s")
        time.sleep(0.2)


def one_size(n: int, threads: int) -> dict[str, Any]:
    """Every figure of one burst size, each phase in the same namespace, one after the other."""
    with bench_namespace() as (ns, op, port):
        # TaskRun creates with no operator: the API server's own rate, the operator's load aside.
        # They are deleted (and gone) before the operator starts, so it never sees them.
        # The same watches as in the TaskRun burst below: the client's own work is the same.
        watches = [Watch(kube.JOBS, ns, lambda e: None, lists=False)] + [
            Watch(kube.TASKRUNS, ns, lambda e: None, lists=False) for _ in range(2)]
        idle = burst(n, threads, create_run(ns), prefix="idle-")
        for w in watches:
            w.stop()
        wait_no_runs(ns)
        # The same for Kubernetes' own: Job creates with kube-controller-manager stopped (no pod is
        # made), deleted before it goes on. Beside the Job burst below, with its cascade working,
        # it says what share of the create rate a controller's work leaves on this machine.
        watches = [Watch(kube.JOBS, ns, lambda e: None, lists=False) for _ in range(2)]
        with paused("kube-controller-manager"):
            idle_jobs = burst(n, threads, create_job(ns), prefix="idle-")
            kube.delete_jobs(ns, "")  # Background: gone at once, there are no pods to wait for
            while kube.list_page(kube.JOBS, ns, limit=1)["items"]:
                time.sleep(0.2)
        for w in watches:
            w.stop()
        op.start()

        # Plain Jobs.
        done = Watch(kube.JOBS, ns, lambda e: e["object"]["metadata"]["name"]
                     if condition(e["object"], "Complete") else None)
        jobs_seen = Watch(kube.JOBS, ns, lambda e: e["object"]["metadata"]["name"] if e["type"] == "ADDED" else None,
                          lists=False)
        jobs_in_etcd = EtcdWatch(f"/registry/jobs/{ns}/")
        pods_seen = Watch(kube.PODS, ns, job_of_new_pod, lists=False)
        plane = ControlPlane()
        created_jobs = burst(n, threads, create_job(ns))
        start = min(s for s, _ in created_jobs.values())
        done.wait(n, max(600, n))
        jobs_wall = max(done.seen.values(), default=start) - start
        print(f"{len(done.seen)}/{n} plain Jobs Complete after {jobs_wall:.1f}s")
        jobs_plane = plane.report("Job", n)
        jobs_seen.stop()
        pods_seen.stop()
        # The Job controller's own reaction, what TaskRun ADDED -> Job ADDED is to the operator.
        job_controller = [1000 * (pods_seen.seen[name] - t) for name, t in jobs_seen.seen.items()
                          if name in pods_seen.seen]
        # A Job's POST returned -> its ADDED on a watch: what the API server adds before anyone
        # (the operator, this bench) sees a Job, here with no TaskRun work beside it.
        delivery = [1000 * (jobs_seen.seen[f"job-{j}"] - r) for j, (_, r) in created_jobs.items()
                    if f"job-{j}" in jobs_seen.seen]
        plain_cache = [1000 * (t - jobs_in_etcd.seen[name]) for name, t in jobs_seen.seen.items()
                       if name in jobs_in_etcd.seen]

        # TaskRuns.
        kube.create_or_get({
            "apiVersion": "kubetasks.io/v1alpha1", "kind": "Task",
            "metadata": {"name": "noop", "namespace": ns, "labels": MINE},
            "spec": {**POD, "machine": RESOURCES, "ttlSecondsAfterFinished": 600, **KWOK_PLACEMENT}})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ((kube.get(kube.TASKS, ns, "noop") or {}).get("status") or {}).get(
                "conditions"):
            time.sleep(0.1)  # the operator has seen the Task: the burst measures runs, not start-up
        metrics_before, cpu_before = scrape(port), cpu_seconds(op.proc.pid)
        before = api_requests(metrics_before)
        job_of_run: dict[str, str] = {}

        def run_of_new_job(event: dict[str, Any]) -> str | None:
            meta = event["object"]["metadata"]
            run = (meta.get("labels") or {}).get("kubetasks.io/run") if event["type"] == "ADDED" else None
            if run:
                job_of_run.setdefault(run, meta["name"])
            return run

        job_added = Watch(kube.JOBS, ns, run_of_new_job, lists=False)
        pod_added = Watch(kube.PODS, ns, job_of_new_pod, lists=False)

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
        times = burst(n, threads, create_run(ns))
        start = min(s for s, _ in times.values())
        created = {name: r for name, (_, r) in times.items()}
        succeeded.wait(n, max(900, 2 * n))
        job_added.wait(n, 10)
        pod_added.stop()
        # The Job controller's reaction in this burst, beside the operator's: the same load on both.
        loaded_controller = [1000 * (pod_added.seen[j] - job_added.seen[r]) for r, j in job_of_run.items()
                             if r in job_added.seen and j in pod_added.seen]
        jobs_in_etcd.stop()
        sampling.set()
        run_cache = [1000 * (job_added.seen[r] - jobs_in_etcd.seen[j]) for r, j in job_of_run.items()
                     if r in job_added.seen and j in jobs_in_etcd.seen]
        runs_wall = max(succeeded.seen.values(), default=start) - start
        latency = [1000 * (job_added.seen[r] - created[r]) for r in created if r in job_added.seen]
        metrics_after = scrape(port)
        calls = api_requests(metrics_after) - before
        cpu = cpu_seconds(op.proc.pid) - cpu_before
        print(f"{len(succeeded.seen)}/{n} TaskRuns Succeeded after {runs_wall:.1f}s")
        runs_plane = plane.report("TaskRun (operator included)", n)
        print(f"ratio TaskRuns/Jobs: {runs_wall / jobs_wall:.2f}x  ({n} each, {threads} client threads); "
              f"control-plane requests {runs_plane['requests'] / jobs_plane['requests']:.2f}x, "
              f"CPU {runs_plane['cpu_ms'] / max(jobs_plane['cpu_ms'], 1):.2f}x")
        post = round_trips(created_jobs)
        print(f"plain Job POST round trip (ms): p50 {pct(post, 50):.0f}, p90 {pct(post, 90):.0f}, "
              f"p99 {pct(post, 99):.0f}; TaskRun POST p50 {pct(round_trips(times), 50):.0f}")
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
        if job_controller and loaded_controller:
            print(f"  Kubernetes' Job controller, Job ADDED -> its Pod ADDED, both on a watch (ms): plain Jobs "
                  f"p50 {pct(job_controller, 50):.0f}, p90 {pct(job_controller, 90):.0f}; in this burst "
                  f"p50 {pct(loaded_controller, 50):.0f}, p90 {pct(loaded_controller, 90):.0f}")
        own = histogram_p50(metrics_before, metrics_after, "kubetasks_job_start_latency_seconds")
        if own:
            print(f"operator's own event read -> Job POST sent (kubetasks_job_start_latency_seconds): "
                  f"p50 {1000 * own[0]:.0f} ms ({own[1]} first attempts)")
        job_post = histogram_p50(metrics_before, metrics_after, "kubetasks_api_request_duration_seconds",
                                 method="POST", resource="jobs")
        if reaction and own and job_post and delivery:
            # Where TaskRun ADDED -> Job ADDED goes: the operator, its Job's POST, then the Job's
            # watch event (what is left), beside that event's delay for plain Jobs alone.
            rest = pct(reaction, 50) - 1000 * (own[0] + job_post[0])
            print(f"  of its p50: operator {1000 * own[0]:.0f} ms, Job POST {1000 * job_post[0]:.0f} ms "
                  f"(kubetasks_api_request_duration_seconds), the Job's watch event after its POST ~{rest:.0f} ms "
                  f"(plain Jobs alone: p50 {pct(delivery, 50):.0f} ms)")
        if run_cache and plain_cache:
            # Who holds the Job's event: from its create on an etcd watch to its ADDED on a
            # kube-apiserver watch is kube-apiserver alone (its etcd watch, its watch cache).
            print(f"  a Job's create on an etcd watch -> its ADDED on a kube-apiserver watch (ms): "
                  f"p50 {pct(run_cache, 50):.0f}, p90 {pct(run_cache, 90):.0f} "
                  f"(plain Jobs alone: p50 {pct(plain_cache, 50):.0f}, p90 {pct(plain_cache, 90):.0f})")
        print(f"operator API requests per run: {sum(calls.values()) / n:.2f} "
              f"({', '.join(f'{k} {v / n:.2f}' for k, v in calls.most_common())})")
        reconciles = reconcile_count(metrics_after) - reconcile_count(metrics_before)
        print(f"operator CPU per run: {1000 * cpu / n:.1f} ms; {reconciles / n:.1f} reconciles per run; "
              f"peak RSS {peak[0]:.0f} MiB")
        stopped, working = rate(idle), rate(times)
        print(f"TaskRun creates/s: {stopped:.0f} with the operator stopped, {working:.0f} with it working; "
              f"plain Job creates/s: {rate(idle_jobs):.0f} with kube-controller-manager stopped, "
              f"{rate(created_jobs):.0f} with it working")
        result = {"n": n, "jobs_s": round(jobs_wall, 2), "taskruns_s": round(runs_wall, 2),
                  "ratio": round(runs_wall / jobs_wall, 2),
                  "job_post_p50_ms": round(pct(post, 50), 1),
                  "added_p50_ms": round(pct(reaction, 50)) if reaction else None,
                  "job_controller_p50_ms": round(pct(job_controller, 50)) if job_controller else None,
                  "loaded_job_controller_p50_ms": round(pct(loaded_controller, 50)) if loaded_controller else None,
                  "operator_p50_ms": round(1000 * own[0], 1) if own else None,
                  "operator_job_post_p50_ms": round(1000 * job_post[0], 1) if job_post else None,
                  "job_delivery_p50_ms": round(pct(delivery, 50), 1) if delivery else None,
                  "etcd_to_watch_p50_ms": round(pct(run_cache, 50), 1) if run_cache else None,
                  "plain_etcd_to_watch_p50_ms": round(pct(plain_cache, 50), 1) if plain_cache else None,
                  "p50_ms": round(pct(latency, 50)) if latency else None,
                  "p99_ms": round(pct(latency, 99)) if latency else None,
                  "requests_per_run": round(sum(calls.values()) / n, 2),
                  "creates_stopped_per_s": round(stopped, 1), "creates_working_per_s": round(working, 1),
                  "job_creates_per_s": round(rate(created_jobs), 1),
                  "job_creates_stopped_per_s": round(rate(idle_jobs), 1),
                  "cpu_ms_per_run": round(1000 * cpu / n, 1), "reconciles_per_run": round(reconciles / n, 1), "peak_rss_mib": round(peak[0])}
        print(json.dumps(result))
        ns_gone = ns
    kubectl("wait", "--for=delete", f"namespace/{ns_gone}", "--timeout=600s", check=False)
    return result


# Item 10's targets (issue 17): (label, how a result meets it, the target as said).
def _targets(r: dict[str, Any]) -> list[tuple[str, str, bool | None, str]]:
    added, post = r.get("added_p50_ms"), r["job_post_p50_ms"]
    kcm, loaded = r.get("job_controller_p50_ms"), r.get("loaded_job_controller_p50_ms")
    size = r["n"]
    rows: list[tuple[str, str, bool | None, str]] = [
        ("plain Job POST round trip p50", f"{post:.0f} ms", None, ""),
        ("TaskRun ADDED -> Job ADDED p50", "-" if added is None else f"{added} ms ({added / post:.1f}x)",
         None if size not in (50, 300) or added is None else added <= 2 * post, "<= 2x POST (50, 300)"),
        ("  of which the operator's own p50", "-" if r.get("operator_p50_ms") is None
         else f"{r['operator_p50_ms']:.0f} ms", None, "histogram"),
        ("  its Job's create, etcd -> kube-apiserver watch",
         "-" if r.get("etcd_to_watch_p50_ms") is None or r.get("plain_etcd_to_watch_p50_ms") is None
         else f"{r['etcd_to_watch_p50_ms']:.0f} ms (plain {r['plain_etcd_to_watch_p50_ms']:.0f})", None,
         "kube-apiserver alone"),
        ("  Job controller: Job ADDED -> Pod ADDED p50", "-" if kcm is None or loaded is None
         else f"{loaded} ms ({loaded / post:.1f}x; alone {kcm})", None, "for comparison"),
        ("all done, TaskRuns / Jobs", f"{r['ratio']:.2f}x", r["ratio"] <= 1.1, "<= 1.1x"),
        ("operator API requests per run", f"{r['requests_per_run']:.2f}", r["requests_per_run"] <= 4, "<= 4"),
        ("TaskRun creates, operator working / stopped",
         f"{r['creates_working_per_s'] / r['creates_stopped_per_s']:.0%} "
         f"({r['creates_working_per_s']:.0f}/{r['creates_stopped_per_s']:.0f} per s)",
         r["creates_working_per_s"] >= 0.8 * r["creates_stopped_per_s"], ">= 80%"),
        ("  Job creates, controllers working / stopped",
         f"{r['job_creates_per_s'] / r['job_creates_stopped_per_s']:.0%} "
         f"({r['job_creates_per_s']:.0f}/{r['job_creates_stopped_per_s']:.0f} per s)", None, "for comparison"),
    ]
    return rows


def print_targets(results: list[dict[str, Any]]) -> None:
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\nissue 17 item 10 targets (load average {' '.join(load)}, {os.cpu_count()} CPUs)")
    width = 46
    print(f"{'':{width}}" + "".join(f"{r['n']:>26}" for r in results) + "   target")
    table = [_targets(r) for r in results]
    for i, (label, *_rest) in enumerate(table[0]):
        cells = []
        for rows in table:
            _, value, ok, _ = rows[i]
            mark = "" if ok is None else (" ok" if ok else " FAIL")
            cells.append(f"{value}{mark:>5}")
        print(f"{label:{width}}" + "".join(f"{c:>26}" for c in cells) + f"   {table[0][i][3]}")


def main(sizes: list[int], threads: int) -> None:
    results = []
    for n in sizes:
        print(f"\n== {n} plain Jobs, then {n} TaskRuns")
        results.append(one_size(n, threads))
    print_targets(results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", type=int, nargs="*", default=[50, 300, 1000],
                        help="burst sizes: Jobs and TaskRuns to create in each (default 50 300 1000)")
    parser.add_argument("--threads", type=int, default=8, help="client threads creating them (default 8)")
    args = parser.parse_args()
    main(args.sizes or [50, 300, 1000], args.threads)
