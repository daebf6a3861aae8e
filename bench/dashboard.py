"""The dashboard's runs page at scale: load time in a real browser with 5,000 (and 10,000) runs.

Starts its own operator for a fresh namespace and ``kubetasks dashboard`` (the admin's kubeconfig),
creates the runs on the cluster's kwok nodes, waits until the dashboard's informers hold them all,
then loads the runs page in Debian's chromium (Playwright) LOADS times and prints the median and
p95 of the navigation's DOMContentLoaded and load times, plus the server's own time for the first
page (``serverMs`` of /api/runs). Target: a page load of 1 s or less at 5,000 runs. The namespace
is deleted afterwards.

Usage: python bench/dashboard.py [N ...] [--loads 20]   (default N: 5000; e.g. 5000 10000)
Needs `make cluster-up` and hack/chromium.sh; run it under the integration tests' lock.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from tests.conftest import KWOK_PLACEMENT, VERSIONS, create, wait_until  # noqa: E402
from tests.integration.test_dashboard import CHROMIUM, VIEWPORT, Dashboard, at  # noqa: E402
from throughput import bench_namespace  # noqa: E402

CHUNK, PARALLEL = 100, 8  # runs per kubectl create, kubectl processes at once


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def api_runs(url: str) -> dict[str, Any]:
    """/api/runs of the dashboard that printed ``url`` (its token included)."""
    with urllib.request.urlopen(at(url, "/api/runs"), timeout=30) as r:
        return json.loads(r.read())


def create_runs(ns: str, start: int, stop: int) -> None:
    """Runs r<start>..r<stop-1>, CHUNK per kubectl create, PARALLEL at once (one kubectl creates
    its objects one request after another: about 6 a second while the operator runs them)."""
    def chunk(first: int) -> None:
        create([{"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": f"r{i}"},
                 "spec": {"taskRef": "noop", "payload": {"i": i}}} for i in range(first, min(first + CHUNK, stop))], ns)

    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(chunk, range(start, stop, CHUNK)))


def measure(browser: Any, url: str, loads: int) -> tuple[list[float], list[float], int]:
    """DOMContentLoaded and load (ms from navigation start) of ``loads`` fresh loads; rows shown."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(url)  # warm: the token's cookie, the connection
    dcl, load = [], []
    for _ in range(loads):
        page.goto(url, wait_until="load")
        nav = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
        timing = json.loads(nav)
        dcl.append(timing["domContentLoadedEventEnd"] - timing["startTime"])
        load.append(timing["loadEventEnd"] - timing["startTime"])
    rows = page.locator('[data-testid="run-row"]').count()
    context.close()
    return dcl, load, rows


def report(label: str, dcl: list[float], load: list[float], rows: int) -> None:
    print(f"  {label}: DOMContentLoaded median {statistics.median(dcl):.0f} ms, p95 {p95(dcl):.0f} ms; "
          f"load median {statistics.median(load):.0f} ms, p95 {p95(load):.0f} ms ({rows} rows shown)")


def main(sizes: list[int], loads: int) -> None:
    from playwright.sync_api import sync_playwright

    with bench_namespace() as (ns, op, _), sync_playwright() as p:
        create({"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "noop"},
                "spec": {"image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never", "command": ["true"],
                         "machine": {"cpu": "10m", "memory": "32Mi"}, **KWOK_PLACEMENT}}, ns)
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        dashboard = Dashboard()  # its watch follows the runs as they are created
        try:
            url = dashboard.url()
            made = 0
            for n in sorted(sizes):
                # The runs are created while no operator runs (with one, each run's Job, pod and
                # status writes slow the creates to a few a second); the operator then lists them
                # all at its start and works through them while the pages are measured.
                op.stop()
                started = time.monotonic()
                create_runs(ns, made, n)
                made = n
                print(f"{n} runs: created in {time.monotonic() - started:.0f}s", flush=True)
                op.start()
                wait_until(f"the dashboard holds {n} runs", lambda: api_runs(url)["total"] >= n,
                           timeout=600, interval=1)
                server = [api_runs(url)["serverMs"] for _ in range(loads)]
                print(f"  /api/runs first page, server time: median {statistics.median(server):.1f} ms, "
                      f"p95 {p95(server):.1f} ms (total {api_runs(url)['total']})")
                report("runs page", *measure(browser, url, loads))
                report("runs page filtered (task=noop, phase=active)",
                       *measure(browser, url.replace("/?", "/?task=noop&phase=active&", 1), loads))
        finally:
            browser.close()
            dashboard.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", type=int, nargs="*", default=[5000], help="numbers of runs to measure at")
    parser.add_argument("--loads", type=int, default=20, help="page loads per measurement (default 20)")
    args = parser.parse_args()
    main(args.sizes, args.loads)
