"""Tokens (issue 21, item 2) on the real cluster (examples/python/kubetasks_examples/approval.py):
a run waiting for a token has no pod; ``kubetasks complete`` resumes it with the data, and a
second completion changes nothing; a token not completed in time gives the task TokenTimeout;
one completed before the run suspends is kept; an account without ``update`` on
``waitpoints/status`` is refused (403). A token's signed URL completes it once; a forged or an
expired one is refused. Pods and Jobs are judged from watches in etcd revision
order (test_durable_waits.waits_broken)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kubetasks.core.naming import token_name
from kubetasks.core.token_urls import REFUSED, completion_url, run_key
from tests.conftest import KUBECONFIG, apply, get, kubectl, token_kubeconfig, wait_until
from tests.integration.test_cli import cli_env
from tests.integration.test_durable_waits import phase, waits_broken
from tests.integration.test_flow_control import PodTimeline, RunTimeline, Timeline
from tests.integration.test_runtime import counter_with_access, sdk_task
from tests.integration.test_taskruns import FINISHED, status, taskrun

pytestmark = pytest.mark.cluster
APPROVAL = "kubetasks_examples.approval:approval"


def complete(namespace: str, token: str, data: str, kubeconfig: str = KUBECONFIG) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubetasks.cli.main", "complete", token, "-n", namespace,
                           "--data", data], env={**cli_env(), "KUBECONFIG": kubeconfig},
                          capture_output=True, text=True, timeout=60)


def finished(namespace: str, name: str) -> dict:
    return wait_until(f"{name} finishes", lambda: (s := status(namespace, name)).get("phase") in FINISHED and s,
                      timeout=180)


def test_a_run_waits_for_its_token_with_no_pod_and_the_first_completion_wins(namespace, operator, tmp_path):
    apply(counter_with_access(namespace), namespace)
    apply([sdk_task("approval", APPROVAL, retry={"maxAttempts": 1}),
           # may read tokens, not complete them (no update on waitpoints/status)
           {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "outsider"}},
           {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "outsider"},
            "rules": [{"apiGroups": ["kubetasks.io"], "resources": ["waitpoints"], "verbs": ["get"]}]},
           {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "outsider"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "outsider"},
            "subjects": [{"kind": "ServiceAccount", "name": "outsider", "namespace": namespace}]}], namespace)
    with RunTimeline(namespace) as runs, Timeline(namespace) as jobs, PodTimeline(namespace) as pods:
        apply([taskrun("asks", "approval", payload={"counter": "counter"}),
               taskrun("late", "approval", payload={"timeout": "3s"}),
               taskrun("early", "approval", payload={"pause": 8})], namespace)
        # early: completed while its pod still runs, before it suspends
        early = token_name("early", get("taskrun", "early", namespace)["metadata"]["uid"], "approve")
        wait_until("early's token made", lambda: kubectl("get", "waitpoints", "-n", namespace, "-o", "name",
                                                         check=False).count(f"waitpoint.kubetasks.io/{early}"),
                   timeout=120)
        assert not any(phase(e) == "Waiting" for e in runs.log() if e.name == "early"), "it has not suspended yet"
        done = complete(namespace, early, '{"approved": "early"}')
        assert done.returncode == 0, done.stderr

        waiting = wait_until("asks waits for its token", lambda: (s := status(namespace, "asks")).get(
            "phase") == "Waiting" and s, timeout=180)
        [entry] = waiting["waitingOn"]
        token = entry.removeprefix("waitpoint:")
        wp = get("waitpoint", token, namespace)
        assert wp["spec"]["run"] == "asks" and wp["metadata"]["ownerReferences"][0]["name"] == "asks", wp

        refused = complete(namespace, token, '{"approved": "mallory"}',
                           token_kubeconfig(tmp_path / "outsider", namespace, "outsider"))
        assert refused.returncode == 1 and "403" in refused.stderr and "waitpoints/status" in refused.stderr, \
            refused.stderr
        first = complete(namespace, token, '{"approved": true}')
        assert first.returncode == 0 and "completed" in first.stdout, first.stderr
        second = complete(namespace, token, '{"approved": false}')
        assert second.returncode == 0 and "nothing changed" in second.stdout, second.stdout

        results = {n: finished(namespace, n) for n in ("asks", "late", "early")}
        uid = get("taskrun", "asks", namespace)["metadata"]["uid"]
        wait_until("the watches saw asks end, and its pods", lambda: any(
            e.uid == uid and phase(e) in FINISHED for e in runs.log()) and {
            p.owner for p in pods.log() if phase(p) in ("Succeeded", "Failed")} >= {
            j.uid for j in jobs.starts() if j.owner == uid}, timeout=30)
        broken = waits_broken("asks", runs.log(), jobs.log(), pods.log())

    assert not broken, f"asks ran while it waited: {broken}"
    asks = results["asks"]
    assert asks["phase"] == "Succeeded" and asks["result"]["decision"] == {"approved": True}, asks
    assert [a["reason"] for a in asks["attempts"]] == ["Waiting", "Succeeded"], asks["attempts"]
    assert get("waitpoint", token, namespace)["status"]["data"] == {"approved": True}  # the first stands
    assert json.loads(kubectl("get", "configmap", "counter", "-n", namespace, "-o", "json"))["data"] == {
        "before": "1"}, "the step before the wait ran once"
    late = results["late"]
    assert late["phase"] == "Succeeded" and late["result"]["timedOut"] is True, late
    late_token = get("waitpoint", late["result"]["token"], namespace)
    assert late_token["status"]["phase"] == "TimedOut", late_token
    early_result = results["early"]
    assert early_result["result"]["decision"] == {"approved": "early"}, early_result


def test_wait_any_returns_the_first_of_a_token_and_a_child_and_cancels_the_child_left(namespace, operator):
    apply([sdk_task("square", "kubetasks_examples.fan_out:square", retry={"maxAttempts": 1}),
           sdk_task("decide", "kubetasks_examples.approval:decide", allowTrigger=["square"],
                    retry={"maxAttempts": 1})], namespace)
    apply([taskrun("by-token", "decide", payload={"seconds": 300}),
           taskrun("by-child", "decide", payload={"seconds": 0})], namespace)
    waiting = wait_until("by-token waits for its token and its child", lambda: (s := status(
        namespace, "by-token")).get("phase") == "Waiting" and s, timeout=180)
    token = next(e for e in waiting["waitingOn"] if e.startswith("waitpoint:")).removeprefix("waitpoint:")
    [child] = [e for e in waiting["waitingOn"] if not e.startswith("waitpoint:")]
    done = complete(namespace, token, '"approved"')
    assert done.returncode == 0, done.stderr

    by_token, by_child = finished(namespace, "by-token"), finished(namespace, "by-child")
    assert by_token["phase"] == "Succeeded" and by_token["result"] == {  # nulls kept (a merge patch dropped them)
        "kind": "token", "key": "approve", "index": None, "value": "approved", "error": None}, by_token
    wait_until(f"{child}, no longer waited for, cancelled", lambda: status(namespace, child).get("phase")
               == "Cancelled", timeout=60)
    assert by_child["result"] == {"kind": "run", "key": None, "index": 0, "value": 9, "error": None}, by_child
    left = token_name("by-child", get("taskrun", "by-child", namespace)["metadata"]["uid"], "approve")
    assert (get("waitpoint", left, namespace).get("status") or {}).get("phase", "Waiting") == "Waiting"


def post(url: str, data: Any) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_tokens_signed_url_completes_it_once_and_a_forged_or_expired_one_is_refused(namespace, operator):
    """The operator serves signed completion URLs (the session operator is configured so: see the
    ``operator`` fixture): the task's token.url completes its token with a POST, once; a URL with
    a signature changed, or signed for an expiry that has passed, changes nothing."""
    apply([sdk_task("approval", APPROVAL, retry={"maxAttempts": 1}),
           taskrun("by-url", "approval", payload={"showUrl": True})], namespace)
    waiting = wait_until("by-url waits, its URL in its metadata", lambda: (s := status(namespace, "by-url")).get(
        "phase") == "Waiting" and (s.get("metadata") or {}).get("completionUrl") and s, timeout=180)
    url = waiting["metadata"]["completionUrl"]
    token = waiting["waitingOn"][0].removeprefix("waitpoint:")
    uid = get("taskrun", "by-url", namespace)["metadata"]["uid"]
    assert f"/tokens/{namespace}/{token}?run={uid}&expires=" in url, url
    base, query = url.split("?", 1)
    params = dict(p.split("=", 1) for p in query.split("&"))
    forged = f"{base}?run={params['run']}&expires={params['expires']}&sig={params['sig'][:-1]}" \
             f"{'0' if params['sig'][-1] != '0' else '1'}"
    assert post(forged, {"approved": "mallory"}) == (403, {"error": REFUSED})
    master = Path(operator.env["KUBETASKS_TOKEN_URL_KEY_FILE"]).read_bytes().strip()
    past = int(time.time()) - 60  # well signed, for a time that has passed
    code, said = post(completion_url(base.split("/tokens/")[0], run_key(master, uid), uid, namespace, token, past), 1)
    assert code == 410 and "expired" in said["error"], said
    assert (get("waitpoint", token, namespace).get("status") or {}).get("phase", "Waiting") == "Waiting"

    assert post(url, {"approved": "by url"}) == (200, {"completed": True, "phase": "Completed"})
    version = get("waitpoint", token, namespace)["metadata"]["resourceVersion"]
    code, said = post(url, {"approved": "twice"})
    assert code == 200 and said["completed"] is False and "nothing changed" in said["message"], said
    assert get("waitpoint", token, namespace)["metadata"]["resourceVersion"] == version

    done = finished(namespace, "by-url")
    assert done["phase"] == "Succeeded" and done["result"]["decision"] == {"approved": "by url"}, done
