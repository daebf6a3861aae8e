"""Runaway triggering on the real cluster (issue 18, items 1 and 7).

A Task that triggers itself stops at its maxTriggerDepth, with a Warning Event on the run at the
root of the chain, and its runs leave no ServiceAccount, Role or RoleBinding once they finish. An
account bound to a Task's run Role (bindRunRole) creates runs only as that Task's children.

The admission policy is the chart's, rendered under a release name of this module's own and bound
only to this module's namespace (a label no other session's namespace has).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import yaml

from tests.conftest import apply, kubectl, kubectl_run, wait_until
from tests.integration.test_helm import CHART, helm
from tests.integration.test_security import FINISHED, finished, hostile_command, sdk_task, taskrun

pytestmark = pytest.mark.cluster
DEPTH = 3
# Runs in the task pod (entrypoint subprocess:getoutput): triggers its own Task with its own payload.
LOOP = ("python -c \"import json, os; from kubetasks.runtime import trigger; "
        "print(trigger('loop', json.load(open(os.environ['KUBETASKS_PAYLOAD_FILE']))).id)\"")


@pytest.fixture(scope="module")
def guarded(cluster: str, crds: None) -> Iterator[str]:
    """A namespace with the chart's trigger admission policy bound to it alone."""
    namespace = f"kt-triggers-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, "kubetasks.io/test=true", f"kubetasks.io/triggers-test={namespace}")
    release = f"trig-{uuid.uuid4().hex[:5]}"
    docs = [d for d in yaml.safe_load_all(helm("template", release, CHART, "--show-only", "templates/admissionpolicy.yaml")) if d]
    for doc in docs:
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            doc["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {"kubetasks.io/triggers-test": namespace}}}
    policy = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    kubectl("apply", "-f", "-", input=policy)
    try:
        yield namespace
    finally:
        kubectl("delete", "-f", "-", "--ignore-not-found", input=policy, check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def runs_of(namespace: str, task: str) -> list[dict]:
    items = json.loads(kubectl("get", "taskruns", "-n", namespace, "-o", "json"))["items"]
    return [r for r in items if r["spec"]["taskRef"] == task]


def owned_identity(namespace: str, uids: set[str]) -> list[str]:
    """The ServiceAccounts, Roles and RoleBindings owned by any of the runs ``uids``."""
    items = json.loads(kubectl("get", "serviceaccounts,roles,rolebindings", "-n", namespace, "-o", "json"))["items"]
    return [f"{o['kind']}/{o['metadata']['name']}" for o in items
            if any(ref.get("uid") in uids for ref in o["metadata"].get("ownerReferences") or [])]


def test_a_self_triggering_chain_stops_at_its_depth_and_leaves_no_identity_behind(guarded, operator):
    ns = guarded
    apply([sdk_task("loop", "subprocess:getoutput", allowTrigger=["loop"], maxTriggerDepth=DEPTH)], ns)
    apply(taskrun("loop-root", "loop", LOOP), ns)

    def stopped() -> dict | None:
        return next((r for r in runs_of(ns, "loop") if (r.get("status") or {}).get("phase") in FINISHED
                     and any(c.get("reason") == "TriggerDepthExceeded" for c in r["status"].get("conditions") or [])), None)
    refused = wait_until("a run refused for its depth", stopped, timeout=240)
    # (Its status.triggerDepth says so too, but a CRD applied meanwhile by another session's tests
    # prunes a field it lacks from what is read: the message is the reliable witness here.)
    message = next(c["message"] for c in refused["status"]["conditions"] if c["type"] == "Succeeded")
    assert f"{DEPTH + 1} triggers deep" in message and not refused["status"].get("attempts"), refused["status"]

    # Every run of the chain finishes; the one refused made no Job; nothing went deeper.
    def all_finished() -> list[dict] | None:
        runs = runs_of(ns, "loop")
        return runs if all((r.get("status") or {}).get("phase") in FINISHED for r in runs) else None
    runs = wait_until("every run of the chain finished", all_finished, timeout=120)
    assert len(runs) == DEPTH + 2, [r["metadata"]["name"] for r in runs]  # the root, DEPTH children, the refused one
    jobs = kubectl("get", "jobs", "-n", ns, "-l", "kubetasks.io/task=loop", "-o", "name").split()
    assert len(jobs) == DEPTH + 1, jobs

    events = json.loads(kubectl("get", "events", "-n", ns, "--field-selector",
                                "involvedObject.name=loop-root,reason=TriggerDepthExceeded", "-o", "json"))["items"]
    assert events and events[0]["type"] == "Warning" and refused["metadata"]["name"] in events[0]["message"], events

    uids = {r["metadata"]["uid"] for r in runs}
    wait_until("no ServiceAccount, Role or RoleBinding of the chain's runs left",
               lambda: not owned_identity(ns, uids) or None, timeout=60)


def test_an_account_bound_to_a_tasks_run_role_triggers_only_as_its_runs(guarded, operator):
    ns = guarded
    kubectl("create", "serviceaccount", "shared", "-n", ns)
    apply([sdk_task("bound", "subprocess:getoutput", serviceAccountName="shared", bindRunRole=True, allowTrigger=["helper"]),
           sdk_task("victim", "builtins:len"),
           {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "helper"},
            "spec": {"image": sdk_task("x", "m:f")["spec"]["image"], "imagePullPolicy": "Never",
                     "command": ["python", "-c", "print('helping')"], "retry": {"maxAttempts": 1},
                     "machine": {"preset": "micro"}}},
           {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "privileged"},
            "spec": {"image": sdk_task("x", "m:f")["spec"]["image"], "imagePullPolicy": "Never",
                     "command": ["python", "-c", "print('the privileged task ran')"], "retry": {"maxAttempts": 1},
                     "machine": {"preset": "micro"}}}], ns)
    apply(taskrun("victim-1", "victim", "x"), ns)
    assert finished(ns, "victim-1")["phase"] == "Succeeded"
    apply(taskrun("bound-1", "bound", hostile_command("victim-1", "victim-1-none")), ns)
    status = finished(ns, "bound-1")
    assert status["phase"] == "Succeeded", status
    text = status["result"]
    checks = json.loads(text[text.index("RESULT:") + len("RESULT:"):].splitlines()[0])
    # Before: "a run with no parent" was 201 and ran Task privileged, whatever bound's allowTrigger.
    assert checks["a run with no parent"] == 403 and checks["a run as another run's child"] == 403, checks
    assert checks["a run of an allowed Task"] == 201, checks
    assert finished(ns, "bound-1-helper")["phase"] == "Succeeded"
    assert finished(ns, "bound-1-priv")["conditions"][0]["reason"] == "TriggerNotAllowed"
    assert not [r for r in runs_of(ns, "privileged") if r["metadata"]["name"] == "bound-1-orphan"]


