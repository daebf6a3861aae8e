"""An idle operator, with production settings, for N minutes: what it asks the API server.

A Task and a few finished runs (on the kwok nodes) give its stores something to hold; then
nothing happens for N minutes (default 30). Prints the LISTs and WATCHes of Tasks, TaskRuns,
Jobs and kept logs' ConfigMaps in that time, by resource: the operator's own, counted by tests/apiproxy.py between it and
kube-apiserver (exact), and kube-apiserver's, from its metrics (every client's: on a shared
cluster other clients add theirs). An informer that re-lists on a timer shows LISTs here; one
that only resumes its watches shows none, and about one WATCH per 7.5 minutes per kind (the
server ends each after 5 to 10), not one a minute.

Usage: python bench/quiet.py [MINUTES]   (needs `make cluster-up`; starts its own operator)
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.throughput import api_requests, apiserver_requests, bench_namespace  # noqa: E402
from tests.apiproxy import ApiProxy  # noqa: E402
from tests.conftest import KWOK_PLACEMENT, VERSIONS, apply, get, scrape, wait_until  # noqa: E402

INFORMED = ("tasks", "taskruns", "jobs", "configmaps")  # configmaps: the kept logs' (their metadata)
RUNS = 3
# What the reflector logs when the server says a watch (or a paged list) cannot resume: 410 Gone.
EXPIRED = re.compile(r"kubetasks.informer.reflector: (\w+): (?:watch|list) expired")


def watched(counts: dict[str, float]) -> str:
    return ", ".join(f"{verb} {r} {counts.get(f'{verb} {r}', 0):.0f}" for verb in ("LIST", "WATCH") for r in INFORMED)


def main(minutes: float) -> None:
    with bench_namespace() as (ns, op, port), ApiProxy() as proxy:
        op.env["KUBECONFIG"] = str(proxy.kubeconfig)  # production defaults otherwise: no KUBETASKS_* timing set
        op.start()
        apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "noop"},
               "spec": {"image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never", "command": ["true"],
                        "machine": {"cpu": "10m", "memory": "32Mi"}, **KWOK_PLACEMENT}}, ns)
        apply([{"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": f"r{i}"},
                "spec": {"taskRef": "noop"}} for i in range(RUNS)], ns)
        for i in range(RUNS):
            wait_until(f"r{i} succeeds", lambda i=i: (get("taskrun", f"r{i}", ns).get("status") or {}).get(
                "phase") == "Succeeded", timeout=300)

        own, cluster = api_requests(scrape(port)), apiserver_requests(left_out=("CONNECT",))[0]
        start, logged = time.monotonic(), len(op.log_path.read_text(errors="replace"))
        print(f"operator idle for {minutes:g} minutes from now (namespace {ns}, log {op.log_path})", flush=True)
        time.sleep(minutes * 60)  # the measurement itself: nothing happens meanwhile
        seen = proxy.counts(since=start)
        cluster_after = apiserver_requests(left_out=("CONNECT",))[0]
        own_after = api_requests(scrape(port))
        alive = op.proc is not None and op.proc.poll() is None
        print(f"quiet {(time.monotonic() - start) / 60:.1f} min, operator {'running' if alive else 'EXITED'}")
        print(f"operator's requests (apiproxy): {watched(seen)}")
        print(f"operator's requests, all: {dict(sorted(seen.items()))}")
        print(f"operator's own count (kubetasks_api_requests_total, GET = LIST + WATCH + GET): "
              f"{dict(sorted((own_after - own).items()))}")
        print(f"kube-apiserver, every client's: {watched(cluster_after - cluster)} (0 when it restarted meanwhile)")
        gone = Counter(EXPIRED.findall(op.log_path.read_text(errors="replace")[logged:]))
        print("operator's re-lists while quiet, and the 410 Gone answers that asked for them: " + ", ".join(
            f"{r} {seen.get(f'LIST {r}', 0)} ({gone[r]})" for r in INFORMED))
        print("re-lists no 410 asked for: " + str(sum(max(0, seen.get(f"LIST {r}", 0) - gone[r]) for r in INFORMED)))
        op.stop()  # before its API server (the proxy) goes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("minutes", type=float, nargs="?", default=30, help="minutes of quiet (default 30)")
    main(parser.parse_args().minutes)
