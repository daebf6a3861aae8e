"""The cluster's SeaweedFS out of reach for 60 s while runs finish (issue 20): no run is lost, the
uploads are tried again (a result's PUT from its pod, an attempt's log from the operator), and the
outcomes wait for them; a store down past the limit fails the upload with a clear reason.

The store is the real S3 server, reached by the operators of this module (and so, through their
presigned URLs, by their task pods) through a TCP relay on the node's address that the test closes
and opens: "down" is every connection cut and the port refusing new ones, as a crashed server's
would. Stopping SeaweedFS itself (conftest.store_stopped) would take the store from every other
session sharing the cluster; set KUBETASKS_TEST_STOP_STORE=1 (alone on a cluster, under the
lock) to kill and restart it instead:
    flock /tmp/kubetasks-it.lock .venv/bin/pytest tests/integration/test_store_outage.py -q -s
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import (STORAGE_ENV, OperatorProcess, apply, cluster_store_env, free_port, get, kubectl,
                            store_stopped, wait_until)
from tests.integration.test_large_results import EXAMPLES, expected
from tests.integration.test_large_results import task as sdk_task
from tests.integration.test_log_archive import SMALL, condition, logs, reader, status
from tests.integration.test_taskruns import events, task, taskrun

pytestmark = [pytest.mark.cluster, pytest.mark.faults]
OUTAGE = 60  # seconds
RESULT = 100_000  # bytes: above the store's threshold (64 KiB), so the result goes to the store


@dataclass
class Relay:
    """A TCP relay to the store that can be cut: while down its port refuses connections and the
    ones it carried are reset."""
    target: tuple[str, int]
    host: str
    port: int = 0
    _listener: socket.socket | None = None
    _conns: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:  # wakes the thread blocked in accept(): a close alone leaves the port listening
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                conn.close()
            except OSError:
                pass

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: down
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)  # an idle keep-alive connection is the client's to close, not a timeout's
            with self._lock:
                self._conns |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:  # reset: the other side goes too, never left open and silent
            for conn in (source, sink):
                conn.close()


@dataclass
class Guarded:
    proc: OperatorProcess
    instance: str
    relay: Relay
    env: dict[str, str]

    def outage(self) -> AbstractContextManager[None]:
        """The store out of reach for the block: the relay cut, or SeaweedFS itself killed."""
        if os.environ.get("KUBETASKS_TEST_STOP_STORE"):
            return store_stopped()
        return self.cut()

    @contextmanager
    def cut(self) -> Iterator[None]:
        self.relay.down()
        try:
            yield
        finally:
            self.relay.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proc.metrics_port}"


def guarded(tmp: Path, deadline: int) -> Iterator[Guarded]:
    """An operator of its own on the cluster's SeaweedFS (a prefix of its own) through a relay."""
    instance = f"tests-outage-{uuid.uuid4().hex[:6]}"
    env = cluster_store_env(instance)
    if not env:
        pytest.skip(f"no object store: {STORAGE_ENV} is missing (hack/cluster starts SeaweedFS)")
    endpoint = urlsplit(env["KUBETASKS_STORAGE_ENDPOINT"])
    assert endpoint.hostname and endpoint.port
    relay = Relay(target=(endpoint.hostname, endpoint.port), host=endpoint.hostname)
    relay.up()
    env["KUBETASKS_STORAGE_ENDPOINT"] = f"http://{endpoint.hostname}:{relay.port}"  # what pods' URLs name too
    proc = OperatorProcess(tmp / "operator.log", metrics_port=free_port(), env={
        **env, "KUBETASKS_INSTANCE_ID": instance, "KUBETASKS_STORAGE_UPLOAD_DEADLINE_SECONDS": str(deadline)})
    proc.start()
    yield Guarded(proc, instance, relay, env)
    proc.stop()
    from kubetasks.blobs import from_env

    store = from_env(env)
    if store is not None:
        store.delete_prefix("")
    relay.down()
    print(f"operator log: {proc.log_path}")


@pytest.fixture
def patient(crds: None, tmp_path: Path) -> Iterator[Guarded]:
    yield from guarded(tmp_path, deadline=300)


@pytest.fixture
def impatient(crds: None, tmp_path: Path) -> Iterator[Guarded]:
    yield from guarded(tmp_path, deadline=15)


def ended(namespace: str, s: dict[str, Any]) -> float:
    """When the run's attempt's container ended, on this process's monotonic clock."""
    from datetime import datetime, timezone

    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"job-name={s['attempts'][0]['jobName']}",
                              "-o", "json"))["items"]
    finished_at = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
    at = datetime.fromisoformat(finished_at.replace("Z", "+00:00"))
    return time.monotonic() - (datetime.now(timezone.utc) - at).total_seconds()


