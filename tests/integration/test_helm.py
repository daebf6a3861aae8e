"""The Helm chart on the real cluster: install namespace-scoped with two replicas under the
`restricted` Pod Security Standard and OpenShift's OwnerReferencesPermissionEnforcement, run
TaskRuns, fail the leader over, uninstall; and the least-privilege RBAC, NetworkPolicy and
admission policy it renders."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import (CACHE, KUBECONFIG, REPO, TASK_IMAGE, VERSIONS, apply, component_pid, get, kubectl,
                            kubectl_run, lease_holder, run_until_finished, wait_until)

pytestmark = pytest.mark.cluster
HELM = str(CACHE / "bin" / f"helm-{VERSIONS['HELM_VERSION']}" / "helm")
CHART = str(REPO / "charts" / "kubetasks")
IMAGE = VERSIONS["PYTHON_IMAGE"]
RESTRICTED = "restricted"


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


OWNER_REFS = "OwnerReferencesPermissionEnforcement"
EXAMPLES_PATH = "/app/operator:/app/examples/python"


def admission_plugins() -> set[str] | None:
    """The admission plugins the local kube-apiserver runs with, from its command line; None when
    it is no process of this machine (hack/cluster/up.sh writes its pid file)."""
    try:
        args = (Path("/proc") / str(component_pid("kube-apiserver")) / "cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    flag = b"--enable-admission-plugins="
    return {p for a in args if a.startswith(flag) for p in a[len(flag):].decode().split(",")}


def owner_references_enforced() -> None:
    """Waits until kube-apiserver runs with OwnerReferencesPermissionEnforcement (hack/cluster/up.sh
    turns it on; a cluster started before that gets it at its next restart), then until it is
    ready. A cluster elsewhere is left to the behavioural test below."""
    wait_until(f"kube-apiserver running with {OWNER_REFS} (hack/cluster/up.sh)",
               lambda: (found := admission_plugins()) is None or OWNER_REFS in found, timeout=300, interval=2)
    wait_until("the API server ready", lambda: kubectl("get", "--raw", "/readyz", check=False) == "ok", timeout=120)


def test_owner_references_need_the_owners_finalizers_and_the_chart_grants_them(cluster, crds, namespace):
    """The plugin as OpenShift runs it: whoever creates a child with blockOwnerDeletion on a
    TaskRun needs update on taskruns/finalizers, which is what the chart grants its operator."""
    owner_references_enforced()
    account = "maker"
    as_maker = f"--as=system:serviceaccount:{namespace}:{account}"
    # Labelled for no operator: nobody reconciles it; it is only an owner.
    apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": "owner"},
           "spec": {"taskRef": "none"}}, namespace, instance=f"nobody-{uuid.uuid4().hex[:6]}")
    uid = get("taskrun", "owner", namespace)["metadata"]["uid"]
    kubectl("create", "serviceaccount", account, "-n", namespace)
    kubectl("create", "role", "jobs", "--verb=create", "--resource=jobs.batch", "-n", namespace)
    kubectl("create", "rolebinding", "jobs", "--role=jobs", f"--serviceaccount={namespace}:{account}", "-n", namespace)

    def job(block: bool) -> str:
        ref = {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "name": "owner", "uid": uid,
               "controller": True, "blockOwnerDeletion": block}
        return json.dumps({"apiVersion": "batch/v1", "kind": "Job", "metadata": {
            "name": "child", "namespace": namespace, "ownerReferences": [ref]}, "spec": {"suspend": True, "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": IMAGE}]}}}})

    def create_job(block: bool) -> subprocess.CompletedProcess[str]:
        return kubectl_run(as_maker, "create", "--dry-run=server", "-f", "-", input=job(block))

    wait_until("the maker may create Jobs", lambda: create_job(False).returncode == 0)
    denied = create_job(True)
    assert denied.returncode and "blockOwnerDeletion" in denied.stderr, denied.stderr
    # The chart's own rule for the owners' finalizers is what lets it through.
    rules = [r for d in render() if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "r-kubetasks"
             for r in d["rules"] if "taskruns/finalizers" in r["resources"]]
    assert rules == [{"apiGroups": ["kubetasks.io"], "resources": ["tasks/finalizers", "taskruns/finalizers"],
                      "verbs": ["update"]}], rules
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "finalizers"},
         "rules": rules}))
    kubectl("create", "rolebinding", "finalizers", "--role=finalizers", f"--serviceaccount={namespace}:{account}",
            "-n", namespace)
    wait_until("the maker may set blockOwnerDeletion", lambda: create_job(True).returncode == 0)


def test_helm_install_runs_a_task_and_uninstalls(cluster, namespace, operator):
    # The release is an operator instance of its own: the session's operator keeps running beside
    # it, and each acts only on the objects labelled for it. Every child it makes (Jobs, ConfigMaps,
    # a run's identity) carries blockOwnerDeletion: under OwnerReferencesPermissionEnforcement
    # (OpenShift's default), each create needs the chart's right to update the owner's finalizers.
    owner_references_enforced()
    release = f"kt-{uuid.uuid4().hex[:6]}"
    system = f"{release}-system"
    installed = False
    try:
        kubectl("create", "namespace", system)
        # The operator's pods and the task pods are admitted under the restricted Pod Security Standard.
        for ns in (system, namespace):
            kubectl("label", "namespace", ns, f"pod-security.kubernetes.io/enforce={RESTRICTED}",
                    "pod-security.kubernetes.io/enforce-version=latest", "--overwrite")
        helm("install", release, CHART, "-n", system, "--set", f"watchNamespaces={{{namespace}}}",
             "--set", "replicaCount=2", "--set", f"instanceID={release}", "--wait", "--timeout", "4m")
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
        assert {"name": "KUBETASKS_INSTANCE_ID", "value": release} in spec["env"]
        # Namespace-scoped: a Role in the watched namespace, no cluster-wide operator rules.
        kubectl("get", "role", f"{release}-kubetasks", "-n", namespace)
        assert not kubectl("get", "clusterrole", f"{release}-kubetasks", "--ignore-not-found", "-o", "name")
        kubectl("get", "networkpolicy", f"{release}-kubetasks", "-n", system)
        kubectl("get", "validatingadmissionpolicy,validatingadmissionpolicybinding", f"{release}-kubetasks-run-triggers")
        kubectl("get", "validatingadmissionpolicy,validatingadmissionpolicybinding", f"{release}-kubetasks-run-status")

        apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "hello"},
               "spec": {"image": IMAGE, "imagePullPolicy": "Never", "command": ["python3", "-c", "print('hi')"],
                        "machine": {"preset": "micro"}}}, namespace, instance=release)
        assert run_until_finished(namespace, "hello-1", "hello", instance=release) == "Succeeded"
        # Its status policy admitted its operator's writes (hello-1 ran) and admits no one else's,
        # a cluster admin's neither.
        forged = ("patch", "taskrun", "hello-1", "-n", namespace, "--subresource=status", "--type=merge", "-p",
                  '{"status": {"phase": "Failed"}}', "--dry-run=server", "--as=admin@example.com",
                  "--as-group=system:masters")
        wait_until("the status policy in force",
                   lambda: "is written only by the kubetasks operator" in kubectl_run(*forged).stderr, timeout=60)
        # A runtime task: its own ServiceAccount, Role and RoleBinding, its checkpoint ConfigMap and
        # a Job per attempt, all owned by the run; a durable sleep in between.
        apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "sleeper"},
               "spec": {"image": TASK_IMAGE, "imagePullPolicy": "Never", "entrypoint": "kubetasks_examples.sleeper:sleeper",
                        "env": [{"name": "PYTHONPATH", "value": EXAMPLES_PATH}]}}, namespace, instance=release)
        apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": "sleeper-1"},
               "spec": {"taskRef": "sleeper", "payload": {"seconds": 2}}}, namespace, instance=release)
        slept = wait_until("sleeper-1 finished", lambda: (s := get("taskrun", "sleeper-1", namespace).get("status") or {})
                           .get("phase") in ("Succeeded", "Failed", "Cancelled", "TimedOut") and s, timeout=240)
        assert slept["phase"] == "Succeeded" and slept["result"]["attempt"] == 2, slept
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
        assert run_until_finished(namespace, "hello-2", "hello", instance=release) == "Succeeded"
        jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json"))["items"]
        assert sorted(j["metadata"]["name"] for j in jobs) == ["hello-1-1", "hello-2-1", "sleeper-1-1", "sleeper-1-2"]
        assert {j["metadata"]["labels"].get("kubetasks.io/instance") for j in jobs} == {release}

        helm("uninstall", release, "-n", system, "--wait", "--timeout", "2m")
        installed = False
        assert not helm("list", "-n", system, "-q")
        wait_until("no pods of the release", lambda: not pods(system, release), timeout=120)
        assert not kubectl("get", "deployments,roles", "-n", system, "-l", f"app.kubernetes.io/instance={release}",
                           "-o", "name")
        assert not kubectl("get", "role", f"{release}-kubetasks", "-n", namespace, "--ignore-not-found", "-o", "name")
        assert not kubectl("get", "validatingadmissionpolicy", f"{release}-kubetasks-run-triggers",
                           "--ignore-not-found", "-o", "name")
    finally:
        if installed:
            helm("uninstall", release, "-n", system, "--wait", check=False)
        kubectl("delete", "namespace", system, "--wait=false", check=False)


def render(*sets: str) -> list[dict]:
    args = [a for s in sets for a in ("--set", s)]
    return [d for d in yaml.safe_load_all(helm("template", "r", CHART, "-n", "sys", *args)) if d]


def kinds(*sets: str) -> list[tuple[str, str | None]]:
    return sorted((d["kind"], d["metadata"].get("namespace")) for d in render(*sets))


def test_chart_lints_renders_both_modes_and_carries_the_crds():
    for crd in (REPO / "crds").glob("*.yaml"):
        assert (REPO / "charts/kubetasks/crds" / crd.name).read_text() == crd.read_text(), \
            f"charts/kubetasks/crds/{crd.name} drifted: copy crds/ again"
    assert "0 chart(s) failed" in helm("lint", "--strict", CHART)

    wide = kinds()
    assert ("ClusterRoleBinding", None) in wide
    assert [ns for k, ns in wide if k == "Role"] == ["sys"]  # the leader-election Lease only
    scoped = kinds("watchNamespaces={a,b}")
    assert [ns for k, ns in scoped if k == "Role"] == ["a", "b", "sys"]
    assert ("Service", "sys") not in kinds("metrics.enabled=false", "queueWebhook.enabled=false")
    assert not any(k == "Role" for k, _ in kinds("leaderElection.enabled=false"))
    kinds("replicaCount=3")
    done = subprocess.run([HELM, "template", "r", CHART, "--set", "replicaCount=2", "--set",
                           "leaderElection.enabled=false"], capture_output=True, text=True)
    assert done.returncode and "replicaCount" in done.stderr


def test_the_operator_holds_no_more_than_it_needs_and_all_it_grants():
    from kubetasks.api import Task, TaskRun
    from kubetasks.core.render import render_parent_access, render_run_identity

    for mode in ((), ("watchNamespaces={a}",)):
        docs = render(*mode)
        roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole") and not d["metadata"]["name"].endswith(
            ("-leader-election", "-discovery", "-metrics-auth", "-metrics-reader", "-why-caller", "-payload-uploader",
             "-event-sender"))]
        assert len(roles) == 1, [r["metadata"]["name"] for r in roles]
        # The roles users are bound to for `kubetasks why` (and logs, results) and for uploading
        # payloads: the operator's Service proxy, nothing else.
        caller = next(d for d in docs if d["metadata"]["name"].endswith("-why-caller"))
        assert [(r["resources"], r["verbs"]) for r in caller["rules"]] == [(["services/proxy"], ["get"])]
        uploader = next(d for d in docs if d["metadata"]["name"].endswith("-payload-uploader"))
        assert [(r["resources"], r["verbs"]) for r in uploader["rules"]] == [(["services/proxy"], ["update"])]
        sender = next(d for d in docs if d["metadata"]["name"].endswith("-event-sender"))  # kubetasks send
        assert [(r["resources"], r["verbs"]) for r in sender["rules"]] == [(["taskevents"], ["create", "get"])]
        rules = roles[0]["rules"]
        granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
        assert not any("*" in (g, r, v) for g, r, v in granted)
        assert not {v for _, _, v in granted} & {"escalate", "bind", "impersonate"}
        assert not {r for _, r, _ in granted} & {"secrets", "pods/exec", "pods/attach", "clusterroles",
                                                 "clusterrolebindings", "nodes"}
        assert {v for g, r, v in granted if r == "tasks"} == {"get", "list", "watch"}  # Tasks are the users'
        discovery = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-discovery"))
        assert {v for rule in discovery["rules"] for v in rule["verbs"]} <= {"get", "list", "watch"}

        # RBAC lets the operator grant only what it holds (no escalate/bind): everything it puts in a
        # run's Role, and in a parent's access to its child, must be in its own rules.
        task = Task.model_validate({"metadata": {"name": "t"}, "spec": {"image": "i:1", "entrypoint": "m:f",
                                                                        "allowTrigger": ["c"]}})
        run = TaskRun.model_validate({"metadata": {"name": "r", "namespace": "a", "uid": "0123abcd-x"},
                                      "spec": {"taskRef": "t"}})
        child = TaskRun.model_validate({"metadata": {"name": "c1", "namespace": "a", "uid": "4567abcd-y"},
                                        "spec": {"taskRef": "c", "parentRun": "r"}})
        given = [o for o in render_run_identity(run, task) + render_parent_access(child, run, task) if o["kind"] == "Role"]
        for rule in (rule for role in given for rule in role["rules"]):
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        assert (g, r, v) in granted, f"the operator grants {v} {r} but does not hold it"


def test_with_a_store_the_operator_may_create_secrets_and_nothing_more_of_them():
    for mode in ((), ("watchNamespaces={a}",)):
        rules = [r for d in render("storage.type=s3", "storage.bucket=b", *mode) if d["kind"] in ("Role", "ClusterRole")
                 for r in d.get("rules") or [] if "secrets" in r.get("resources", [])]
        assert [(r["resources"], r["verbs"]) for r in rules] == [(["secrets"], ["create"])]  # upload grants only


def test_metrics_are_reachable_only_from_allowed_peers():
    policy = next(d for d in render() if d["kind"] == "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rule, hook = policy["spec"]["ingress"]
    assert hook == {"ports": [{"port": "webhook", "protocol": "TCP"}]}  # kube-apiserver's calls, from wherever it is
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    custom = next(d for d in render("metrics.allowFrom[0].podSelector.matchLabels.app=prometheus")
                  if d["kind"] == "NetworkPolicy")
    assert custom["spec"]["ingress"][0]["from"][0]["podSelector"] == {"matchLabels": {"app": "prometheus"}}
    # No peers, or no metrics: a rule without `from` would admit everyone, so there is no rule at all.
    for sets in (("metrics.allowFrom=null",), ("metrics.enabled=false",)):
        policy = next(d for d in render(*sets) if d["kind"] == "NetworkPolicy")
        assert policy["spec"]["ingress"] == [hook], sets
        policy = next(d for d in render(*sets, "queueWebhook.enabled=false") if d["kind"] == "NetworkPolicy")
        assert policy["spec"]["ingress"] == [], sets
    assert not any(d["kind"] == "NetworkPolicy" for d in render("networkPolicy.enabled=false"))


def test_with_a_filesystem_store_task_pods_reach_its_grants_and_nothing_more():
    from kubetasks.core.naming import LABEL_MANAGED_BY, MANAGER

    docs = render("storage.type=filesystem", "watchNamespaces={a,b}")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-grants"))
    assert env["KUBETASKS_STORAGE_GRANT_URL"] == f"http://{service['metadata']['name']}.sys.svc:8081"
    assert env["KUBETASKS_STORAGE_GRANT_PORT"] == "8081"
    assert {"name": "grants", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "grants"
    rule = next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]["ingress"][-1]
    assert rule == {"from": [{"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["a", "b"]}]},
        "podSelector": {"matchLabels": {LABEL_MANAGED_BY: MANAGER}}}],  # the task pods the operator labels
        "ports": [{"port": "grants", "protocol": "TCP"}]}
    # S3 checks its own URLs: no grant server, no port, no rule.
    docs = render("storage.type=s3", "storage.bucket=b")
    assert not any(d["kind"] == "Service" and d["metadata"]["name"].endswith("-grants") for d in docs)
    assert "grants" not in json.dumps(next(d for d in docs if d["kind"] == "Deployment"))
    assert "grants" not in json.dumps(next(d for d in docs if d["kind"] == "NetworkPolicy"))


def test_the_admission_policy_ships_by_default():
    for suffix in ("-run-triggers", "-run-tokens"):
        docs = [d for d in render() if d["metadata"]["name"].endswith(suffix)]
        policy = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
        binding = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding")
        assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
        assert policy["spec"]["failurePolicy"] == "Fail"
        assert not any(d["kind"].startswith("ValidatingAdmission") and d["metadata"]["name"].endswith(suffix)
                       for d in render("admissionPolicy.enabled=false"))


def test_the_trigger_depth_cap_reaches_the_operator():
    def env(*sets: str) -> dict[str, str]:
        deployment = next(d for d in render(*sets) if d["kind"] == "Deployment")
        return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env()["KUBETASKS_MAX_TRIGGER_DEPTH"] == "10"
    assert env("maxTriggerDepth=3")["KUBETASKS_MAX_TRIGGER_DEPTH"] == "3"
    done = subprocess.run([HELM, "template", "r", CHART, "--set", "maxTriggerDepth=-1"], capture_output=True, text=True)
    assert done.returncode and "maxTriggerDepth" in done.stderr


def test_the_status_policy_ships_by_default_for_the_releases_own_runs_and_operator():
    def status_policy(*sets: str) -> list[dict]:
        return [d for d in render(*sets) if d["metadata"]["name"] == "r-kubetasks-run-status"]

    policy, binding = status_policy()
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail" and spec["matchConstraints"]["resourceRules"][0]["resources"] == ["taskruns/status"]
    assert spec["matchConstraints"]["objectSelector"]["matchExpressions"] == [
        {"key": "kubetasks.io/instance", "operator": "DoesNotExist"}]
    assert '"system:serviceaccount:sys:r-kubetasks"' in spec["matchConditions"][0]["expression"]
    assert [v["expression"].split("has(object.status.")[1].split(")")[0] for v in spec["validations"]] == [
        "phase", "attempt", "attempts", "result", "resultRef", "error", "triggerDepth", "hooks", "metadata",
        "ancestorMetadata"]
    policy, _ = status_policy("instanceID=team-b", "serviceAccount.name=ops", "statusPolicy.extraWriters={alice}")
    assert policy["spec"]["matchConstraints"]["objectSelector"]["matchExpressions"] == [
        {"key": "kubetasks.io/instance", "operator": "In", "values": ["team-b"]}]
    assert '["system:serviceaccount:sys:ops","alice"]' in policy["spec"]["matchConditions"][0]["expression"]
    assert not status_policy("statusPolicy.enabled=false")


def test_metrics_are_served_over_tls_to_readers_or_on_localhost_only():
    docs = render()
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "r-kubetasks-metrics-tls")
    assert secret["type"] == "kubernetes.io/tls" and {"tls.crt", "tls.key"} <= set(secret["data"])
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBETASKS_METRICS_CERT_DIR"] == "/var/run/kubetasks/metrics-tls" and "KUBETASKS_METRICS_BIND_ADDRESS" not in env
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    assert roles["r-kubetasks-metrics-reader"]["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    assert {(g, r, v) for rule in roles["r-kubetasks-metrics-auth"]["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]} == {
        ("authentication.k8s.io", "tokenreviews", "create"), ("authorization.k8s.io", "subjectaccessreviews", "create")}
    bound = {d["roleRef"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"}
    assert "r-kubetasks-metrics-auth" in bound and "r-kubetasks-metrics-reader" not in bound  # yours to bind
    # Your own certificate (cert-manager): no Secret made, yours mounted.
    own = render("metrics.tls.secretName=mine")
    assert not any(d["kind"] == "Secret" and d["metadata"]["name"].endswith("-metrics-tls") for d in own)
    volumes = next(d for d in own if d["kind"] == "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "metrics-tls", "secret": {"secretName": "mine"}} in volumes
    # On localhost, for a sidecar: no token, no TLS, no Service, no review rights, no one let in.
    local = render("metrics.localhostOnly=true", "queueWebhook.enabled=false")
    container = next(d for d in local if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBETASKS_METRICS_BIND_ADDRESS"] == "127.0.0.1" and "KUBETASKS_METRICS_CERT_DIR" not in env
    assert not any(d["kind"] in ("Service", "Secret") or d["metadata"]["name"].endswith("-metrics-auth") for d in local)
    assert next(d for d in local if d["kind"] == "NetworkPolicy")["spec"]["ingress"] == []


def test_without_watch_namespaces_the_system_namespaces_are_refused_unless_allowed():
    def refused(*sets: str) -> str | None:
        container = next(d for d in render(*sets) if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}.get("KUBETASKS_REFUSED_NAMESPACES")

    assert refused() == "kube-system,kube-public,kube-node-lease,sys"
    assert refused("allowSystemNamespaces=true") is None
    assert refused("watchNamespaces={a}") is None  # the listed namespaces are the ones it acts in


def test_the_queue_webhook_ships_by_default_for_the_releases_own_runs():
    import base64

    docs = render()
    (config,) = [d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]
    (hook,) = config["webhooks"]
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"  # a down operator stops no create
    assert hook["rules"] == [{"apiGroups": ["kubetasks.io"], "apiVersions": ["*"], "operations": ["CREATE"],
                              "resources": ["taskruns"], "scope": "Namespaced"}]
    assert hook["objectSelector"] == {"matchExpressions": [{"key": "kubetasks.io/instance", "operator": "DoesNotExist"}]}
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "r-kubetasks-webhook-tls")
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert b"BEGIN CERTIFICATE" in base64.b64decode(secret["data"]["ca.crt"])
    service = hook["clientConfig"]["service"]
    assert (service["name"], service["namespace"], service["path"]) == ("r-kubetasks-webhook", "sys", "/validate-taskruns")
    assert any(d["kind"] == "Service" and d["metadata"]["name"] == "r-kubetasks-webhook" for d in docs)
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBETASKS_WEBHOOK_PORT"] == "9443" and env["KUBETASKS_WEBHOOK_CERT_DIR"] == "/var/run/kubetasks/webhook-tls"
    (scoped,) = [d for d in render("instanceID=team-a", "watchNamespaces={a,b}")
                 if d["kind"] == "ValidatingWebhookConfiguration"]
    assert scoped["webhooks"][0]["objectSelector"]["matchExpressions"] == [
        {"key": "kubetasks.io/instance", "operator": "In", "values": ["team-a"]}]
    assert scoped["webhooks"][0]["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["a", "b"]}]
    assert not any(d["kind"] == "ValidatingWebhookConfiguration" for d in render("queueWebhook.enabled=false"))


def test_the_object_store_values_reach_the_operator():
    from kubetasks.blobs import StorageConfig
    from kubetasks.core.step_grants import slots_from_env

    def operator(*sets: str) -> tuple[dict, list[dict]]:
        docs = render(*sets)
        spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
        return spec, docs

    def env(spec: dict) -> dict[str, str]:
        return {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}

    # No store by default: the limits of etcd hold.
    spec, docs = operator()
    assert StorageConfig.from_env(env(spec)) is None
    assert "envFrom" not in spec["containers"][0]
    assert not any(d["kind"] == "PersistentVolumeClaim" for d in docs)

    spec, _ = operator("storage.type=s3", "storage.bucket=kt", "storage.endpoint=http://seaweedfs:8333",
                       "storage.region=eu-west-1", "storage.credentialsSecret=kt-store", "storage.threshold=1048576",
                       "storage.sweepSeconds=60", "storage.stepSlots=8", "instanceID=team-b")
    config = StorageConfig.from_env(env(spec))
    assert config is not None
    assert (config.url, config.endpoint, config.region, config.threshold) == (
        "s3://kt/team-b", "http://seaweedfs:8333", "eu-west-1", 1048576)  # the prefix: the instance's own
    assert env(spec)["KUBETASKS_STORAGE_SWEEP_SECONDS"] == "60"
    assert slots_from_env(env(spec)) == 8  # upload slots for large step outputs (core.step_grants)
    assert spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "kt-store"}}]
    for sets, url in ((("storage.type=gcs", "storage.bucket=b", "storage.prefix=/x/y/"), "gs://b/x/y"),
                      (("storage.type=azure", "storage.bucket=c"), "az://c")):
        assert env(operator(*sets)[0])["KUBETASKS_STORAGE_URL"] == url

    # The filesystem backend: a claim the chart makes (kept on uninstall), or one named.
    spec, docs = operator("storage.type=filesystem", "storage.pvc.size=5Gi")
    claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "store")
    assert env(spec)["KUBETASKS_STORAGE_URL"] == f"file://{mount['mountPath']}"
    assert next(v for v in spec["volumes"] if v["name"] == "store")["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"]}
    spec, docs = operator("storage.type=filesystem", "storage.pvc.claimName=mine")
    assert not any(d["kind"] == "PersistentVolumeClaim" for d in docs)
    assert next(v for v in spec["volumes"] if v["name"] == "store")["persistentVolumeClaim"] == {"claimName": "mine"}

    for bad in (("storage.type=s3",), ("storage.type=minio", "storage.bucket=b")):  # no bucket; no such type
        done = subprocess.run([HELM, "template", "r", CHART, *[a for s in bad for a in ("--set", s)]],
                              capture_output=True, text=True)
        assert done.returncode and "storage" in done.stderr


def test_tracing_is_off_by_default_and_its_endpoints_reach_the_operator():
    from kubetasks.core.tracing import ENV_POD_ENDPOINT, endpoint

    def env(*sets: str) -> dict[str, str]:
        spec = next(d for d in render(*sets) if d["kind"] == "Deployment")["spec"]["template"]["spec"]
        return {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}

    assert endpoint(env()) is None and ENV_POD_ENDPOINT not in env()
    on = env("tracing.otlpEndpoint=http://jaeger.tracing:4318", "tracing.podEndpoint=http://10.0.0.5:4318")
    assert endpoint(on) == "http://jaeger.tracing:4318" and on[ENV_POD_ENDPOINT] == "http://10.0.0.5:4318"
    assert ENV_POD_ENDPOINT not in env("tracing.podEndpoint=http://10.0.0.5:4318")  # no endpoint: no tracing
    done = subprocess.run([HELM, "template", "r", CHART, "--set", "tracing.otlpEndpoint=jaeger:4318"],
                          capture_output=True, text=True)
    assert done.returncode and "otlpEndpoint" in done.stderr  # a URL, with its scheme


def test_signed_token_urls_are_off_by_default_and_when_on_their_key_reaches_the_operator_only():
    assert "token-url" not in json.dumps(render())
    docs = render("tokens.completionUrl.enabled=true", "tokens.completionUrl.baseUrl=https://tasks.example.com")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBETASKS_TOKEN_URL_BASE"] == "https://tasks.example.com" and env["KUBETASKS_TOKEN_URL_PORT"] == "8082"
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-token-url"))
    assert len(base64.b64decode(secret["data"]["key"])) >= 32
    assert {"name": "token-url", "secret": {"secretName": secret["metadata"]["name"], "defaultMode": 0o400}} \
        in pod["volumes"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "token-url")
    assert env["KUBETASKS_TOKEN_URL_KEY_FILE"] == mount["mountPath"] + "/key" and mount["readOnly"]
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-tokens"))
    assert service["spec"]["ports"][0]["targetPort"] == "tokens" and \
        {"name": "tokens", "containerPort": 8082, "protocol": "TCP"} in container["ports"]
    rule = next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]["ingress"][-1]
    assert rule == {"ports": [{"port": "tokens", "protocol": "TCP"}]}  # from the outside: the signature decides
    # The operator reads no Secret for it (mounted), and patches only the tokens' status, as it did.
    granted = {(g, r, v) for d in docs if d["kind"] in ("Role", "ClusterRole") for rule in d.get("rules") or []
               for g in rule.get("apiGroups", []) for r in rule.get("resources", []) for v in rule["verbs"]}
    assert not {("", "secrets", v) for v in ("get", "list", "watch")} & granted
    assert ("kubetasks.io", "waitpoints/status", "patch") in granted
    missing = subprocess.run([HELM, "template", "r", str(CHART), "--set", "tokens.completionUrl.enabled=true"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "tokens.completionUrl.baseUrl is required" in missing.stderr
