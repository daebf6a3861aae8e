"""The operator's reach, installed by the chart on the real cluster: with watchNamespaces [a, b] it
holds no namespaced right anywhere else (`kubectl auth can-i --list` as its ServiceAccount), and its
/metrics answers a task pod's token 403 and no token 401 (from inside a task pod), and a
ServiceAccount bound to the chart's metrics-reader ClusterRole gets metrics over TLS, through a
short-lived TokenRequest token (a real scrape, parsed as Prometheus would)."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import os
import re
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FINISHED_PHASES, TASK_IMAGE, VERSIONS, OperatorProcess, apply, get, kubectl, wait_until
from tests.integration.test_helm import CHART, helm, pods, ready

pytestmark = pytest.mark.cluster

# Run in a task pod: GET the operator's /metrics with the pod's own token (or none), print the
# status and the first line of the answer. The pod reaches the operator by its pod IP (no DNS here).
PROBE = """
import os, ssl, sys, urllib.error, urllib.request
url = os.environ["METRICS_URL"]
headers = {}
if os.environ.get("SEND_TOKEN"):
    headers["Authorization"] = "Bearer " + open("/var/run/secrets/kubernetes.io/serviceaccount/token").read().strip()
tls = ssl.create_default_context()
tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # an IP, not the certificate's names
try:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), context=tls, timeout=20) as r:
        status, body = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read().decode()
print("STATUS", status, body.splitlines()[0] if body else "")
"""


# A worktree's operator/ directory, mounted over the image's code: a branch whose image the
# cluster does not have yet (the cluster's node is this machine).
SOURCE = os.environ.get("KUBETASKS_TEST_OPERATOR_SOURCE")


def mount_source(system: str, release: str) -> None:
    patch = [{"op": "add", "path": "/spec/template/spec/volumes/-",
              "value": {"name": "source", "hostPath": {"path": f"{SOURCE}/kubetasks", "type": "Directory"}}},
             {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts/-",
              "value": {"name": "source", "mountPath": "/app/operator/kubetasks", "readOnly": True}}]
    deployment = f"deployment/{release}-kubetasks"
    kubectl("patch", deployment, "-n", system, "--type=json", "-p", json.dumps(patch))
    kubectl("rollout", "status", deployment, "-n", system, "--timeout=180s", timeout=200)
    wait_until("only the patched operator pod", lambda: all(
        any(v["name"] == "source" for v in p["spec"]["volumes"]) for p in pods(system, release)), timeout=120)


ROW = re.compile(r"^(\S+)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


def can_i_list(account: str, namespace: str) -> dict[str, set[str]]:
    """Resource -> verbs ``account`` may use in ``namespace``, from `kubectl auth can-i --list`
    (non-resource URLs aside)."""
    out = kubectl("auth", "can-i", "--list", f"--as={account}", "-n", namespace)
    rights: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        row = ROW.match(line)
        if row:
            rights.setdefault(row[1], set()).update(row[4].split())
    return rights


def run_probe(namespace: str, release: str, name: str, url: str, account: str, token: bool) -> str:
    task = {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"image": TASK_IMAGE, "imagePullPolicy": "Never", "command": ["python3", "-c", PROBE],
                     "serviceAccountName": account, "machine": {"preset": "micro"}, "retry": {"maxAttempts": 1},
                     "env": [{"name": "METRICS_URL", "value": url}, {"name": "SEND_TOKEN", "value": "1" if token else ""}]}}
    apply(task, namespace, instance=release)
    apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": f"{name}-1"},
           "spec": {"taskRef": name}}, namespace, instance=release)
    phase = wait_until(f"{name}-1 finished", lambda: (get("taskrun", f"{name}-1", namespace).get("status") or {})
                       .get("phase") in ("Succeeded", "Failed", "TimedOut") and get("taskrun", f"{name}-1", namespace)
                       ["status"]["phase"], timeout=180)
    assert phase == "Succeeded", get("taskrun", f"{name}-1", namespace).get("status")
    logs = kubectl("logs", "-n", namespace, f"job/{name}-1-1")
    return next(line for line in logs.splitlines() if line.startswith("STATUS"))


def scrape(ip: str, port: int, server_name: str, ca: str, token: str | None) -> tuple[int, str]:
    """GET /metrics over TLS from the pod IP, checking the certificate for the Service's name."""
    tls = ssl.create_default_context(cadata=ca)

    class Connection(http.client.HTTPSConnection):
        def connect(self) -> None:
            self.sock = tls.wrap_socket(socket.create_connection((ip, port), timeout=20), server_hostname=server_name)

    conn = Connection(ip, port, timeout=20)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
    response = conn.getresponse()
    return response.status, response.read().decode()


