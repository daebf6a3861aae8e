"""Leader election on a coordination.k8s.io Lease, so more than one operator replica can run.

kopf's peering would pause kopf's handlers but not kubetasks' own work queues, which would go
on acting on a frozen cache. So a standby does not start the operator at all: it waits for the
Lease (answering its liveness probe meanwhile). A leader that cannot renew the Lease exits at
once, as controller-runtime's managers do, and its pod comes back as a standby.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from kubetasks import kube

log = logging.getLogger(__name__)

# client-go's defaults: a dead leader is replaced within LEASE_SECONDS.
LEASE_SECONDS, RENEW_DEADLINE_SECONDS, RETRY_SECONDS = 15, 10, 2


def wait_for_leadership(name: str, namespace: str, identity: str, liveness_url: str) -> None:
    """Blocks until this process holds the Lease, then returns; a daemon thread keeps renewing
    it and ends the process if a renewal misses the deadline."""
    elected = threading.Event()

    def lead() -> None:
        elected.set()
        threading.Event().wait()  # leading lasts as long as this call: forever

    def lost() -> None:
        log.critical("lost the Lease %s/%s; exiting so that only the new leader acts", namespace, name)
        os._exit(1)

    lock = LeaseLock(name, namespace, identity)
    lock.api_instance = kubernetes.client.CoordinationV1Api(kube.api_client())
    config = electionconfig.Config(lock, LEASE_SECONDS, RENEW_DEADLINE_SECONDS, RETRY_SECONDS, lead, lost)
    logging.getLogger("leaderelection").setLevel(logging.WARNING)  # it logs every retry at INFO
    with standby_liveness(liveness_url):
        threading.Thread(target=leaderelection.LeaderElection(config).run, name="leader-election", daemon=True).start()
        log.info("standing by for the Lease %s/%s as %s", namespace, name, identity)
        elected.wait()
    log.info("acquired the Lease %s/%s: starting the operator", namespace, name)


def release(name: str, namespace: str, identity: str) -> None:
    """Hands the Lease back on a clean shutdown, so a standby takes over now, not after it expires."""
    api = kubernetes.client.CoordinationV1Api(kube.api_client())
    try:
        lease = api.read_namespaced_lease(name, namespace)
        if lease.spec and lease.spec.holder_identity == identity:
            lease.spec.holder_identity = None
            api.replace_namespaced_lease(name, namespace, lease)  # resourceVersion guards against a race
    except ApiException as e:
        log.warning("could not release the Lease %s/%s: %s", namespace, name, e.reason)


@contextlib.contextmanager
def standby_liveness(url: str) -> Iterator[None]:
    """Answers the liveness endpoint while standing by; closed before kopf binds the same port."""
    parts = urlsplit(url)

    class Healthy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200 if self.path.split("?")[0] == parts.path else 404)
            self.end_headers()
            self.wfile.write(b"standby\n")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((parts.hostname or "0.0.0.0", 80 if parts.port is None else parts.port), Healthy)
    threading.Thread(target=server.serve_forever, name="standby-liveness", daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
