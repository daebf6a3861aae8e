"""The local cluster is real: a node, Jobs, OOM kills, in-cluster API access, kwok nodes."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from kubetasks.api.times import parse_time
from tests.conftest import KWOK_PLACEMENT, TASK_IMAGE, VERSIONS, apply, get, kubectl, wait_until

pytestmark = pytest.mark.cluster
PYTHON_IMAGE = VERSIONS["PYTHON_IMAGE"]


def pod_of_job(namespace: str, job: str) -> dict:
    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"job-name={job}", "-o", "json"))["items"]
    assert pods, f"no pod for job {job}"
    return pods[0]


def job(name: str, command: list[str], image: str = PYTHON_IMAGE, memory: str = "128Mi", extra: dict | None = None):
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never", "command": command,
                            "resources": {"limits": {"memory": memory, "cpu": "500m"}}}],
            **(extra or {})}}},
    }


def test_one_real_node_and_the_kwok_nodes_are_ready(cluster):
    nodes = json.loads(kubectl("get", "nodes", "-o", "json"))["items"]
    ready = {n["metadata"]["name"]: any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
             for n in nodes}
    real = [n for n in nodes if (n["metadata"].get("labels") or {}).get("type") != "kwok"]
    fake = [n for n in nodes if (n["metadata"].get("labels") or {}).get("type") == "kwok"]
    assert len(real) == 1 and ready[real[0]["metadata"]["name"]]
    assert real[0]["status"]["nodeInfo"]["kubeletVersion"] == VERSIONS["K8S_VERSION"]
    assert fake and all(ready[n["metadata"]["name"]] for n in fake)
    assert all(t["key"] == "kwok.x-k8s.io/node" for n in fake for t in n["spec"]["taints"])


def test_every_node_heartbeats_by_lease(cluster):
    """Without a Lease, a kwok node's only heartbeat was a status update about every 47 s, past the
    node controller's 40 s grace: it went NotReady once a minute, and each time every pod on it was
    marked NotReady with an Event per pod, load and noise in every test and bench."""
    nodes = {n["metadata"]["name"] for n in json.loads(kubectl("get", "nodes", "-o", "json"))["items"]}
    leases = {item["metadata"]["name"]: item["spec"] for item in json.loads(
        kubectl("get", "leases", "-n", "kube-node-lease", "-o", "json"))["items"]}
    assert nodes <= set(leases), f"nodes without a Lease: {sorted(nodes - set(leases))}"
    now = datetime.now(timezone.utc)
    renewed = {n: parse_time(leases[n].get("renewTime")) for n in nodes}
    stale = {n: t for n, t in renewed.items()
             if t is None or (now - t).total_seconds() > leases[n]["leaseDurationSeconds"]}
    assert not stale, f"Leases not renewed within their duration: {stale}"


def test_a_python_job_completes_and_its_logs_are_readable(namespace):
    apply(job("hello", ["python3", "-c", "import sys; print('hello from', sys.version.split()[0])"]), namespace)
    kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/hello", "--timeout=120s")
    assert kubectl("logs", "-n", namespace, "job/hello").startswith("hello from 3.")


def test_a_pod_over_its_memory_limit_is_oom_killed(namespace):
    hog = "x = bytearray(256 * 1024 * 1024); print(len(x))"
    apply(job("hog", ["python3", "-c", hog], memory="64Mi"), namespace)
    kubectl("wait", "-n", namespace, "--for=condition=Failed", "job/hog", "--timeout=120s")
    terminated = pod_of_job(namespace, "hog")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled" and terminated["exitCode"] == 137


def test_a_pod_reaches_the_api_server_with_its_service_account(namespace):
    script = ("from kubernetes import client, config; config.load_incluster_config(); "
              "print(client.VersionApi().get_code().git_version); "
              "print(len(client.CoreV1Api().list_namespaced_config_map('%s').items) >= 1)" % namespace)
    kubectl("create", "rolebinding", "view", "-n", namespace, "--clusterrole=view",
            f"--serviceaccount={namespace}:default")
    wait_until("the default service account", lambda: kubectl("get", "sa", "default", "-n", namespace, check=False))
    apply(job("incluster", ["python3", "-c", script], image=TASK_IMAGE), namespace)
    kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/incluster", "--timeout=120s")
    assert kubectl("logs", "-n", namespace, "job/incluster").split() == [VERSIONS["K8S_VERSION"], "True"]


def test_kwok_nodes_run_jobs_that_tolerate_them(namespace):
    apply(job("fake", ["true"], extra=KWOK_PLACEMENT), namespace)
    kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/fake", "--timeout=120s")
    assert pod_of_job(namespace, "fake")["spec"]["nodeName"].startswith("kwok-node-")
    assert get("job", "fake", namespace)["status"]["succeeded"] == 1
