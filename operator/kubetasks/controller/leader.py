"""Leader election on a coordination.k8s.io Lease, so more than one operator replica can run.

kopf's peering would pause kopf's handlers but not kubetasks' own work queues, which would go
on acting on a frozen cache. So a standby does not start the operator at all: it waits for the
Lease (answering its liveness probe meanwhile).

The decisions are client-go's (kubetasks.core.lease); this module does the I/O and the timing.
One loop per process reads and writes the Lease every RETRY_SECONDS and never ends: every error is
logged and retried, so a standby outlives any API-server outage. A leader notes, on the monotonic
clock, when it sent its last successful renewal; a watchdog thread ends the process the moment
that is more than RENEW_DEADLINE_SECONDS ago, before any other replica can see the Lease expire
(others count LEASE_SECONDS from when *they* saw it change, which is after we sent it). The pod
then comes back as a standby, as controller-runtime's managers do.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubetasks import kube
from kubetasks.core.lease import (Action, LeaseRecord, Observation, decide, observe, released, renew_overdue,
                                  request_timeout)

log = logging.getLogger(__name__)

# client-go's defaults: a dead leader is replaced within LEASE_SECONDS.
LEASE_SECONDS, RENEW_DEADLINE_SECONDS, RETRY_SECONDS = 15, 10, 2
# No single request may take the whole renew deadline: a leader whose request hangs on a dead
# connection still has time for another try.
REQUEST_TIMEOUT_SECONDS = RENEW_DEADLINE_SECONDS / 2
WATCHDOG_SECONDS = 0.5


class Conflict(Exception):
    """The Lease changed since we read it (409): another replica won the race."""


class Leases(Protocol):
    """One Lease, read and written with optimistic concurrency."""

    def get(self, timeout: float) -> tuple[LeaseRecord, str] | None:
        """The record and its resourceVersion; None when there is no Lease."""

    def create(self, record: LeaseRecord, timeout: float) -> None:
        """Raises Conflict when it exists already."""

    def replace(self, record: LeaseRecord, resource_version: str, timeout: float) -> None:
        """Raises Conflict when the Lease is no longer at ``resource_version``."""


class KubeLeases:
    """A Lease through the official client, with a timeout on every request."""

    def __init__(self, name: str, namespace: str) -> None:
        self.name, self.namespace = name, namespace
        self.api = kubernetes.client.CoordinationV1Api(_api_client())
        self._last: dict[str, Any] = {}  # the object last read: its labels and other fields survive a replace

    def get(self, timeout: float) -> tuple[LeaseRecord, str] | None:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        self._last = self.api.api_client.sanitize_for_serialization(lease)
        return LeaseRecord.from_spec(self._last.get("spec") or {}), self._last["metadata"]["resourceVersion"]

    def create(self, record: LeaseRecord, timeout: float) -> None:
        body: Any = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": self.name, "namespace": self.namespace}, "spec": record.to_spec()}
        with _conflict_on(409):
            self.api.create_namespaced_lease(self.namespace, body, _request_timeout=timeout)

    def replace(self, record: LeaseRecord, resource_version: str, timeout: float) -> None:
        last = self._last if self._last.get("metadata", {}).get("resourceVersion") == resource_version else {}
        body: Any = {**last, "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {**last.get("metadata", {}), "name": self.name, "namespace": self.namespace,
                                  "resourceVersion": resource_version},
                     "spec": {**last.get("spec", {}), **record.to_spec()}}
        with _conflict_on(409, 404):  # 404: deleted since we read it; read again
            self.api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=timeout)


@contextlib.contextmanager
def _conflict_on(*codes: int) -> Iterator[None]:
    try:
        yield
    except ApiException as e:
        if e.status in codes:
            raise Conflict(e.reason) from e
        raise


_client: kubernetes.client.ApiClient | None = None


def _api_client() -> kubernetes.client.ApiClient:
    """kube.api_client()'s configuration, without urllib3's retries: they would repeat a timed-out
    request up to 3 times, past the renew deadline. The election loop does its own retrying."""
    global _client
    if _client is None:
        config = copy.deepcopy(kube.api_client().configuration)
        config.retries = False
        _client = kube.CountingApiClient(config)
    return _client


def _exit(reason: str) -> None:
    log.critical("%s: exiting so that only the new leader acts", reason)
    os._exit(1)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Elector:
    """Runs client-go's election for one identity: ``run`` is the loop, ``watchdog`` the deadline."""

    def __init__(self, leases: Leases, identity: str, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = _utcnow, on_lost: Callable[[str], None] = _exit) -> None:
        self.leases, self.identity = leases, identity
        self.clock, self.wall, self.on_lost = clock, wall, on_lost
        self.seen: Observation | None = None
        self.renewed_at: float | None = None  # when the last successful write was *sent* (leaders only)
        self.elected = threading.Event()
        self.stopped = threading.Event()

    def step(self) -> None:
        """One read, decision and write; raises what the API raises."""
        if (timeout := self._timeout()) <= 0:
            return  # too late to renew: the watchdog ends this leader
        found = self.leases.get(timeout)
        record, version = found if found else (None, None)
        now = self.clock()
        self.seen = observe(self.seen, record, now)
        if self.elected.is_set() and (record is None or record.holder != self.identity):
            self._lose(f"the Lease is now held by {record.holder if record else 'no one (deleted)'}")
            return
        decision = decide(self.seen, self.identity, now, self.wall(), LEASE_SECONDS)
        if decision.action is Action.WAIT or decision.record is None:
            return
        timeout, sent = self._timeout(), self.clock()
        if timeout <= 0:
            return
        if version is None:
            self.leases.create(decision.record, timeout)
        else:
            self.leases.replace(decision.record, version, timeout)
        # The server wrote the record after we sent it, so others saw it change later still:
        # counting from `sent` keeps our deadline ahead of their expiry.
        self.renewed_at = sent
        self.seen = Observation(decision.record, sent)
        self.elected.set()

    def run(self) -> None:
        """The election loop: returns only when stopped, whatever the API does."""
        failing = False
        while not self.stopped.is_set():
            try:
                self.step()
            except Exception as e:
                expected = isinstance(e, (ApiException, Conflict, OSError)) or type(e).__module__.startswith("urllib3")
                (log.debug if failing else log.warning)("Lease round failed (retrying every %ss): %s: %s",
                                                        RETRY_SECONDS, type(e).__name__, e, exc_info=not expected)
                failing = True
            else:
                if failing:
                    log.info("Lease round succeeded again")
                failing = False
            self.stopped.wait(RETRY_SECONDS)

    def overdue(self) -> bool:
        return self.renewed_at is not None and renew_overdue(self.renewed_at, self.clock(), RENEW_DEADLINE_SECONDS)

    def watchdog(self) -> None:
        """Ends leadership the moment a renewal is overdue, whatever the loop is stuck in."""
        while not self.stopped.wait(WATCHDOG_SECONDS):
            if self.overdue():
                self._lose(f"no renewal of the Lease for over {RENEW_DEADLINE_SECONDS}s")

    def stop(self) -> None:
        self.stopped.set()

    def _lose(self, reason: str) -> None:
        self.stopped.set()
        self.on_lost(reason)

    def _timeout(self) -> float:
        return request_timeout(self.renewed_at, self.clock(), RENEW_DEADLINE_SECONDS, REQUEST_TIMEOUT_SECONDS)


