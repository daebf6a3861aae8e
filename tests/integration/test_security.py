"""A hostile task on the real cluster: what a run's pods can reach with their own token.

The task is an SDK task (an ``entrypoint``, so it gets its run's ServiceAccount, Role and token)
whose entry point is ``subprocess:getoutput``: its payload is a shell command, here a Python
script that calls the API server over raw HTTPS with the pod's token and returns every status
code as the run's result. It must reach its own run and checkpoints and nothing else: not another
run, another run's checkpoints, Secrets, its own status, nor (beyond its Task's allowTrigger)
new runs. All of it in a namespace that enforces the `restricted` Pod Security Standard.
"""

from __future__ import annotations

import base64
import json
import textwrap
import uuid
from collections.abc import Iterator

import pytest
import yaml

from tests.conftest import TASK_IMAGE, apply, get, kubectl, kubectl_run, wait_until
from tests.integration.test_helm import CHART, helm

pytestmark = pytest.mark.cluster
FINISHED = {"Succeeded", "Failed", "Cancelled", "TimedOut", "Duplicate"}
RELEASE = "kubetasks-tests"  # the admission policy as the chart renders it for this release
# The policy's own words: every release installs the same policy under its own name (`make demo`'s
# too), and the API server names whichever denied first, so its name is no proof of which.
POLICY = "may create TaskRuns only with spec.parentRun naming their own run"
PROBE_ACCOUNT = "probe-0123abcd-run"  # shaped like a run's ServiceAccount, for impersonation

# Runs in the task pod. VICTIM, VICTIM_STEPS are filled in; the rest comes from the pod.
HOSTILE = textwrap.dedent('''
    import json, os, ssl, urllib.error, urllib.request
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    token = open(sa + "/token").read().strip()
    tls = ssl.create_default_context(cafile=sa + "/ca.crt")
    api = "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
    ns, run, steps = os.environ["KUBETASKS_NAMESPACE"], os.environ["KUBETASKS_RUN"], os.environ["KUBETASKS_CHECKPOINTS"]
    R = "/apis/kubetasks.io/v1alpha1/namespaces/%s/taskruns" % ns
    C = "/api/v1/namespaces/%s/configmaps" % ns
    MERGE = "application/merge-patch+json"

    def call(method, path, body=None, ctype="application/json"):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(api + path, data=data, method=method, headers={
            "Authorization": "Bearer " + token, "Content-Type": ctype, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, context=tls, timeout=20) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code

    def child(task, name, parent):
        spec = {"taskRef": task}
        if parent:
            spec["parentRun"] = parent
        labels = {"kubetasks.io/instance": os.environ["KUBETASKS_INSTANCE_ID"]}  # as the SDK does: its operator's
        return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name, "labels": labels},
                "spec": spec}

    checks = {
        "own run": call("GET", "%s/%s" % (R, run)),
        "own checkpoints": call("GET", "%s/%s" % (C, steps)),
        "own checkpoints, patched": call("PATCH", "%s/%s" % (C, steps), {"data": {"probe": "1"}}, MERGE),
        "another run": call("GET", "%s/VICTIM" % R),
        "another run's checkpoints": call("GET", "%s/VICTIM_STEPS" % C),
        "another run's checkpoints, patched": call("PATCH", "%s/VICTIM_STEPS" % C, {"data": {"x": "1"}}, MERGE),
        "every run": call("GET", R),
        "a Secret": call("GET", "/api/v1/namespaces/%s/secrets/db-password" % ns),
        "every Secret": call("GET", "/api/v1/namespaces/%s/secrets" % ns),
        "own status, patched": call("PATCH", "%s/%s/status" % (R, run), {"status": {"phase": "Succeeded"}}, MERGE),
        "own spec, patched": call("PATCH", "%s/%s" % (R, run), {"spec": {"payload": "forged"}}, MERGE),
        "a run of a Task not allowed": call("POST", R, child("privileged", run + "-priv", run)),
        "a run as another run's child": call("POST", R, child("privileged", run + "-as-victim", "VICTIM")),
        "a run with no parent": call("POST", R, child("privileged", run + "-orphan", None)),
        "a run of an allowed Task": call("POST", R, child("helper", run + "-helper", run)),
        "a pod": call("POST", "/api/v1/namespaces/%s/pods" % ns, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": run + "-pod"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        "a RoleBinding to admin": call("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/%s/rolebindings" % ns, {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": run + "-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]}),
    }
    # Its allowed child becomes readable once the operator has allowed it (a poll, with a deadline);
    # the child it may not trigger never does.
    import time
    end = time.monotonic() + 60
    read = 403
    while checks["a run of an allowed Task"] == 201 and read != 200 and time.monotonic() < end:
        read = call("GET", "%s/%s-helper" % (R, run))
        if read != 200:
            time.sleep(0.5)
    checks["its allowed child, read"] = read
    checks["its refused child, read"] = call("GET", "%s/%s-priv" % (R, run))
    print("RESULT:" + json.dumps(checks))
''')


