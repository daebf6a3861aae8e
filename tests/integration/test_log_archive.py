"""The whole log of every attempt in the object store (issue 20): on the real kubelet node, an attempt
that prints 100 MB is archived whole before its outcome is written, and `kubetasks logs` prints all
of it (line count and sha256) after its pod is gone, streamed through the operator as a reader
allowed to get the run, while etcd keeps only the tail; a store that is down holds the outcomes,
the uploads are tried again and no run is lost; one down past the limit fails the upload with a
clear reason.

Each test runs on both backends, with operators this module starts itself (each an instance of
its own): the cluster's S3 server (SeaweedFS) below a prefix of the operator's own, reached through
a relay the test switches off for "down" (the server stays up for the sessions sharing it); and the
filesystem (file://), "down" being its directory made unusable (a file where the runs' prefix goes:
the tests run as root, whom a chmod does not stop).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import KUBECONFIG, REPO, STORAGE_ENV, cluster_store_env, OperatorProcess, apply, free_port, get, kubectl, token_kubeconfig, wait_until, holds_until
from tests.integration.test_taskruns import events, task, taskrun

pytestmark = pytest.mark.cluster

LINES, WIDTH = 104_857, 1000  # 104,857,000 bytes: 100 MiB of numbered lines
# Over about 13 s, from its first second: the kubelet rotates a running container's log past 10 MiB
# (containerLogMaxSize's default), looking every 10 s, and serves only the current file after the
# end, or to a follow begun after a rotation. Followed from its container's start, the log is whole
# all the same.
BIG = f"""
import sys, time
out, block = sys.stdout.buffer, []
for i in range({LINES}):
    block.append(b"%09d " % i + b"x" * {WIDTH - 11} + b"\\n")
    if len(block) == 4096:
        out.write(b"".join(block))
        out.flush()
        block = []
        time.sleep(0.5)
out.write(b"".join(block))
out.flush()
"""
SMALL = 'for i in range(3): print(f"line {i}")'
KEEP = 16384  # the operators' KUBETASKS_LOG_KEEP_BYTES: the default


def big_log() -> tuple[int, str]:
    digest = hashlib.sha256()
    for i in range(LINES):
        digest.update(b"%09d " % i + b"x" * (WIDTH - 11) + b"\n")
    return LINES * WIDTH, digest.hexdigest()


class Switch:
    """A TCP relay in front of the cluster's S3 server that this test alone goes through: "down"
    closes every connection and refuses new ones, as a store that died would, while the server
    itself stays up for the other sessions sharing it."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "", parts.port or 80)
        # On the server's own address (the node's): task pods reach it too, with the URLs presigned for it.
        self.host = self.target[0]
        self.server = socket.create_server((self.host, 0))
        self.port = self.server.getsockname()[1]
        self.up_event = threading.Event()
        self.up_event.set()
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up_event.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # an idle keep-alive connection is for its client to close
            with self.lock:
                self.open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def down(self) -> None:
        self.up_event.clear()
        with self.lock:
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self.open.clear()

    def up(self) -> None:
        self.up_event.set()

    def close(self) -> None:
        self.down()
        self.server.close()


@dataclass
class Archiver:
    proc: OperatorProcess
    instance: str
    store: Path  # the filesystem backend's directory (unused on S3)
    switch: Switch | None = None  # S3: the relay the operator reaches its store through

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proc.metrics_port}"

    def down(self) -> None:
        if self.switch is not None:
            self.switch.down()
            return
        runs = self.store / "runs"
        if runs.exists():
            runs.rename(self.store / "runs.aside")
        runs.write_text("the store is down\n")  # mkdir of runs/<ns>/... fails: the tests run as root

    def up(self) -> None:
        if self.switch is not None:
            self.switch.up()
            return
        (self.store / "runs").unlink()
        if (self.store / "runs.aside").exists():
            (self.store / "runs.aside").rename(self.store / "runs")

    def cpu_seconds(self) -> float:
        assert self.proc.proc is not None
        fields = Path(f"/proc/{self.proc.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory(self) -> dict[str, int]:
        assert self.proc.proc is not None
        status = Path(f"/proc/{self.proc.proc.pid}/status").read_text().splitlines()
        return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in status) if k in ("VmRSS", "VmHWM")}


