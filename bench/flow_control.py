"""Flow control's cost (issue 19): N runs over K concurrency keys under ``concurrency: {perKey: P}``
beside the same N runs of a Task with no limit, each in a fresh namespace with a fresh operator.

Starts/s is measured from a watch on Jobs (local monotonic times of their ADDED events, not 1 s
creationTimestamps): (starts - 1) / (last ADDED - first ADDED). The operator's CPU per admission
is its process CPU time over the phase (as bench/side_by_side.py measures it) divided by N. The
watches show how many attempts of one key held a slot at once (Job ADDED to its pod's end, by
etcd revision): the limit holding.
Each case has a namespace and an operator of its own; the runs complete at once on the kwok nodes.
Target: the limited case starts >= 80% as many runs a second as the unlimited one. Under a limit,
starts wait for slots to free, so beside a burst that starts everything at once, starts/s
measures the limit as much as the operator: runs finished/s (first create to last Succeeded) and
the handoff (a key's pod ended, on a watch, to the key's next Job ADDED) are printed beside it.

Usage: python bench/flow_control.py [N] [--keys 10] [--per-key 5] [--threads 8]   (default N 1000;
needs the local cluster; starts its own operator)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.side_by_side import MINE, POD, RESOURCES, Watch, burst, pct  # noqa: E402
from bench.throughput import bench_namespace, cpu_seconds  # noqa: E402
from tests.conftest import KWOK_PLACEMENT, kubectl  # noqa: E402

from kubetasks import kube  # noqa: E402  (bench.side_by_side has set KUBECONFIG)

TARGET = 0.8


def create_task(ns: str, name: str, concurrency: dict[str, int] | None) -> None:
    spec: dict[str, Any] = {**POD, "machine": RESOURCES, "ttlSecondsAfterFinished": 600, **KWOK_PLACEMENT}
    if concurrency:
        spec["concurrency"] = concurrency
    kube.create_or_get({"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task",
                        "metadata": {"name": name, "namespace": ns, "labels": MINE}, "spec": spec})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ((kube.get(kube.TASKS, ns, name) or {}).get("status") or {}).get(
            "conditions"):
        time.sleep(0.1)  # the operator has seen the Task: the burst measures runs, not start-up


def key_of(name: str, keys: int) -> str:
    return f"key-{int(name.rsplit('-', 1)[1]) % keys}"


def create_keyed_run(ns: str, task: str, keys: int) -> Any:
    def create(name: str) -> None:
        kube.create_or_get({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
                            "metadata": {"name": name, "namespace": ns, "labels": MINE},
                            "spec": {"taskRef": task, "concurrencyKey": key_of(name, keys)}})
    return create


def most_at_once(started: dict[str, int], done: dict[str, int], keys: int) -> tuple[int, int]:
    """The most attempts that held a slot at once, per key and in all: from each Job's ADDED to
    its pod's end, in the order of their etcd revisions."""
    events = sorted([(t, 1, run) for run, t in started.items()] + [(t, -1, run) for run, t in done.items()
                                                                    if run in started])
    now: dict[str, int] = {}
    per_key = total = running = 0
    for _, change, run in events:
        key = key_of(run, keys)
        now[key] = now.get(key, 0) + change
        running += change
        per_key, total = max(per_key, now[key]), max(total, running)
    return per_key, total


def handoffs(started: dict[str, float], done: dict[str, float], keys: int, per_key: int) -> list[float]:
    """Milliseconds from a slot freed to the next start of its key: per key, the i-th Job beyond
    the first ``per_key`` can start once the (i - per_key)-th attempt of the key has ended. A start before that slot was freed is not a handoff."""
    out = []
    for key in {key_of(r, keys) for r in started}:
        adds = sorted(t for r, t in started.items() if key_of(r, keys) == key)
        frees = sorted(t for r, t in done.items() if key_of(r, keys) == key)
        out += [1000 * (add - free) for add, free in zip(adds[per_key:], frees) if add >= free]
    return out


