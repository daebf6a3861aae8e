"""Two operator replicas with leader election: one acts, the other takes over when it dies, and
no replica acts on a Lease it can no longer renew (kube-apiserver hung: SIGSTOP)."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from kubetasks.controller.leader import LEASE_SECONDS, RENEW_DEADLINE_SECONDS
from tests.conftest import (VERSIONS, OperatorProcess, apply, free_port, kubectl, lease_holder, paused,
                            run_until_finished, wait_until)

pytestmark = [pytest.mark.cluster, pytest.mark.serial]  # pauses kube-apiserver
IDENTITY = re.compile(r"standing by for the Lease \S+ as (\S+)")
HELLO = {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "hello"},
         "spec": {"image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never",
                  "command": ["python3", "-c", "print('hi')"], "machine": {"preset": "micro"}}}
OUTAGE_SECONDS = 30


def identity(op: OperatorProcess, start: int = 1) -> str:
    """The identity of the process's ``start``-th start (its log is appended to across restarts)."""
    return wait_until("the operator logs its identity", lambda: (
        m := IDENTITY.findall(op.log_path.read_text(errors="replace"))) and len(m) >= start and m[start - 1], timeout=30)


def election_env(namespace: str) -> dict[str, str]:
    return {"KUBETASKS_LEADER_ELECTION": "kubetasks", "KUBETASKS_LEADER_ELECTION_NAMESPACE": namespace}


def job_names(namespace: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json"))["items"])


def start_pair(namespace: str, tmp_path: Path) -> tuple[OperatorProcess, OperatorProcess, str, str]:
    """Two replicas; returns (leader, standby, leader's identity, standby's identity)."""
    replicas = [OperatorProcess(tmp_path / f"op-{i}.log", namespaces=namespace, env=election_env(namespace))
                for i in range(2)]
    for op in replicas:
        op.start()
    ids = [identity(op) for op in replicas]
    lead_id = wait_until("a leader holds the Lease",
                         lambda: lease_holder(namespace, "kubetasks") in ids and lease_holder(namespace, "kubetasks"))
    i = ids.index(lead_id)
    return replicas[i], replicas[1 - i], ids[i], ids[1 - i]


def test_one_replica_leads_and_a_standby_takes_over_after_a_crash(namespace, operator, tmp_path: Path):
    operator.stop()  # the session operator watches every namespace: these two replace it here
    leader, standby, lead_id, standby_id = start_pair(namespace, tmp_path)
    try:
        assert all(op.proc and op.proc.poll() is None for op in (leader, standby)), "both replicas keep running"
        apply(HELLO, namespace)
        assert run_until_finished(namespace, "before-crash", "hello") == "Succeeded"
        assert "starting the operator" not in standby.log_path.read_text(), "the standby must not act"

        leader.kill()  # SIGKILL: no hand-back, the Lease has to expire
        crashed = time.monotonic()
        wait_until("the standby takes the Lease", lambda: lease_holder(namespace, "kubetasks") == standby_id, timeout=45)
        takeover = time.monotonic() - crashed
        print(f"takeover after SIGKILL: {takeover:.1f}s")
        assert run_until_finished(namespace, "after-crash", "hello") == "Succeeded"
        assert job_names(namespace) == ["after-crash-1", "before-crash-1"]

        standby.stop()  # a clean shutdown hands the Lease back
        wait_until("the Lease released", lambda: lease_holder(namespace, "kubetasks") is None, timeout=30)
        assert standby.proc and standby.proc.returncode == 0, "a released Lease is not mistaken for a lost one"
    finally:
        for op in (leader, standby):
            op.kill()
        operator.start()


@pytest.mark.faults
def test_a_leader_stops_acting_when_the_api_server_hangs_and_a_replica_takes_over(namespace, operator, tmp_path: Path):
    operator.stop()
    leader, standby, lead_id, standby_id = start_pair(namespace, tmp_path)
    try:
        apply(HELLO, namespace)
        assert run_until_finished(namespace, "before-outage", "hello") == "Succeeded"

        with paused("kube-apiserver"):
            stopped = time.monotonic()
            # Its last renewal was at most RETRY_SECONDS before the outage began: it must be gone
            # by the renew deadline after that, well before the Lease expires for anyone else.
            wait_until("the leader exits", lambda: leader.proc and leader.proc.poll() is not None,
                       timeout=RENEW_DEADLINE_SECONDS + 5, interval=0.1)
            exited_after = time.monotonic() - stopped
            assert leader.proc and leader.proc.returncode == 1
            assert "no renewal of the Lease" in leader.log_path.read_text()
            assert standby.proc and standby.proc.poll() is None, "the standby rides out the outage"
            leader.start()  # the kubelet restarts the pod: it comes back as a standby, mid-outage
            restarted_id = identity(leader, start=2)
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))  # the outage itself, not a wait
        resumed = time.monotonic()
        print(f"leader exited {exited_after:.1f}s after kube-apiserver was stopped "
              f"(renew deadline {RENEW_DEADLINE_SECONDS}s, Lease {LEASE_SECONDS}s)")
        assert exited_after <= RENEW_DEADLINE_SECONDS + 1.5 < LEASE_SECONDS  # the watchdog checks every 0.5 s

        new_holder = wait_until("a replica takes the Lease", lambda: (
            h := lease_holder(namespace, "kubetasks")) in (standby_id, restarted_id) and h, timeout=60, interval=0.2)
        print(f"{'standby' if new_holder == standby_id else 'restarted replica'} took the Lease "
              f"{time.monotonic() - resumed:.1f}s after kube-apiserver resumed")
        assert run_until_finished(namespace, "after-outage", "hello") == "Succeeded"
        assert job_names(namespace) == ["after-outage-1", "before-outage-1"]
        logs = [op.log_path.read_text() for op in (leader, standby)]
        assert sum(log.count("starting the operator") for log in logs) == 2, "one leader before, one after"
    finally:
        for op in (leader, standby):
            op.kill()
        operator.start()


@pytest.mark.faults
def test_a_replica_started_while_the_api_server_is_down_leads_once_it_is_back(namespace, operator, tmp_path: Path):
    operator.stop()
    port = free_port()
    op = OperatorProcess(tmp_path / "op.log", namespaces=namespace,
                         env={**election_env(namespace), "KUBETASKS_LIVENESS": f"http://127.0.0.1:{port}/healthz"})

    def live() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200

    try:
        apply(HELLO, namespace)
        with paused("kube-apiserver"):
            stopped = time.monotonic()
            op.start()
            op_id = identity(op)
            wait_until("the standby answers its liveness probe", lambda: _try(live), timeout=30)
            time.sleep(max(0.0, 20 - (time.monotonic() - stopped)))  # several failed rounds, not a wait
            assert op.proc and op.proc.poll() is None and live(), "still standing by, election loop alive"
        resumed = time.monotonic()
        wait_until("it takes the Lease", lambda: lease_holder(namespace, "kubetasks") == op_id, timeout=60, interval=0.2)
        print(f"a replica started during the outage led {time.monotonic() - resumed:.1f}s after kube-apiserver resumed")
        assert run_until_finished(namespace, "after-outage", "hello") == "Succeeded"
        assert job_names(namespace) == ["after-outage-1"]
    finally:
        op.kill()
        operator.start()


def _try(check: Callable[[], bool]) -> bool:
    """False while the endpoint is not up yet."""
    try:
        return bool(check())
    except OSError:
        return False