_running: dict[tuple[str, str, str], tuple[Elector, threading.Thread]] = {}


def wait_for_leadership(name: str, namespace: str, identity: str, liveness_url: str) -> None:
    """Blocks until this process holds the Lease, then returns; the election loop keeps renewing
    it and a watchdog ends the process if a renewal misses the deadline."""
    elector = Elector(KubeLeases(name, namespace), identity)
    loop = threading.Thread(target=elector.run, name="leader-election", daemon=True)
    _running[(namespace, name, identity)] = (elector, loop)
    with standby_liveness(liveness_url, healthy=loop.is_alive):
        loop.start()
        log.info("standing by for the Lease %s/%s as %s", namespace, name, identity)
        elector.elected.wait()
    threading.Thread(target=elector.watchdog, name="leader-watchdog", daemon=True).start()
    log.info("acquired the Lease %s/%s: starting the operator", namespace, name)


def release(name: str, namespace: str, identity: str) -> None:
    """Hands the Lease back on a clean shutdown, so a standby takes over now, not after it expires."""
    running = _running.pop((namespace, name, identity), None)
    if running:  # stop renewing first: the loop would take a cleared holder for a lost Lease
        running[0].stop()
        running[1].join(timeout=REQUEST_TIMEOUT_SECONDS * 2)
    leases = KubeLeases(name, namespace)
    try:
        found = leases.get(REQUEST_TIMEOUT_SECONDS)
        if found and found[0].holder == identity:
            leases.replace(released(found[0], _utcnow()), found[1], REQUEST_TIMEOUT_SECONDS)
    except Exception as e:  # the Lease then expires on its own
        log.warning("could not release the Lease %s/%s: %s: %s", namespace, name, type(e).__name__, e)


@contextlib.contextmanager
def standby_liveness(url: str, healthy: Callable[[], bool] = lambda: True) -> Iterator[None]:
    """Answers the liveness endpoint while standing by (500 once ``healthy()`` is false, e.g. the
    election loop has died, so the kubelet restarts the pod); closed before kopf binds the port."""
    parts = urlsplit(url)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] != parts.path:
                status, text = 404, b"not found\n"
            else:
                status, text = (200, b"standby\n") if healthy() else (500, b"leader election stopped\n")
            self.send_response(status)
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((parts.hostname or "0.0.0.0", 80 if parts.port is None else parts.port), Handler)
    threading.Thread(target=server.serve_forever, name="standby-liveness", daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