def one_case(ns: str, op: Any, task: str, n: int, keys: int, threads: int, per_key: int) -> dict[str, Any]:
    """N runs of ``task`` over ``keys`` keys: starts/s, CPU per admission, the most at once."""
    added_rv: dict[str, int] = {}
    ended_rv: dict[str, int] = {}

    def run_of(event: dict[str, Any], revisions: dict[str, int]) -> str | None:
        # The etcd revision of the event too: local arrival times on two watches can be out of
        # order, revisions of one etcd are not (for counting what existed at once).
        meta = event["object"]["metadata"]
        run = (meta.get("labels") or {}).get("kubetasks.io/run")
        if run:
            revisions.setdefault(run, int(meta["resourceVersion"]))
        return run

    def pod_ended(event: dict[str, Any]) -> bool:
        return (event["object"].get("status") or {}).get("phase") in ("Succeeded", "Failed")

    job_added = Watch(kube.JOBS, ns, lambda e: run_of(e, added_rv) if e["type"] == "ADDED" else None, lists=False)
    # A slot is held from the Job's create until its attempt ends: its pod's end (the Job's
    # Complete condition comes later, after the operator may rightly have handed the slot on).
    job_done = Watch(kube.PODS, ns, lambda e: run_of(e, ended_rv) if pod_ended(e) else None)
    succeeded = Watch(kube.TASKRUNS, ns, lambda e: e["object"]["metadata"]["name"]
                      if (e["object"].get("status") or {}).get("phase") == "Succeeded" else None)
    cpu_before = cpu_seconds(op.proc.pid)
    times = burst(n, threads, create_keyed_run(ns, task, keys), prefix=f"{task}-")
    first_sent = min(s for s, _ in times.values())
    succeeded.wait(n, max(900, 2 * n))
    job_done.wait(n, 10)
    job_added.stop()
    cpu = cpu_seconds(op.proc.pid) - cpu_before
    starts = sorted(job_added.seen.values())
    span = starts[-1] - starts[0] if len(starts) > 1 else 0.0
    most_key, total = most_at_once(added_rv, ended_rv, keys)
    handed = handoffs(job_added.seen, job_done.seen, keys, per_key)
    finished = max(succeeded.seen.values(), default=first_sent) - first_sent
    waits = [1000 * (job_added.seen[r] - times[r][1]) for r in times if r in job_added.seen]
    holds = [job_done.seen[r] - t for r, t in job_added.seen.items() if r in job_done.seen]
    result = {"task": task, "n": n, "succeeded": len(succeeded.seen), "started": len(starts),
              "starts_per_s": round((len(starts) - 1) / span, 1) if span else None,
              "wall_s": round(max(succeeded.seen.values(), default=first_sent) - first_sent, 2),
              "cpu_ms_per_admission": round(1000 * cpu / n, 2),
              "created_to_job_p50_ms": round(pct(waits, 50)) if waits else None,
              "finished_per_s": round(len(succeeded.seen) / finished, 1) if finished else None,
              "handoff_p50_ms": round(pct(handed, 50)) if handed else None,
              "most_per_key": most_key, "most_in_all": total,
              "slot_hold_mean_s": round(sum(holds) / len(holds), 3) if holds else None}
    print(f"  {task}: {result['succeeded']}/{n} Succeeded in {result['wall_s']}s; {result['started']} Jobs, "
          f"{result['starts_per_s']} starts/s (Job ADDED, first to last); operator CPU per admission "
          f"{result['cpu_ms_per_admission']} ms; created -> Job ADDED p50 {result['created_to_job_p50_ms']} ms; "
          f"{result['finished_per_s']} runs finished/s; slot freed -> next start of its key p50 "
          f"{result['handoff_p50_ms']} ms ({len(handed)} handoffs); most attempts at once: {most_key} of one key, {total} in all")
    return result


def fresh_case(task: str, concurrency: dict[str, int] | None, n: int, keys: int, threads: int,
               per_key: int) -> dict[str, Any]:
    """One case in a namespace and with an operator of its own, gone before the next case: the
    second case does not share the operator or the garbage collector with the first's deletes."""
    with bench_namespace() as (ns, op, _port):
        op.start()
        create_task(ns, task, concurrency)
        result = one_case(ns, op, task, n, keys, threads, per_key)
    kubectl("wait", "--for=delete", f"namespace/{ns}", "--timeout=600s", check=False)
    return result


def main(n: int, keys: int, per_key: int, threads: int) -> dict[str, Any]:
    print(f"== flow control: {n} runs over {keys} keys, concurrency {{perKey: {per_key}}}, beside the same "
          f"runs unlimited ({threads} client threads)")
    free = fresh_case("unlimited", None, n, keys, threads, per_key)
    held = fresh_case("limited", {"perKey": per_key}, n, keys, threads, per_key)
    ratio = held["starts_per_s"] / free["starts_per_s"] if held["starts_per_s"] and free["starts_per_s"] else None
    cpu_ratio = held["cpu_ms_per_admission"] / max(free["cpu_ms_per_admission"], 1e-9)
    print(f"starts/s limited/unlimited: {'-' if ratio is None else f'{ratio:.0%}'} "
          f"({held['starts_per_s']}/{free['starts_per_s']}); target >= {TARGET:.0%}: "
          f"{'-' if ratio is None else ('ok' if ratio >= TARGET else 'FAIL')}")
    if held["finished_per_s"] and free["finished_per_s"]:
        # Under a limit, starts wait for slots to free: beside a burst that starts everything at
        # once, starts/s measures the limit as much as the operator. Runs finished/s and the
        # handoff (a freed slot to the next start) are what the operator adds.
        print(f"runs finished/s limited/unlimited: {held['finished_per_s'] / free['finished_per_s']:.0%} "
              f"({held['finished_per_s']}/{free['finished_per_s']}); slot handoff p50 {held['handoff_p50_ms']} ms")
    if held["slot_hold_mean_s"] and held["starts_per_s"]:
        # Held to its limit, a burst can start at most slots / (how long each holds one) runs a
        # second (Little's law): the share of that the operator reaches is its cost under the limit.
        allowed = keys * per_key / held["slot_hold_mean_s"]
        print(f"starts/s limited vs what perKey allows ({keys * per_key} slots / mean hold "
              f"{held['slot_hold_mean_s']:.2f} s = {allowed:.1f}/s): {held['starts_per_s'] / allowed:.0%}")
    print(f"operator CPU per admission limited/unlimited: {cpu_ratio:.2f}x "
          f"({held['cpu_ms_per_admission']}/{free['cpu_ms_per_admission']} ms)")
    limit_held = held["most_per_key"] <= per_key
    print(f"perKey {per_key} held (most attempts of one key at once: {held['most_per_key']}): "
          f"{'ok' if limit_held else 'FAIL (is the admission code merged?)'}")
    summary = {"n": n, "keys": keys, "per_key": per_key, "unlimited": free, "limited": held,
               "starts_ratio": None if ratio is None else round(ratio, 2), "cpu_ratio": round(cpu_ratio, 2),
               "limit_held": limit_held}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=1000, help="runs in each case (default 1000)")
    parser.add_argument("--keys", type=int, default=10, help="concurrency keys the runs spread over (default 10)")
    parser.add_argument("--per-key", type=int, default=5, help="the limited Task's concurrency.perKey (default 5)")
    parser.add_argument("--threads", type=int, default=8, help="client threads creating the runs (default 8)")
    args = parser.parse_args()
    main(args.n, args.keys, args.per_key, args.threads)