@pytest.mark.faults
def test_access_left_by_a_crash_after_the_outcome_goes_when_the_operator_restarts(guarded, operator):
    """The deletes of a finished run's access fail (a policy refuses them), and the operator dies
    before its retry: they were remembered in memory only. The next process finds them at start."""
    ns = guarded
    name = "held-1"
    policy = [{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
               "metadata": {"name": f"{ns}-no-deletes"},
               "spec": {"failurePolicy": "Fail",
                        "matchConstraints": {"resourceRules": [
                            {"apiGroups": ["", "rbac.authorization.k8s.io"], "apiVersions": ["v1"], "operations": ["DELETE"],
                             "resources": ["serviceaccounts", "roles", "rolebindings"]}],
                            "objectSelector": {"matchLabels": {"kubetasks.io/run": name}}},
                        "validations": [{"expression": "false", "message": "held by the test"}]}},
              {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": f"{ns}-no-deletes"},
               "spec": {"policyName": f"{ns}-no-deletes", "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": {"matchLabels": {"kubetasks.io/triggers-test": ns}}}}}]
    manifest = "\n---\n".join(yaml.safe_dump(d) for d in policy)
    kubectl("apply", "-f", "-", input=manifest)
    try:
        apply([sdk_task("held", "builtins:len")], ns)
        probe = {"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": f"{name}-probe", "labels": {"kubetasks.io/run": name}}}
        apply(probe, ns)  # the policy is in force once it refuses this one's delete

        def refused() -> bool | None:
            done = kubectl_run("delete", "serviceaccount", f"{name}-probe", "-n", ns, "--dry-run=server")
            return done.returncode != 0 or None
        wait_until("the delete-refusing policy in force", refused, timeout=30, interval=0.5)
        apply(taskrun(name, "held", "abc"), ns)
        assert finished(ns, name)["phase"] == "Succeeded"
        uid = json.loads(kubectl("get", "taskrun", name, "-n", ns, "-o", "json"))["metadata"]["uid"]

        def cleanup_failed() -> bool | None:
            return bool(kubectl("get", "events", "-n", ns, "--field-selector",
                                f"involvedObject.name={name},reason=CleanupFailed", "-o", "name").split()) or None
        wait_until("the access deletes refused (CleanupFailed)", cleanup_failed, timeout=60)
        assert len(owned_identity(ns, {uid})) == 3
        operator.kill()  # its retry, 5 minutes on, was in memory only
    finally:
        kubectl("delete", "-f", "-", "--ignore-not-found", input=manifest, check=False)
    wait_until("the policy gone", lambda: kubectl_run("delete", "serviceaccount", f"{name}-probe", "-n", ns,
                                                      "--dry-run=server").returncode == 0 or None, timeout=30, interval=0.5)
    operator.start()
    wait_until("the finished run's access deleted by the restarted operator",
               lambda: not owned_identity(ns, {uid}) or None, timeout=90)
    assert json.loads(kubectl("get", "taskrun", name, "-n", ns, "-o", "json"))["status"]["phase"] == "Succeeded"
