"""What a new connection to kube-apiserver costs the operator's process, with urllib3's own TLS
setup (a context built for each connection, the CA and client certificate files read into it)
and with kube.one_tls_context (one context, read once). A kept connection for comparison.

Each figure is one GET /version, N times in a row: process CPU and wall time per request. A
burst after a quiet spell opens about one connection per busy worker (kube-apiserver closes
idle ones after 90 s), so this is paid again at the start of each burst.

Usage: python bench/tls_connections.py [N]   (needs `make cluster-up`)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]
from bench.side_by_side import KUBECONFIG  # noqa: E402

os.environ.setdefault("KUBECONFIG", KUBECONFIG)
import kubernetes  # noqa: E402

from kubetasks import kube  # noqa: E402


def per_request(client: kubernetes.client.ApiClient, n: int, new_connection: bool) -> tuple[float, float]:
    """(CPU ms, wall ms) per GET /version."""
    manager = client.rest_client.pool_manager
    pool = manager.connection_from_url(client.configuration.host)
    pool.urlopen("GET", "/version")  # warm: imports, the pool itself
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        if new_connection:
            manager.clear()
            pool = manager.connection_from_url(client.configuration.host)
        assert pool.urlopen("GET", "/version").status == 200
    return 1000 * (time.process_time() - cpu) / n, 1000 * (time.perf_counter() - wall) / n


def main(n: int) -> None:
    urllib3_own = kubernetes.client.ApiClient(kube.api_client().configuration)  # as the client makes it
    rows = [("new connection, a context each (urllib3's own)", urllib3_own, True),
            ("new connection, one shared context (kube.one_tls_context)", kube.api_client(), True),
            ("kept connection", kube.api_client(), False)]
    print(f"GET /version, {n} times each: CPU and wall ms per request in this process")
    for label, client, new in rows:
        cpu, wall = per_request(client, n, new)
        print(f"  {label:60s} CPU {cpu:5.2f} ms  wall {wall:5.2f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
