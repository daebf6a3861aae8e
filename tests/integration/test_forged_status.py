"""A run's status written by someone other than the operator (issue 18 item 2), on the real cluster.

A user with only ``taskruns/status`` rights (impersonated: a Role made in the test's namespace,
gone with it) patches a running run to Succeeded. With the chart's status policy in force the
API server refuses it with a message that says who writes a run's status; without it, the
operator does not act on the forged outcome (core.status_trust): a StatusForged Warning, and the
run ends as its Job says.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import INSTANCE, apply, kubectl, kubectl_run, wait_until
from tests.integration.test_helm import CHART, helm
from tests.integration.test_taskruns import events, has_event, status, task, taskrun, wait_phase

pytestmark = pytest.mark.cluster
FORGER = "forger@example.com"
REFUSED = "is written only by the kubetasks operator"
FORGED = {"status": {"phase": "Succeeded", "result": "forged"}}


def forge(namespace: str, run: str, patch: dict = FORGED, dry_run: bool = False) -> str:
    """stderr (empty when admitted) of a status patch by the forger."""
    done = kubectl_run("patch", "taskrun", run, "-n", namespace, "--subresource=status", "--type=merge",
                       "-p", json.dumps(patch), f"--as={FORGER}", *(["--dry-run=server"] if dry_run else []))
    return done.stderr.strip()


@pytest.fixture
def forger(namespace: str) -> str:
    """The namespace, where the forger may read runs and patch their status (and nothing else)."""
    apply([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "forger"},
            "rules": [{"apiGroups": ["kubetasks.io"], "resources": ["taskruns", "taskruns/status"],
                       "verbs": ["get", "patch"]}]},
           {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "forger"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "forger"},
            "subjects": [{"kind": "User", "name": FORGER, "apiGroup": "rbac.authorization.k8s.io"}]}], namespace)
    return namespace


def running(namespace: str, name: str, seconds: int = 25, exit_code: int = 3) -> None:
    """A run whose one attempt runs ``seconds``, then fails with ``exit_code``: only its Job can say so."""
    apply([task("slow", f"import time, sys; time.sleep({seconds}); sys.exit({exit_code})", retry={"maxAttempts": 1}),
           taskrun(name, "slow")], namespace)
    wait_phase(namespace, name, "Running", timeout=60)


@pytest.fixture
def status_policy(forger: str) -> Iterator[str]:
    """The chart's status policy as `helm install` puts it, for a release whose instance is this
    session's (only its runs are governed) and whose operator is this session's (the kubeconfig's
    user, allowed through statusPolicy.extraWriters); removed afterwards."""
    operator_user = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    release = f"kt-forgery-{uuid.uuid4().hex[:6]}"
    policy = helm("template", release, CHART, "-n", forger, "--show-only", "templates/statuspolicy.yaml",
                  "--set", f"instanceID={INSTANCE}", "--set", f"statusPolicy.extraWriters={{{operator_user}}}")
    kubectl("apply", "-f", "-", input=policy)
    try:
        yield forger
    finally:
        kubectl("delete", "-f", "-", "--ignore-not-found", input=policy, check=False)


def test_without_the_policy_a_forged_success_is_not_believed_and_the_run_ends_as_its_job_says(forger, operator):
    running(forger, "victim")
    assert forge(forger, "victim") == ""  # admitted: no policy governs this session's runs
    assert has_event(forger, "victim", "StatusForged")
    final = wait_phase(forger, "victim", {"Succeeded", "Failed", "Cancelled", "TimedOut"}, timeout=120)
    assert final["phase"] == "Failed" and final.get("result") is None, final  # as its Job said: exit 3
    assert final["attempts"][0]["exitCode"] == 3 and events(forger, "victim").count("StatusForged") == 1


def test_without_the_policy_a_delayed_run_patched_to_succeeded_still_runs(forger, operator):
    apply([task("quick", "print('ran')"), taskrun("later", "quick", delay="20s")], forger)
    wait_phase(forger, "later", "Delayed", timeout=30)
    assert forge(forger, "later") == ""
    assert has_event(forger, "later", "StatusForged")
    assert wait_phase(forger, "later", "Delayed", timeout=30)
    final = wait_phase(forger, "later", {"Succeeded", "Failed"}, timeout=120)
    assert final["phase"] == "Succeeded" and final["attempt"] == 1 and final.get("result") is None, final


def test_the_status_policy_refuses_a_forged_success_with_a_clear_message(status_policy, operator):
    namespace = status_policy
    running(namespace, "guarded", seconds=15, exit_code=0)
    # The policy is in force once it refuses the forger (API servers load policies asynchronously).
    refused = wait_until("the status policy in force", lambda: (e := forge(namespace, "guarded", dry_run=True))
                         and REFUSED in e and e, timeout=60)
    assert f"status.phase of TaskRun guarded {REFUSED}" in refused and f"not by {FORGER}" in refused
    assert "set spec.cancel: true" in refused
    for patch in ({"status": {"result": {"x": 1}}}, {"status": {"attempt": 7}}, {"status": {"error": None,
                  "attempts": []}}, {"status": {"phase": "Succeeded"}}):
        assert REFUSED in forge(namespace, "guarded", patch), patch
    assert forge(namespace, "guarded", {"status": {"observedGeneration": 9}}) == ""  # fields it does not guard
    final = wait_phase(namespace, "guarded", {"Succeeded", "Failed"}, timeout=120)
    assert final["phase"] == "Succeeded"  # the operator's own writes pass
    assert "StatusForged" not in events(namespace, "guarded")
    assert status(namespace, "guarded").get("result") is None