def held(s: dict[str, Any]) -> bool:
    """Not finished: waiting for its pod's upload (Running) or for its log's (LogArchived=Unknown)."""
    return s.get("phase") not in ("Succeeded", "Failed", "TimedOut", "Cancelled")


def test_the_store_down_60_s_while_runs_finish_loses_no_run(namespace, patient, tmp_path):
    results = [f"result-{i}" for i in range(3)]  # 100 KB results: PUT by their pods to the store
    quiet = [f"quiet-{i}" for i in range(3)]  # inline results: their logs wait for the operator's upload
    names = results + quiet
    apply([sdk_task("big", f"{EXAMPLES}:big"), task("quiet", SMALL)], namespace, instance=patient.instance)
    with patient.outage():
        down_at = time.monotonic()
        apply([taskrun(n, "big", payload={"bytes": RESULT}) for n in results] +
              [taskrun(n, "quiet") for n in quiet], namespace, instance=patient.instance)

        def quiet_held() -> bool:
            return all(condition(status(namespace, n), "LogArchived").get("status") == "Unknown" and "store failed"
                       in condition(status(namespace, n), "LogArchived").get("message", "") for n in quiet)
        wait_until("the quiet runs' outcomes held, their log uploads failing", quiet_held, timeout=OUTAGE - 10)
        while time.monotonic() < down_at + OUTAGE:  # down 60 s: no outcome may be written meanwhile
            for n in names:
                s = status(namespace, n)
                assert held(s), (n, s)
            time.sleep(2)
        for n in quiet:
            print(f"{n}: {condition(status(namespace, n), 'LogArchived')['message']}")
    up_at = time.monotonic()
    want = expected(RESULT)
    seen: dict[str, float] = {}  # seconds after the store came back that each run's outcome was seen

    def all_finished() -> bool:
        for n in set(names) - set(seen):
            if status(namespace, n).get("phase") in ("Succeeded", "Failed", "TimedOut"):
                seen[n] = time.monotonic() - up_at
        return len(seen) == len(names)
    wait_until("every run finished", all_finished, timeout=240, interval=1)
    for n in names:
        s = status(namespace, n)
        assert s["phase"] == "Succeeded", (n, s)
        assert condition(s, "LogArchived")["status"] == "True" and s["attempts"][0].get("log"), (n, s)
        assert len(s["attempts"]) == 1, (n, s)  # retried uploads, not attempts
        if n in results:
            ref = s["resultRef"]
            assert ref["uri"].startswith(patient.env["KUBETASKS_STORAGE_URL"] + "/"), ref
            assert (ref["size"], ref["sha256"]) == (want["size"], want["sha256"]), ref
        print(f"{n}: Succeeded {seen[n]:.0f} s after the store came back; its pod ended "
              f"{ended(namespace, s) - down_at - OUTAGE:+.0f} s after")
    print(f"all {len(names)} runs Succeeded {time.monotonic() - up_at:.1f} s after the store came back")
    # The results' bytes are the ones written (read and checked by sha256), the logs readable.
    from kubetasks.api.storage import BlobRef
    from kubetasks.blobs import from_env

    store = from_env(patient.env)
    assert store is not None
    for n in results:
        text = store.get(BlobRef.model_validate(status(namespace, n)["resultRef"]))
        assert len(text) == RESULT
    out = tmp_path / "quiet-0.log"
    done = logs(namespace, "quiet-0", patient.url, reader(namespace, tmp_path), out)
    assert done.returncode == 0 and out.read_text() == "line 0\nline 1\nline 2\n", done.stderr


def test_the_store_down_past_the_limit_fails_the_upload_with_a_clear_reason(namespace, impatient):
    apply([task("quiet", SMALL)], namespace, instance=impatient.instance)
    with impatient.cut():  # the relay even with KUBETASKS_TEST_STOP_STORE: the limit is this operator's alone
        apply([taskrun("quiet-1", "quiet")], namespace, instance=impatient.instance)
        s = wait_until("quiet-1 finished", lambda: (s := status(namespace, "quiet-1")).get("phase") in
                       ("Succeeded", "Failed") and s, timeout=180)
    archived = condition(s, "LogArchived")
    assert s["phase"] == "Succeeded" and archived["status"] == "False" and archived["reason"] == "LogArchiveFailed", s
    assert "the log of attempt 1 was not archived: the object store failed for 15 s" in archived["message"], archived
    assert "GenericError: Connection refused: " in archived["message"], archived  # the cause, not a cut URL
    wait_until("a LogArchiveFailed Event", lambda: "LogArchiveFailed" in events(namespace, "quiet-1"), timeout=30)
    print(f"quiet-1: {archived['message']}")
    assert get("taskrun", "quiet-1", namespace)["status"]["attempts"][0].get("log") is None