def hostile_command(victim: str, victim_steps: str) -> str:
    script = HOSTILE.replace("VICTIM_STEPS", victim_steps).replace("VICTIM", victim)
    encoded = base64.b64encode(script.encode()).decode()
    return f"python -c \"import base64; exec(base64.b64decode('{encoded}').decode())\""


def sdk_task(name: str, entrypoint: str, **spec: object) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"image": TASK_IMAGE, "imagePullPolicy": "Never", "entrypoint": entrypoint,
                     "retry": {"maxAttempts": 1}, "machine": {"preset": "micro"}, **spec}}


def command_task(name: str, code: str) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"image": TASK_IMAGE, "imagePullPolicy": "Never", "command": ["python", "-c", code],
                     "retry": {"maxAttempts": 1}, "machine": {"preset": "micro"}}}


def taskrun(name: str, task: str, payload: object = None) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
            "spec": {"taskRef": task, "payload": payload}}


def finished(namespace: str, name: str, timeout: float = 180) -> dict:
    def status() -> dict | None:
        s = get("taskrun", name, namespace).get("status") or {}
        return s if s.get("phase") in FINISHED else None

    try:
        return wait_until(f"{name} finished", status, timeout=timeout)
    except AssertionError as e:  # say where it stuck: the run, its Jobs and pods, the namespace's Events
        seen = kubectl("get", "taskrun", name, "-n", namespace, "-o", "yaml", check=False)
        pods = kubectl("get", "jobs,pods", "-n", namespace, "-l", f"kubetasks.io/run={name}", "-o", "wide", check=False)
        events = kubectl("get", "events", "-n", namespace, check=False)
        raise AssertionError(f"{e}\n{seen}\n{pods}\n{events[-3000:]}") from None