def test_watch_namespaces_confine_the_operator_and_metrics_need_a_readers_token(cluster, crds, namespace):
    release = f"kt-{uuid.uuid4().hex[:6]}"
    system, other_watched, outside = f"{release}-system", f"{release}-b", f"{release}-outside"
    account = f"system:serviceaccount:{system}:{release}-kubetasks"
    reader_binding = f"{release}-metrics-scrape"
    installed = False
    try:
        for ns in (system, other_watched, outside):
            kubectl("create", "namespace", ns)
        helm("install", release, CHART, "-n", system, "--set", f"watchNamespaces={{{namespace},{other_watched}}}",
             "--set", f"instanceID={release}", "--wait", "--timeout", "4m")
        installed = True
        if SOURCE:
            mount_source(system, release)

        # The operator's rights: namespaced ones in a and b only. Outside, what is left is
        # cluster-scoped: the CRD and namespace reads kopf needs, and the two reviews of /metrics.
        namespaced = set(kubectl("api-resources", "--namespaced=true", "-o", "name").split())
        inside = can_i_list(account, namespace)
        assert {"create", "delete"} <= inside["jobs.batch"] and "create" in inside["rolebindings.rbac.authorization.k8s.io"]
        for ns in (outside, "kube-system", "default"):
            rights = can_i_list(account, ns)
            assert not set(rights) & namespaced, (ns, rights)
            assert kubectl("auth", "can-i", "create", "jobs.batch", f"--as={account}", "-n", ns, check=False).strip() == "no"
        outside_rights = set(can_i_list(account, outside))
        print(f"the operator's rights outside a and b: {sorted(outside_rights)}")
        assert outside_rights <= {"customresourcedefinitions.apiextensions.k8s.io", "namespaces",
                                  "tokenreviews.authentication.k8s.io", "subjectaccessreviews.authorization.k8s.io",
                                  "selfsubjectaccessreviews.authorization.k8s.io",
                                  "selfsubjectrulesreviews.authorization.k8s.io",
                                  "selfsubjectreviews.authentication.k8s.io"}, outside_rights
        assert not kubectl("get", "clusterrole", f"{release}-kubetasks", "--ignore-not-found", "-o", "name")

        # /metrics from inside the cluster: the operator's pod IP, port 9090, HTTPS.
        pod = wait_until("the operator Ready", lambda: next((p for p in pods(system, release) if ready(p)), None))
        ip, port = pod["status"]["podIP"], 9090
        url = f"https://{ip}:{port}/metrics"
        assert run_probe(namespace, release, "no-token", url, "default", token=False).startswith("STATUS 401")
        forbidden = run_probe(namespace, release, "pod-token", url, "default", token=True)
        assert forbidden.startswith("STATUS 403") and f"system:serviceaccount:{namespace}:default" in forbidden, forbidden

        # A scraper's ServiceAccount bound to the chart's metrics-reader ClusterRole, with a
        # short-lived token from the TokenRequest API: a scrape over TLS that checks the
        # certificate against the chart's Secret, for the Service's name.
        kubectl("create", "serviceaccount", "prometheus", "-n", namespace)
        kubectl("create", "clusterrolebinding", reader_binding, f"--clusterrole={release}-kubetasks-metrics-reader",
                f"--serviceaccount={namespace}:prometheus")
        token = kubectl("create", "token", "prometheus", "-n", namespace, "--duration=10m").strip()
        secret = json.loads(kubectl("get", "secret", f"{release}-kubetasks-metrics-tls", "-n", system, "-o", "json"))
        ca = base64.b64decode(secret["data"]["tls.crt"]).decode()
        service_name = f"{release}-kubetasks-metrics.{system}.svc"
        status, body = wait_until("the reader's scrape", lambda: (r := scrape(ip, port, service_name, ca, token))
                                  and r[0] != 403 and r, timeout=30)  # RBAC caches settle
        assert status == 200, body
        families = {f.name: f for f in text_string_to_metric_families(body)}
        assert "kubetasks_runs_finished" in families and "kubetasks_api_requests" in families, sorted(families)
        print(f"scraped {len(families)} metric families with the reader's token")
        assert scrape(ip, port, service_name, ca, "not-a-token")[0] == 401
        assert scrape(ip, port, service_name, ca, None)[0] == 401
        try:  # plain HTTP is not served: no token crosses the network in clear
            plain = http.client.HTTPConnection(ip, port, timeout=10)
            plain.request("GET", "/metrics")
            plain_status: int | None = plain.getresponse().status
        except (http.client.HTTPException, OSError):
            plain_status = None
        assert plain_status in (None, 400), plain_status

        logs = kubectl("logs", "-n", system, pod["metadata"]["name"])
        assert "forbidden" not in logs.lower() and "Traceback" not in logs, logs[-3000:]
    finally:
        kubectl("delete", "clusterrolebinding", reader_binding, "--ignore-not-found", check=False)
        if installed:
            helm("uninstall", release, "-n", system, "--wait", check=False)
        for ns in (system, other_watched, outside):
            kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_a_run_in_a_refused_namespace_fails_at_once_with_the_reason_and_makes_nothing(cluster, crds, namespace, tmp_path):
    """The chart refuses kube-system, kube-public, kube-node-lease and its own namespace
    (KUBETASKS_REFUSED_NAMESPACES); here the test's namespace stands for them, with an operator of
    its own instance."""
    instance = f"refuse-{uuid.uuid4().hex[:6]}"
    op = OperatorProcess(tmp_path / "operator.log", namespaces=namespace,
                         env={"KUBETASKS_INSTANCE_ID": instance, "KUBETASKS_REFUSED_NAMESPACES": f"kube-system,{namespace}"})
    op.start()
    try:
        apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "hello"},
               "spec": {"image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never",
                        "command": ["python3", "-c", "print('hi')"], "machine": {"preset": "micro"}}},
              namespace, instance=instance)
        apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": "hello-1"},
               "spec": {"taskRef": "hello", "payload": {"n": 1}}}, namespace, instance=instance)
        status = wait_until("hello-1 finished", lambda: (s := get("taskrun", "hello-1", namespace).get("status") or {})
                            .get("phase") in FINISHED_PHASES and s, timeout=60)
        assert status["phase"] == "Failed" and status["error"]["type"] == "NamespaceNotAllowed", status
        assert f"{namespace!r}" in status["error"]["message"] and "allowSystemNamespaces" in status["error"]["message"]
        events = json.loads(kubectl("get", "events", "-n", namespace, "--field-selector",
                                    "involvedObject.name=hello-1", "-o", "json"))["items"]
        assert any(e["reason"] == "NamespaceNotAllowed" and e["type"] == "Warning" for e in events), events
        assert not kubectl("get", "jobs,configmaps,serviceaccounts,roles", "-n", namespace, "-l",
                           f"kubetasks.io/instance={instance}", "-o", "name")
    finally:
        op.stop()