def archiver(tmp: Path, deadline: int, backend: str) -> Iterator[Archiver]:
    """An operator instance of its own, its store a directory of ``tmp`` or, on "s3", the cluster's
    S3 server below a prefix of its own, reached through a Switch."""
    instance = f"tests-archive-{uuid.uuid4().hex[:6]}"
    store = tmp / "store"
    store.mkdir()
    switch = None
    if backend == "s3":
        env = cluster_store_env(instance)
        if not env:
            pytest.skip(f"the cluster has no object store ({STORAGE_ENV})")
        switch = Switch(env["KUBETASKS_STORAGE_ENDPOINT"])
        env["KUBETASKS_STORAGE_ENDPOINT"] = f"http://{switch.host}:{switch.port}"
    else:
        env = {"KUBETASKS_STORAGE_URL": f"file://{store}"}
    proc = OperatorProcess(tmp / "operator.log", metrics_port=free_port(), env={
        **env, "KUBETASKS_INSTANCE_ID": instance, "KUBETASKS_STORAGE_UPLOAD_DEADLINE_SECONDS": str(deadline)})
    proc.start()
    yield Archiver(proc, instance, store, switch)
    proc.stop()
    if switch is not None:
        switch.close()
        from kubetasks.blobs import from_env

        remaining = from_env(cluster_store_env(instance))
        if remaining is not None:
            remaining.delete_prefix("")  # the run's blobs below this operator's prefix
    print(f"operator log: {proc.log_path}")


@pytest.fixture(scope="module", params=["filesystem", "s3"])
def patient(crds: None, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Archiver]:
    yield from archiver(tmp_path_factory.mktemp("patient"), 300, request.param)


@pytest.fixture(scope="module", params=["filesystem", "s3"])
def impatient(crds: None, tmp_path_factory: pytest.TempPathFactory,
              request: pytest.FixtureRequest) -> Iterator[Archiver]:
    yield from archiver(tmp_path_factory.mktemp("impatient"), 15, request.param)


def reader(namespace: str, tmp_path: Path) -> str:
    """A kubeconfig whose user may get and list the namespace's TaskRuns, and nothing else."""
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    kubectl("create", "role", "taskrun-reader", "-n", namespace, "--verb=get,list", "--resource=taskruns.kubetasks.io")
    kubectl("create", "rolebinding", "taskrun-reader", "-n", namespace, "--role=taskrun-reader",
            f"--serviceaccount={namespace}:reader")
    return token_kubeconfig(tmp_path / "reader.kubeconfig", namespace, "reader")


def logs(namespace: str, run: str, operator_url: str, kubeconfig: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "KUBECONFIG": kubeconfig}
    with out.open("wb") as sink:
        return subprocess.run([sys.executable, "-m", "kubetasks.cli.main", "logs", run, "-n", namespace,
                               "--operator-url", operator_url], env=env, stdout=sink, stderr=subprocess.PIPE,
                              text=True, timeout=600)


def status(namespace: str, run: str) -> dict:
    return get("taskrun", run, namespace).get("status") or {}


def condition(s: dict, type_: str) -> dict:
    return next((c for c in s.get("conditions") or [] if c["type"] == type_), {})


def pods_of(namespace: str, uid: str) -> list[dict]:
    return json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"kubetasks.io/run-uid={uid}", "-o", "json"))["items"]


def rotated(namespace: str, pod: dict) -> list[str]:
    """Files the kubelet rotated away from the pod's log while it ran (it serves only the current one)."""
    meta = pod["metadata"]
    found = Path("/var/log/pods") / f"{namespace}_{meta['name']}_{meta['uid']}"
    return sorted(str(p) for p in found.glob("*/*.log.*")) if found.exists() else []


def test_a_100_mb_log_is_archived_whole_and_printed_after_its_pod_is_gone(namespace, patient, tmp_path):
    size, sha256 = big_log()
    apply([task("loud", BIG, machine={"cpu": "1", "memory": "256Mi"}), taskrun("loud-1", "loud")], namespace,
          instance=patient.instance)
    cpu, memory = patient.cpu_seconds(), patient.memory()
    started = time.monotonic()
    s = wait_until("loud-1 finished", lambda: (s := status(namespace, "loud-1")).get("phase") in
                   ("Succeeded", "Failed") and s, timeout=600)
    took = time.monotonic() - started
    cpu_used, after = patient.cpu_seconds() - cpu, patient.memory()
    uid = get("taskrun", "loud-1", namespace)["metadata"]["uid"]
    pods = pods_of(namespace, uid)
    assert pods, "the outcome was written before the attempt's pod was gone: it is still there"
    ref = s["attempts"][0].get("log") or {}
    archived = condition(s, "LogArchived")
    assert s["phase"] == "Succeeded" and archived.get("status") == "True", s
    # Asked for while the pod waited to start: the follow began at its first byte, and says so.
    assert "read from after its container started" not in archived["message"], archived
    away = rotated(namespace, pods[0])
    assert (ref.get("size"), ref.get("sha256")) == (size, sha256), (ref, "rotated by the kubelet:", away)
    assert away, "the kubelet rotated none of the log: the case of a rotated log was not shown"
    print(f"\n100 MB log ({ref['uri'].split(':')[0]}): run created -> Succeeded (archive included) in {took:.1f} s; operator CPU "
          f"{cpu_used:.2f} s; operator RSS {memory['VmRSS'] / 2**20:.0f} -> {after['VmRSS'] / 2**20:.0f} MiB, "
          f"peak {memory['VmHWM'] / 2**20:.0f} -> {after['VmHWM'] / 2**20:.0f} MiB")

    kubectl("delete", "jobs", "-n", namespace, "-l", f"kubetasks.io/run-uid={uid}", "--cascade=foreground")
    wait_until("the attempt's pod gone", lambda: not pods_of(namespace, uid), timeout=120)

    out = tmp_path / "loud-1.log"
    started = time.monotonic()
    done = logs(namespace, "loud-1", patient.url, reader(namespace, tmp_path), out)
    assert done.returncode == 0 and not done.stderr, done.stderr
    printed = out.read_bytes()
    print(f"kubetasks logs printed {len(printed):,} bytes in {time.monotonic() - started:.1f} s")
    assert printed.count(b"\n") == LINES and hashlib.sha256(printed).hexdigest() == sha256

    kept = json.loads(kubectl("get", "configmap", "loud-1-1-log", "-n", namespace, "-o", "json"))
    kept_bytes = sum(len(v.encode()) for v in (kept.get("data") or {}).values())
    assert kept_bytes <= KEEP, kept_bytes  # etcd holds the tail only
    if ref["uri"].startswith("file:"):
        assert (patient.store / "runs" / namespace / uid / "attempt-1" / "log").stat().st_size == size