def impersonated_trigger(namespace: str, parent: str | None) -> str:
    """stderr (empty when admitted) of a server-side dry-run create as a run's ServiceAccount."""
    spec = {"taskRef": "helper", **({"parentRun": parent} if parent else {})}
    manifest = {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": "probe"}, "spec": spec}
    done = kubectl_run("create", "-n", namespace, "--dry-run=server", f"--as=system:serviceaccount:{namespace}:{PROBE_ACCOUNT}",
                       "-f", "-", input=yaml.safe_dump(manifest))
    return done.stderr


@pytest.fixture(scope="module")
def secured(cluster: str, crds: None) -> Iterator[str]:
    """A namespace that enforces the restricted Pod Security Standard, with the chart's admission
    policy in force (as `helm install` puts it)."""
    namespace = f"kt-security-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, "kubetasks.io/test=true", "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest")
    policy = helm("template", RELEASE, CHART, "--show-only", "templates/admissionpolicy.yaml")
    # Removed afterwards only if this module made it (a session fixture may have applied it before).
    made = "created" in kubectl("apply", "-f", "-", input=policy)
    try:
        # An account shaped like a run's, allowed to create runs: the policy is in force once it
        # refuses that account a run without its own run as parent.
        apply([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "probe"},
                "rules": [{"apiGroups": ["kubetasks.io"], "resources": ["taskruns"], "verbs": ["create"]}]},
               {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "probe"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "probe"},
                "subjects": [{"kind": "ServiceAccount", "name": PROBE_ACCOUNT, "namespace": namespace}]}], namespace)
        wait_until("the admission policy in force", lambda: POLICY in impersonated_trigger(namespace, None), timeout=60)
        yield namespace
    finally:
        if made:
            kubectl("delete", "-f", "-", "--ignore-not-found", input=policy, check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_admission_policy_binds_a_runs_triggers_to_that_run(secured):
    assert impersonated_trigger(secured, "probe") == ""  # its own run: admitted (the operator checks the rest)
    for parent in (None, "someone-else", "prob", "probe-0123abcd"):
        assert POLICY in impersonated_trigger(secured, parent), parent


def test_the_admission_policy_binds_a_runs_tokens_to_that_run(secured):
    """A run's pods may create Waitpoints (RBAC cannot limit create by name): only for their own run,
    so none can take the name of another run's token before that run makes it."""
    def token(run: str) -> str:
        manifest = {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Waitpoint", "metadata": {"name": f"t-{run}"},
                    "spec": {"run": run, "runUid": "u", "step": "approve"}}
        return kubectl_run("create", "-n", secured, "--dry-run=server",
                           f"--as=system:serviceaccount:{secured}:{PROBE_ACCOUNT}", "-f", "-",
                           input=yaml.safe_dump(manifest)).stderr

    apply([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "probe-tokens"},
            "rules": [{"apiGroups": ["kubetasks.io"], "resources": ["waitpoints"], "verbs": ["create"]}]},
           {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "probe-tokens"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "probe-tokens"},
            "subjects": [{"kind": "ServiceAccount", "name": PROBE_ACCOUNT, "namespace": secured}]}], secured)
    wait_until("its own run's token admitted", lambda: token("probe") == "", timeout=30)
    for run in ("someone-else", "prob", "probe-0123abcd"):
        assert "may create Waitpoints only with spec.run naming their own run" in token(run), run


@pytest.fixture(scope="module")
def attack(secured: str, operator) -> dict:
    """Runs the hostile task (and one whose Task allows no triggering) against a victim run."""
    ns = secured
    apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-password"},
            "stringData": {"password": "hunter2"}},
           sdk_task("victim", "builtins:len"),
           command_task("privileged", "print('the privileged task ran')"),
           command_task("helper", "print('helping')"),
           sdk_task("hostile", "subprocess:getoutput", allowTrigger=["helper"]),
           sdk_task("hostile-noallow", "subprocess:getoutput")], ns)
    apply(taskrun("victim-1", "victim", "the victim's secret payload"), ns)
    assert finished(ns, "victim-1")["phase"] == "Succeeded"
    victim = get("taskrun", "victim-1", ns)
    from kubetasks.core.naming import checkpoint_name

    command = hostile_command("victim-1", checkpoint_name("victim-1", victim["metadata"]["uid"]))
    apply([taskrun("hostile-1", "hostile", command), taskrun("hostile-2", "hostile-noallow", command)], ns)
    results = {}
    for name in ("hostile-1", "hostile-2"):
        status = finished(ns, name)
        assert status["phase"] == "Succeeded", status
        text = status["result"]
        results[name] = json.loads(text[text.index("RESULT:") + len("RESULT:"):].splitlines()[0])
    return results


def test_a_task_pod_reaches_its_own_run_and_checkpoints(attack):
    for name in ("hostile-1", "hostile-2"):
        checks = attack[name]
        assert checks["own run"] == 200, checks
        assert checks["own checkpoints"] == 200 and checks["own checkpoints, patched"] == 200, checks


def test_a_task_pod_reaches_nothing_else(attack):
    forbidden = ["another run", "another run's checkpoints", "another run's checkpoints, patched", "every run",
                 "a Secret", "every Secret", "own status, patched", "own spec, patched", "a pod",
                 "a RoleBinding to admin"]
    for name in ("hostile-1", "hostile-2"):
        checks = attack[name]
        assert {c: checks[c] for c in forbidden} == {c: 403 for c in forbidden}, (name, checks)


