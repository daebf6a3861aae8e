"""A run deleted and re-created under its name while the old run's reconcile is in flight.

The old run's last status write (Succeeded) is held in the API server by a validating webhook on
``taskruns/status`` that delays it; meanwhile the run is deleted and a new one is created under
its name (as ``kubectl replace --force`` or a GitOps tool does). When the webhook lets the write
go, kube-apiserver finds the stored object changed and applies the patch again to what it holds
now: the new run. Only the resourceVersion in the patch stops it there (409). The new run must
end with its own outcome, on a Job owned by its own UID, with nothing of the old run's status.

The webhook is scoped to objects with a label only this test sets, in this test's namespace,
fails open (``failurePolicy: Ignore``) and is deleted when the test ends. Its serving certificate
is signed by the local cluster's CA (kube-apiserver runs on this host and calls 127.0.0.1).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLUSTER_DIR, KWOK_PLACEMENT, JobWatch, create, get, kubectl, kubectl_run, scoped_webhook, wait_until
from tests.integration.test_taskruns import status, task, taskrun, wait_phase

pytestmark = pytest.mark.cluster
HOLD_LABEL = "kubetasks.io/test-hold"
HOLD_SECONDS = 20.0  # at most; the test releases the write as soon as the new run exists


class HoldingWebhook:
    """A validating webhook that holds the first ``taskruns/status`` write saying ``phase``
    until :meth:`release` (or HOLD_SECONDS), and admits every other request at once."""

    def __init__(self, phase: str, tls: ssl.SSLContext) -> None:
        self.phase = phase
        self.held_uid: str | None = None
        self.holding = threading.Event()
        self.released = threading.Event()
        self.seen: list[tuple[str, str | None]] = []  # (uid, phase) of every write reviewed
        self._lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                denial = webhook.review(review["request"])
                response: dict[str, Any] = {"uid": review["request"]["uid"], "allowed": denial is None}
                if denial is not None:
                    response["status"] = {"code": denial[0], "message": denial[1]}
                answer = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def review(self, request: dict[str, Any]) -> tuple[int, str] | None:
        """None admits the request; (code, message) denies it (a subclass may deny)."""
        obj = request.get("object") or {}
        uid, phase = obj["metadata"]["uid"], (obj.get("status") or {}).get("phase")
        with self._lock:
            self.seen.append((uid, phase))
            hold = self.held_uid is None and phase == self.phase
            if hold:
                self.held_uid = uid
        if hold:
            self.holding.set()
            self.released.wait(HOLD_SECONDS)
        return None

    def release(self) -> None:
        self.released.set()

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def serving_tls(directory: Path) -> ssl.SSLContext:
    """A serving certificate for 127.0.0.1, signed by the local cluster's CA."""
    pki = CLUSTER_DIR / "pki"
    key, csr, crt, ext = (directory / n for n in ("hook.key", "hook.csr", "hook.crt", "hook.ext"))
    ext.write_text("subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n")
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                    "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
                    "-CAcreateserial", "-CAserial", str(directory / "ca.srl"), "-out", str(crt), "-days", "1",
                    "-extfile", str(ext)], check=True, capture_output=True, timeout=60)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(crt), str(key))
    return tls


@pytest.fixture
def holding_webhook(namespace: str, tmp_path: Path) -> Iterator[tuple[HoldingWebhook, str]]:
    """The webhook, registered for this test's namespace and label only; removed afterwards."""
    hold = uuid.uuid4().hex[:10]
    with registered(HoldingWebhook("Succeeded", serving_tls(tmp_path)), namespace, hold) as hook:
        yield hook, hold


@contextmanager
def registered(hook: HoldingWebhook, namespace: str, hold: str,
               rule: tuple[str, str, str] = ("kubetasks.io", "taskruns/status", "UPDATE"),
               selector: dict[str, str] | None = None) -> Iterator[HoldingWebhook]:
    """``hook`` as the validating webhook of ``taskruns/status`` writes (or another ``rule``: API
    group, resource, operation), for the objects of ``namespace`` labelled ``HOLD_LABEL=hold``
    (or ``selector``) only; removed (and stopped) afterwards."""
    try:
        with scoped_webhook(f"kubetasks-test-hold-{hold}", f"https://127.0.0.1:{hook.port}/hold", namespace,
                          selector or {HOLD_LABEL: hold}, rule, timeout=int(HOLD_SECONDS) + 5):
            try:
                yield hook
            finally:
                hook.release()
    finally:
        hook.stop()


def test_a_run_recreated_while_the_old_runs_write_is_in_flight_ends_with_its_own_outcome(
        namespace, operator, holding_webhook):
    hook, hold = holding_webhook
    labels = {HOLD_LABEL: hold}
    create([task("ok", "print('old')", **KWOK_PLACEMENT),
            # On the real node: kwok completes every pod, and this run's outcome must be its own.
            task("fails", "import sys; sys.exit(3)", retry={"maxAttempts": 1})], namespace)
    with JobWatch(namespace) as jobs:
        old = taskrun("same", "ok")
        old["metadata"]["labels"] = labels
        create(old, namespace)
        old_uid = get("taskrun", "same", namespace)["metadata"]["uid"]
        # Its Job completes at once on a kwok node; the write that says Succeeded is held.
        assert hook.holding.wait(120), f"no Succeeded write reached the webhook: {hook.seen}"
        assert hook.held_uid == old_uid
        kubectl("delete", "taskrun", "same", "-n", namespace, "--wait=false")
        wait_until("the old run gone", lambda: kubectl_run("get", "taskrun", "same", "-n", namespace).returncode,
                   timeout=60, interval=0.1)
        new = taskrun("same", "fails")  # another Task, whose run fails: its outcome is not the old one's
        new["metadata"]["labels"] = labels
        create(new, namespace)
        new_body = get("taskrun", "same", namespace)
        new_uid = new_body["metadata"]["uid"]
        assert new_uid != old_uid
        hook.release()  # the old Succeeded reaches the store now, where the new run is

        s = wait_phase(namespace, "same", {"Succeeded", "Failed", "Cancelled", "TimedOut", "Duplicate"})
        assert s["phase"] == "Failed", s  # its own outcome: not the old run's Succeeded
        assert [a["exitCode"] for a in s["attempts"]] == [3], s
        mine = jobs.owned_by(new_uid)
        assert [j.name for j in mine] == [a["jobName"] for a in s["attempts"]], (mine, s)
        assert all(j.owner in (old_uid, new_uid) for j in jobs.seen())
        assert s["startTime"] >= new_body["metadata"]["creationTimestamp"]  # nothing of the old run
        assert status(namespace, "same").get("result") is None
    phases = [phase for uid, phase in hook.seen if uid == new_uid]
    assert "Succeeded" not in phases, hook.seen  # never shown Succeeded, even for a moment