# On S3 only: holding an outcome while uploads fail is the operator's (controller.log_archive), the
# same for either backend, and this case is 35 s of outage by design; S3's is the real server's
# connections cut, the filesystem's only a renamed directory (the module's other cases run on both).
@pytest.mark.parametrize("patient", ["s3"], indirect=True)
def test_a_store_down_holds_the_outcomes_until_the_uploads_get_through(namespace, patient, tmp_path):
    names = [f"quiet-{i}" for i in range(3)]
    patient.down()
    try:
        apply([task("quiet", SMALL)] + [taskrun(n, "quiet") for n in names], namespace, instance=patient.instance)

        def held() -> bool:
            found = [status(namespace, n) for n in names]
            return all(condition(s, "LogArchived").get("status") == "Unknown" and "store failed"
                       in condition(s, "LogArchived").get("message", "") for s in found)
        wait_until("each run's outcome held, its upload failing", held, timeout=180)
        down_since = time.monotonic()
        # Their attempts are over: each Job succeeded, and the runs wait.
        for n in names:
            uid = get("taskrun", n, namespace)["metadata"]["uid"]
            jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-l", f"kubetasks.io/run-uid={uid}", "-o",
                                      "json"))["items"]
            assert jobs and jobs[0]["status"].get("succeeded") == 1
        def no_outcome() -> None:
            for n in names:
                s = status(namespace, n)
                assert s.get("phase") == "Running" and not s["attempts"][0].get("log"), s
        holds_until(down_since + 35, no_outcome)  # the store stays down 35 s (past a 30 s recheck)
        for n in names:
            print(f"{n}: {condition(status(namespace, n), 'LogArchived')['message']}")
    finally:
        patient.up()
    up_at = time.monotonic()
    for n in names:
        s = wait_until(f"{n} Succeeded", lambda n=n: (s := status(namespace, n)).get("phase") == "Succeeded" and s,
                       timeout=120)
        assert s["attempts"][0]["log"]["size"] == len("".join(f"line {i}\n" for i in range(3)))
        assert condition(s, "LogArchived")["status"] == "True"
    print(f"all 3 runs Succeeded {time.monotonic() - up_at:.1f} s after the store came back")
    out = tmp_path / "quiet-0.log"
    done = logs(namespace, "quiet-0", patient.url, reader(namespace, tmp_path), out)
    assert done.returncode == 0 and out.read_text() == "line 0\nline 1\nline 2\n", done.stderr


def test_a_store_down_past_the_limit_fails_the_upload_with_a_clear_reason(namespace, impatient, tmp_path):
    impatient.down()
    try:
        apply([task("quiet", SMALL), taskrun("quiet-1", "quiet")], namespace, instance=impatient.instance)
        s = wait_until("quiet-1 finished", lambda: (s := status(namespace, "quiet-1")).get("phase") in
                       ("Succeeded", "Failed") and s, timeout=180)
    finally:
        impatient.up()
    archived = condition(s, "LogArchived")
    assert s["phase"] == "Succeeded" and archived["status"] == "False" and archived["reason"] == "LogArchiveFailed", s
    assert re.match(r"the log of attempt 1 was not archived: the object store failed for \d+ s, past the limit of "
                    r"15 s \(\d+ tr(y|ies)\): ", archived["message"]), archived
    assert not s["attempts"][0].get("log")
    wait_until("a LogArchiveFailed Event", lambda: "LogArchiveFailed" in events(namespace, "quiet-1"), timeout=30)
    print(f"quiet-1: {archived['message']}")
    # The tail etcd keeps is still there for kubetasks logs (read from its ConfigMap: as the admin).
    done = logs(namespace, "quiet-1", impatient.url, KUBECONFIG, tmp_path / "quiet-1.log")
    assert done.returncode == 0 and (tmp_path / "quiet-1.log").read_text() == "line 0\nline 1\nline 2\n", done.stderr