def test_a_task_creates_runs_only_as_its_own_child_and_only_when_its_task_allows_triggering(attack, secured):
    allowed, not_allowed = attack["hostile-1"], attack["hostile-2"]
    # allowTrigger: [helper]: RBAC lets it create runs, the admission policy only as its own children.
    assert allowed["a run as another run's child"] == 403 and allowed["a run with no parent"] == 403, allowed
    assert allowed["a run of an allowed Task"] == 201 and allowed["a run of a Task not allowed"] == 201, allowed
    # No allowTrigger: no create at all.
    triggers = [c for c in not_allowed if c.startswith("a run")]
    assert {c: not_allowed[c] for c in triggers} == {c: 403 for c in triggers}, not_allowed
    assert finished(secured, "hostile-1-helper")["phase"] == "Succeeded"


def test_the_operator_refuses_a_child_run_of_a_task_not_in_allow_trigger_and_lets_the_parent_read_an_allowed_one(attack, secured):
    status = finished(secured, "hostile-1-priv")
    assert status["phase"] == "Failed" and not status.get("attempts"), status
    condition = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert condition["reason"] == "TriggerNotAllowed" and "'privileged'" in condition["message"], condition
    jobs = kubectl("get", "jobs", "-n", secured, "-l", "kubetasks.io/run=hostile-1-priv", "-o", "name")
    assert not jobs.strip()
    # The allowed child ran, and its parent's pods could read it (to wait for it): that one run only.
    assert attack["hostile-1"]["its allowed child, read"] == 200, attack["hostile-1"]
    assert attack["hostile-1"]["its refused child, read"] == 403, attack["hostile-1"]
    # The parent has finished: its account holds nothing any more (its identity objects are gone).
    parent = get("taskrun", "hostile-1", secured)
    from kubetasks.core.naming import run_identity_name

    account = f"--as=system:serviceaccount:{secured}:{run_identity_name('hostile-1', parent['metadata']['uid'])}"
    for resource in ("taskruns/hostile-1-helper", "taskruns/hostile-1", "taskruns/victim-1"):
        wait_until(f"{resource} no longer readable by hostile-1's account", lambda: kubectl_run(
            "auth", "can-i", "get", resource, "-n", secured, account).stdout.strip() == "no", timeout=60)


def test_the_run_role_is_not_bound_to_an_account_the_user_named(secured, operator):
    ns = secured
    apply([sdk_task("named", "builtins:len", serviceAccountName="default", allowTrigger=["helper"]),
           taskrun("named-1", "named", "x")], ns)
    # The Job is created after the run's identity objects: once it exists, they all do.
    wait_until("the Job of named-1", lambda: kubectl("get", "jobs", "-n", ns, "-l", "kubetasks.io/run=named-1",
                                                     "-o", "name").strip())
    assert not kubectl("get", "roles,rolebindings,serviceaccounts", "-n", ns, "-l", "kubetasks.io/run=named-1",
                       "-o", "name").strip()
    account = f"--as=system:serviceaccount:{ns}:default"
    for verb, resource in (("get", "taskruns/named-1"), ("create", "taskruns"), ("get", "taskruns")):
        done = kubectl_run("auth", "can-i", verb, resource, "-n", ns, account)
        assert done.stdout.strip() == "no", (verb, resource, done.stdout, done.stderr)
    job = json.loads(kubectl("get", "jobs", "-n", ns, "-l", "kubetasks.io/run=named-1", "-o", "json"))["items"][0]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "default"


def test_task_pods_are_admitted_under_the_restricted_pod_security_standard(secured, operator):
    # The standard is enforced here: a privileged pod is refused...
    done = kubectl_run("run", "privileged", "-n", secured, "--image", TASK_IMAGE, "--dry-run=server",
                       "--overrides", json.dumps({"spec": {"containers": [{"name": "privileged", "image": TASK_IMAGE,
                                                                           "securityContext": {"privileged": True}}]}}))
    assert done.returncode and "violates PodSecurity" in done.stderr, done.stderr
    # ...while a plain command's and an SDK task's pods run (the SDK task with its token and checkpoints).
    apply([command_task("helper", "print('helping')"), sdk_task("victim", "builtins:len")], secured)
    apply([taskrun("plain-1", "helper"), taskrun("sdk-1", "victim", "abc")], secured)
    assert finished(secured, "plain-1")["phase"] == "Succeeded"
    assert finished(secured, "sdk-1")["phase"] == "Succeeded"
