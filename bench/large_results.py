"""What a large result costs (issue 20): a 1 MB result through the object store, beside a 200 KB one
through the run's ConfigMap (the most a store-less cluster keeps: 256 KiB, so 1 MB cannot go that
way) and a small inline one (status.result), with and without a store.

Two operators of the bench's own, each in a fresh namespace: one with the local cluster's SeaweedFS
(below a prefix of its own; it archives every attempt's log too, and the outcome waits for that),
one without a store. For each case, N runs of the `big` example entrypoint (the task image, on the
real node), one at a time: the latency is TaskRun ADDED -> phase Succeeded, both seen on a watch
(local monotonic times), p50 and max over N; the added latency is the p50 beyond the small inline
result's on the same operator. The bytes kept in etcd per run are the sizes of the run's objects
as the API serves them (JSON, managedFields included: what etcd stores for a custom resource, an
upper bound for a ConfigMap's or Secret's protobuf) once it has Succeeded: its TaskRun, its
ConfigMaps (checkpoints with a ConfigMap-held result, the log's tail) and its grant Secret; Jobs
and pods, which their TTL removes, are left out.

Usage: python bench/large_results.py [--runs 5]   (needs `make cluster-up`; starts its own operators)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.side_by_side import Watch, pct  # noqa: E402
from bench.throughput import bench_namespace  # noqa: E402
from tests.conftest import apply, cluster_store_env, kubectl  # noqa: E402
from tests.integration.test_large_results import EXAMPLES, task  # noqa: E402

from kubetasks import kube  # noqa: E402

CASES = [  # (name, result bytes, with the store)
    ("inline, no store", 100, False),
    ("200 KB in the ConfigMap, no store", 200_000, False),
    ("inline, with the store", 100, True),
    ("1 MB in the store", 1_000_000, True),
]


def run_objects(ns: str, uid: str) -> dict[str, int]:
    """Bytes of each of the run's objects kept in etcd: its TaskRun, ConfigMaps and Secrets."""
    sizes: dict[str, int] = {}
    for kind in ("taskruns", "configmaps", "secrets"):
        for obj in json.loads(kubectl("get", kind, "-n", ns, "-o", "json"))["items"]:
            meta = obj["metadata"]
            owned = any(o.get("uid") == uid for o in meta.get("ownerReferences") or [])
            if meta.get("uid") == uid or owned or (meta.get("labels") or {}).get("kubetasks.io/run-uid") == uid:
                what = meta["name"].replace(meta.get("labels", {}).get("kubetasks.io/run", "\0"), "<run>")
                sizes[f"{obj['kind']} {what}"] = len(json.dumps(obj, separators=(",", ":")))
    return sizes


def measure(ns: str, size: int, runs: int, prefix: str) -> tuple[list[float], list[dict[str, int]]]:
    created = Watch(kube.TASKRUNS, ns, lambda e: e["object"]["metadata"]["name"]
                    if e["type"] == "ADDED" else None, lists=False)
    succeeded = Watch(kube.TASKRUNS, ns, lambda e: e["object"]["metadata"]["name"]
                      if (e["object"].get("status") or {}).get("phase") == "Succeeded" else None, lists=False)
    latencies, objects = [], []
    try:
        for i in range(runs):
            name = f"{prefix}-{i}"
            apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
                   "spec": {"taskRef": "big", "payload": {"bytes": size}}}, ns)
            deadline = time.monotonic() + 300
            while name not in succeeded.seen:
                phase = ((kube.get(kube.TASKRUNS, ns, name) or {}).get("status") or {}).get("phase")
                if phase in ("Failed", "TimedOut", "Cancelled") or time.monotonic() > deadline:
                    raise SystemExit(f"{ns}/{name} did not succeed ({phase})")
                time.sleep(0.1)
            latencies.append(succeeded.seen[name] - created.seen[name])
            uid = (kube.get(kube.TASKRUNS, ns, name) or {})["metadata"]["uid"]
            objects.append(run_objects(ns, uid))
    finally:
        created.stop()
        succeeded.stop()
    return latencies, objects


def main(runs: int) -> None:
    with ExitStack() as stack:
        operators: dict[bool, str] = {}
        for store in (False, True):
            ns, op, _ = stack.enter_context(bench_namespace())
            env = {"KUBETASKS_STORAGE_URL": ""}
            if store:
                env = cluster_store_env(ns)
                if not env:
                    raise SystemExit("no object store: .cluster/storage.env is missing (hack/cluster starts SeaweedFS)")
                stack.callback(_empty, env)
            op.env.update(env)
            op.start()
            apply(task("big", f"{EXAMPLES}:big"), ns)
            operators[store] = ns
        # One run each first: the image and the node warm, not measured.
        for store, ns in operators.items():
            measure(ns, 100, 1, "warm")
        rows: list[tuple[str, int, bool, list[float], list[int], dict[str, int]]] = []
        for name, size, store in CASES:
            latencies, objects = measure(operators[store], size, runs, name.split()[0].replace(",", "") + str(size))
            per_run = [sum(o.values()) for o in objects]
            rows.append((name, size, store, latencies, per_run, objects[-1]))
        base = {store: pct(lat, 50) for name, _, store, lat, _, _ in rows if name.startswith("inline")}
        print(f"\n{runs} runs per case, one at a time; created -> Succeeded on a watch")
        print(f"{'case':36} {'result':>10} {'p50 ms':>8} {'max ms':>8} {'added ms':>9} {'etcd bytes/run':>15}")
        for name, size, store, latencies, per_run, _ in rows:
            p50 = pct(latencies, 50)
            print(f"{name:36} {size:>10,} {1000 * p50:>8.0f} {1000 * max(latencies):>8.0f} "
                  f"{1000 * (p50 - base[store]):>+9.0f} {int(pct([float(b) for b in per_run], 50)):>15,}")
        print("\nthe run's objects (last run of each case), bytes as served:")
        for name, _, _, _, _, last in rows:
            print(f"  {name}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(last.items())))


def _empty(env: dict[str, str]) -> None:
    from kubetasks.blobs import from_env

    store = from_env(env)
    if store is not None:
        store.delete_prefix("")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    main(parser.parse_args().runs)
