"""Two operator replicas with leader election: one acts, the other takes over when it dies."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.conftest import VERSIONS, OperatorProcess, apply, kubectl, lease_holder, run_until_finished, wait_until

pytestmark = pytest.mark.cluster
IDENTITY = re.compile(r"standing by for the Lease \S+ as (\S+)")


def identity(op: OperatorProcess) -> str:
    return wait_until("the operator logs its identity",
                      lambda: (m := IDENTITY.search(op.log_path.read_text(errors="replace"))) and m.group(1), timeout=30)


def test_one_replica_leads_and_a_standby_takes_over_after_a_crash(namespace, operator, tmp_path: Path):
    operator.stop()  # the session operator watches every namespace: these two replace it here
    env = {"KUBETASKS_LEADER_ELECTION": "kubetasks", "KUBETASKS_LEADER_ELECTION_NAMESPACE": namespace}
    replicas = [OperatorProcess(tmp_path / f"op-{i}.log", namespaces=namespace, env=env) for i in range(2)]
    try:
        for op in replicas:
            op.start()
        ids = [identity(op) for op in replicas]
        assert all(op.proc.poll() is None for op in replicas), "both replicas keep running"
        lead_id = wait_until("a leader holds the Lease", lambda: lease_holder(namespace, "kubetasks") in ids and lease_holder(namespace, "kubetasks"))
        leader, standby = (replicas if ids[0] == lead_id else replicas[::-1])

        apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "hello"},
               "spec": {"image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never",
                        "command": ["python3", "-c", "print('hi')"], "machine": {"preset": "micro"}}}, namespace)
        assert run_until_finished(namespace, "before-crash", "hello") == "Succeeded"
        assert "starting the operator" not in standby.log_path.read_text(), "the standby must not act"

        leader.kill()  # SIGKILL: no hand-back, the Lease has to expire
        crashed = time.monotonic()
        standby_id = ids[1] if lead_id == ids[0] else ids[0]
        wait_until("the standby takes the Lease", lambda: lease_holder(namespace, "kubetasks") == standby_id, timeout=45)
        takeover = time.monotonic() - crashed
        print(f"takeover after SIGKILL: {takeover:.1f}s")
        assert run_until_finished(namespace, "after-crash", "hello") == "Succeeded"

        jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json"))["items"]
        assert sorted(j["metadata"]["name"] for j in jobs) == ["after-crash-1", "before-crash-1"]

        standby.stop()  # a clean shutdown hands the Lease back
        wait_until("the Lease released", lambda: lease_holder(namespace, "kubetasks") is None, timeout=30)
    finally:
        for op in replicas:
            op.kill()
        operator.start()
