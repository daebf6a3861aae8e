"""``python -m kubetasks.controller``: runs the operator.

Environment: KUBETASKS_NAMESPACES (comma-separated; all namespaces when empty),
KUBETASKS_LIVENESS (default http://0.0.0.0:8080/healthz), KUBETASKS_METRICS_PORT (9090, 0 = off;
KUBETASKS_METRICS_BIND_ADDRESS and KUBETASKS_METRICS_CERT_DIR: controller.metrics_server),
KUBETASKS_WORKERS (32), KUBETASKS_RESYNC_SECONDS (300: every unfinished run and every Task looked at
again, from the stores, each at a random moment within that period; no request),
KUBETASKS_RELIST_SECONDS (21600: a full re-list of each kind after one to two times this, a safety
net: watches resume from their last version and re-list only when that has expired),
KUBETASKS_WATCH_SECONDS (300: the API server ends each watch after one to two times this; it resumes),
KUBETASKS_STALL_SECONDS (120: liveness fails when runs wait and none is reconciled for this long),
KUBETASKS_START_DEADLINE_SECONDS (300: an attempt whose container has not started by then fails
with the reason it could not: ImagePullBackOff, Unschedulable...),
KUBETASKS_LOG_KEEP_BYTES (16384: the end of each finished attempt's log kept in a ConfigMap owned
by the run, for `kubetasks logs` once the pod is gone; 0 keeps none; at most 921600),
KUBETASKS_LOG_BUDGET_BYTES (67108864: bytes of kept logs per namespace, past which the oldest are
deleted; 0 = no budget),
KUBETASKS_REFUSED_NAMESPACES (comma-separated: runs there fail at once, NamespaceNotAllowed; the
chart lists kube-system, kube-public, kube-node-lease and its own namespace unless allowSystemNamespaces),
KUBETASKS_INSTANCE_ID (acts only on Tasks and TaskRuns labelled kubetasks.io/instance=<id>;
without it, only on those without the label),
KUBETASKS_STORAGE_URL, _ENDPOINT, _REGION, _THRESHOLD (the object store: kubetasks.blobs; none
by default), KUBETASKS_STORAGE_SWEEP_SECONDS (300) and _SWEEP_GRACE_SECONDS (600: the blobs of runs
gone are deleted, those written within the grace kept: controller.blob_gc),
KUBETASKS_LOG_LEVEL (INFO), KUBETASKS_LEADER_ELECTION (a Lease name: with
it, replicas elect one leader and the others stand by) and KUBETASKS_LEADER_ELECTION_NAMESPACE
(the Lease's namespace; the pod's own by default).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import uuid

try:
    import kopf
except ImportError:  # `pip install kubetasks` is the SDK and the CLI only
    raise SystemExit("the kubetasks operator needs kopf: pip install 'kubetasks[operator]'") from None

from kubetasks.controller import leader, operator

LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
POD_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def main() -> None:
    level = os.environ.get("KUBETASKS_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        # kopf logs every handler call at INFO: thousands of lines an hour that say nothing.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    namespaces = operator.namespaces()
    instance = operator.instance_id()
    if instance and not LABEL_VALUE.fullmatch(instance):
        raise SystemExit(f"KUBETASKS_INSTANCE_ID={instance!r} is not a label value (63 characters at most: "
                         "letters, digits, '-', '_', '.', beginning and ending with a letter or digit)")
    liveness = os.environ.get("KUBETASKS_LIVENESS", "http://0.0.0.0:8080/healthz")
    lease = os.environ.get("KUBETASKS_LEADER_ELECTION")
    if lease:
        lease_namespace = os.environ.get("KUBETASKS_LEADER_ELECTION_NAMESPACE") or own_namespace()
        identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        leader.wait_for_leadership(lease, lease_namespace, identity, liveness)
    try:
        # standalone: kopf's peering is off; the Lease (or a single replica) keeps one operator active.
        kopf.run(clusterwide=not namespaces, namespaces=namespaces, liveness_endpoint=liveness, standalone=True)
    finally:
        if lease:
            leader.release(lease, lease_namespace, identity)


def own_namespace() -> str:
    try:
        with open(POD_NAMESPACE_FILE) as f:
            return f.read().strip()
    except OSError:
        raise SystemExit("KUBETASKS_LEADER_ELECTION_NAMESPACE is required outside a pod") from None


if __name__ == "__main__":
    main()
