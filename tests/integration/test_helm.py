"""The Helm chart on the real cluster: install namespace-scoped with two replicas, run TaskRuns,
fail the leader over, uninstall."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
import yaml

from tests.conftest import (CACHE, KUBECONFIG, REPO, VERSIONS, apply, kubectl, lease_holder, run_until_finished,
                            wait_until)

pytestmark = pytest.mark.cluster
HELM = str(CACHE / "bin" / f"helm-{VERSIONS['HELM_VERSION']}" / "helm")
CHART = str(REPO / "charts" / "kubetasks")
IMAGE = VERSIONS["PYTHON_IMAGE"]


def helm(*args: str, check: bool = True, timeout: float = 300) -> str:
    done = subprocess.run([HELM, "--kubeconfig", KUBECONFIG, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode:
        raise AssertionError(f"helm {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def pods(namespace: str, release: str) -> list[dict]:
    found = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}",
                               "-o", "json"))
    return found["items"]


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions", []))


def test_helm_install_runs_a_task_and_uninstalls(cluster, namespace, operator):
    operator.stop()  # the chart's operator replaces the test one: two never run together
    release = f"kt-{uuid.uuid4().hex[:6]}"
    system = f"{release}-system"
    installed = False
    try:
        kubectl("create", "namespace", system)
        helm("install", release, CHART, "-n", system, "--set", f"watchNamespaces={{{namespace}}}",
             "--set", "replicaCount=2", "--wait", "--timeout", "4m")
        installed = True
        # Both replicas Ready (the standby answers its probes); the Lease names the leader.
        both = wait_until("two operator pods Ready",
                          lambda: (r := [p for p in pods(system, release) if ready(p)]) and len(r) == 2 and r,
                          timeout=120)
        lease = f"{release}-kubetasks"
        holder = wait_until("a leader", lambda: lease_holder(system, lease))
        (pod,) = [p for p in both if holder.startswith(p["metadata"]["name"] + "_")]
        spec = pod["spec"]["containers"][0]
        assert spec["command"] == ["python", "-m", "kubetasks.controller"]
        assert {"name": "KUBETASKS_NAMESPACES", "value": namespace} in spec["env"]
        # Namespace-scoped: a Role in the watched namespace, no cluster-wide operator rules.
        kubectl("get", "role", f"{release}-kubetasks", "-n", namespace)
        assert not kubectl("get", "clusterrole", f"{release}-kubetasks", "--ignore-not-found", "-o", "name")

        apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "hello"},
               "spec": {"image": IMAGE, "imagePullPolicy": "Never", "command": ["python3", "-c", "print('hi')"],
                        "machine": {"preset": "micro"}}}, namespace)
        assert run_until_finished(namespace, "hello-1", "hello") == "Succeeded"
        table = kubectl("get", "taskruns", "-n", namespace)
        assert table.split()[:4] == ["NAME", "TASK", "PHASE", "ATTEMPT"], table
        assert "hello-1" in table and "Succeeded" in table

        # Least-privilege RBAC still covers everything the operator did.
        logs = kubectl("logs", "-n", system, pod["metadata"]["name"])
        assert "forbidden" not in logs.lower() and "Traceback" not in logs, logs[-3000:]

        # Deleting the leader: it hands the Lease back on SIGTERM and the standby leads.
        deleted = time.monotonic()
        kubectl("delete", "pod", pod["metadata"]["name"], "-n", system, "--wait=false")
        wait_until("the standby leads", lambda: (h := lease_holder(system, lease)) and h != holder, timeout=60)
        print(f"failover after deleting the leader pod: {time.monotonic() - deleted:.1f}s")
        assert run_until_finished(namespace, "hello-2", "hello") == "Succeeded"
        jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json"))["items"]
        assert sorted(j["metadata"]["name"] for j in jobs) == ["hello-1-1", "hello-2-1"]

        helm("uninstall", release, "-n", system, "--wait", "--timeout", "2m")
        installed = False
        assert not helm("list", "-n", system, "-q")
        wait_until("no pods of the release", lambda: not pods(system, release), timeout=120)
        assert not kubectl("get", "deployments,roles", "-n", system, "-l", f"app.kubernetes.io/instance={release}",
                           "-o", "name")
        assert not kubectl("get", "role", f"{release}-kubetasks", "-n", namespace, "--ignore-not-found", "-o", "name")
    finally:
        if installed:
            helm("uninstall", release, "-n", system, "--wait", check=False)
        kubectl("delete", "namespace", system, "--wait=false", check=False)
        operator.start()


def test_chart_lints_renders_both_modes_and_carries_the_crds():
    for crd in (REPO / "crds").glob("*.yaml"):
        assert (REPO / "charts/kubetasks/crds" / crd.name).read_text() == crd.read_text(), \
            f"charts/kubetasks/crds/{crd.name} drifted: copy crds/ again"
    assert "0 chart(s) failed" in helm("lint", "--strict", CHART)


    def kinds(*sets: str) -> list[tuple[str, str | None]]:
        args = [a for s in sets for a in ("--set", s)]
        docs = [d for d in yaml.safe_load_all(helm("template", "r", CHART, "-n", "sys", *args)) if d]
        return sorted((d["kind"], d["metadata"].get("namespace")) for d in docs)

    wide = kinds()
    assert ("ClusterRoleBinding", None) in wide
    assert [ns for k, ns in wide if k == "Role"] == ["sys"]  # the leader-election Lease only
    scoped = kinds("watchNamespaces={a,b}")
    assert [ns for k, ns in scoped if k == "Role"] == ["a", "b", "sys"]
    assert ("Service", "sys") not in kinds("metrics.enabled=false")
    assert not any(k == "Role" for k, _ in kinds("leaderElection.enabled=false"))
    kinds("replicaCount=3")
    done = subprocess.run([HELM, "template", "r", CHART, "--set", "replicaCount=2", "--set",
                           "leaderElection.enabled=false"], capture_output=True, text=True)
    assert done.returncode and "replicaCount" in done.stderr
