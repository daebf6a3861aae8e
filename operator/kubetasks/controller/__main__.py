"""``python -m kubetasks.controller``: runs the operator.

Environment: KUBETASKS_NAMESPACES (comma-separated; all namespaces when empty),
KUBETASKS_LIVENESS (default http://0.0.0.0:8080/healthz), KUBETASKS_METRICS_PORT (9090, 0 = off),
KUBETASKS_WORKERS (8), KUBETASKS_PEERING (a kopf peering name; standalone when unset).
"""

from __future__ import annotations

import logging
import os

import kopf

from kubetasks.controller import operator  # noqa: F401  (registers the handlers)


def main() -> None:
    logging.basicConfig(level=os.environ.get("KUBETASKS_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    namespaces = operator.namespaces()
    peering = os.environ.get("KUBETASKS_PEERING")
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=os.environ.get("KUBETASKS_LIVENESS", "http://0.0.0.0:8080/healthz"),
        standalone=not peering,
        peering_name=peering,
    )


if __name__ == "__main__":
    main()
