"""The task runtime on the real cluster: durable steps, sleeps, typed triggers, failures."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal

import pytest

from tests.conftest import TASK_IMAGE, apply, create, get, kubectl, wait_until
from tests.integration.test_faults import operator_restored
from tests.integration.test_taskruns import FINISHED, taskrun, wait_phase

pytestmark = pytest.mark.cluster
EXAMPLES_PATH = "/app/operator:/app/examples/python"


def sdk_task(name: str, entrypoint: str, **spec) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"image": TASK_IMAGE, "imagePullPolicy": "Never", "entrypoint": entrypoint,
                     "env": [{"name": "PYTHONPATH", "value": EXAMPLES_PATH}],
                     "retry": {"minDelay": "1s"}, **spec}}


def counter_with_access(namespace: str) -> list[dict]:
    """A ConfigMap outside the run that its pods may bump: the side effects we count."""
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "counter"}, "data": {}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "counter"},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["counter"],
                    "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "counter"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "counter"},
         "subjects": [{"kind": "Group", "name": f"system:serviceaccounts:{namespace}",
                       "apiGroup": "rbac.authorization.k8s.io"}]},
    ]


def test_a_retry_skips_the_steps_that_finished(namespace, operator):
    apply(counter_with_access(namespace), namespace)
    apply([sdk_task("steps", "kubetasks_examples.steps:steps"),
           taskrun("steps-1", "steps", payload={"counter": "counter", "crash": True})], namespace)
    s = wait_phase(namespace, "steps-1", FINISHED, timeout=240)
    assert s["phase"] == "Succeeded" and s["attempt"] == 2, s
    assert s["attempts"][0]["reason"] == "Error"  # attempt 1 died between step 2 and step 3
    # Side effects counted outside the pod: each step ran exactly once across both attempts.
    assert get("configmap", "counter", namespace)["data"] == {"step-1": "1", "step-2": "1", "step-3": "1"}
    steps = {st["name"]: st["attempt"] for st in s["steps"]}
    assert steps == {"step-1": 1, "step-2": 1, "step-3": 2}
    assert s["result"]["counts"] == [1, 1, 1]


def test_an_oom_killed_attempt_resumes_after_its_last_checkpoint(namespace, operator):
    apply([sdk_task("memory", "kubetasks_examples.memory:memory", machine={"cpu": "250m", "memory": "192Mi"}),
           taskrun("memory-1", "memory", payload={"mb": 400, "retryMb": 8, "hold": 0})], namespace)
    s = wait_phase(namespace, "memory-1", FINISHED, timeout=240)
    assert s["attempts"][0]["reason"] == "OOMKilled"
    assert s["phase"] == "Succeeded" and s["attempt"] == 2
    assert s["result"]["preparedOnAttempt"] == 1  # the checkpoint from attempt 1 was not redone


def test_a_durable_sleep_holds_no_pod(namespace, operator):
    apply([sdk_task("sleeper", "kubetasks_examples.sleeper:sleeper"),
           taskrun("sleeper-1", "sleeper", payload={"seconds": 10})], namespace)
    s = wait_phase(namespace, "sleeper-1", "Sleeping", timeout=120)
    assert s["wakeAt"]
    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l", "kubetasks.io/run=sleeper-1", "-o", "json"))
    assert all(p["status"]["phase"] in ("Succeeded", "Failed") for p in pods["items"])
    s = wait_phase(namespace, "sleeper-1", FINISHED, timeout=120)
    assert s["phase"] == "Succeeded" and s["attempt"] == 2
    assert [a["reason"] for a in s["attempts"]] == ["Sleeping", "Succeeded"]


@pytest.mark.faults
def test_a_sleep_whose_pod_is_gone_before_the_operator_reads_it_still_sleeps(namespace, operator):
    # The operator is paused while attempt 1 sleeps, ends and its pod is deleted: the termination
    # message that says "sleeping" is never read. The checkpoint says it: not Succeeded mid-sleep.
    apply([sdk_task("sleeper", "kubetasks_examples.sleeper:sleeper"),
           taskrun("sleeper-1", "sleeper", payload={"seconds": 20})], namespace)
    wait_phase(namespace, "sleeper-1", "Running", timeout=60)  # its Job exists: created before this write
    with operator_restored(operator):
        assert operator.proc is not None
        os.killpg(operator.proc.pid, signal.SIGSTOP)
        kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/sleeper-1-1", "--timeout=120s")
        kubectl("delete", "pods", "-n", namespace, "-l", "job-name=sleeper-1-1", "--wait=true", "--timeout=60s")
    s = wait_phase(namespace, "sleeper-1", {"Sleeping", *FINISHED}, timeout=60)
    assert s["phase"] == "Sleeping" and s["wakeAt"] and s["attempts"][0]["reason"] == "Sleeping", s
    s = wait_phase(namespace, "sleeper-1", FINISHED, timeout=120)
    assert s["phase"] == "Succeeded" and s["attempt"] == 2 and s["result"]["attempt"] == 2, s


def test_trigger_and_wait_returns_the_typed_result(namespace, operator):
    from kubetasks_examples.typed import Receipt, typed

    apply(sdk_task("typed", "kubetasks_examples.typed:typed"), namespace)
    receipt = typed.trigger_and_wait({"item": "tea", "quantity": 3, "unitPriceCents": 250},
                                     namespace=namespace, timeout=180)
    assert isinstance(receipt, Receipt) and receipt.total_cents == 750


def test_a_payload_failing_its_model_never_reaches_user_code(namespace, operator):
    apply([sdk_task("typed", "kubetasks_examples.typed:typed"),
           taskrun("typed-bad", "typed", payload={"item": "tea", "quantity": 0, "unitPriceCents": 1})], namespace)
    s = wait_phase(namespace, "typed-bad", FINISHED, timeout=120)
    assert s["phase"] == "Failed" and s["attempt"] == 1  # permanent: not retried
    assert s["error"]["type"] == "InvalidPayload" and "quantity" in s["error"]["message"]


def test_a_permanent_failure_is_not_retried(namespace, operator):
    apply([sdk_task("flaky", "kubetasks_examples.flaky:flaky", retry={"maxAttempts": 5, "minDelay": "1s"}),
           taskrun("flaky-abort", "flaky", payload={"abort": "the input can never work"})], namespace)
    s = wait_phase(namespace, "flaky-abort", FINISHED, timeout=120)
    assert s["phase"] == "Failed" and s["attempt"] == 1
    assert s["attempts"][0]["exitCode"] == 78 and "never work" in s["error"]["message"]
    assert "permanent failure" in next(c for c in s["conditions"] if c["type"] == "Succeeded")["message"]


def blob(size: int) -> str:
    """``size`` bytes of base64 text from random bytes: nothing for compression to hide."""
    return base64.b64encode(os.urandom(size * 3 // 4)).decode()


def test_a_1_mib_payload_reaches_an_entrypoint_task_intact(namespace, operator):
    data = blob(1024 * 1024)  # 4x the payload file's limit: the runtime reads it from the TaskRun
    apply(sdk_task("digest", "kubetasks_examples.digest:digest"), namespace)
    create(taskrun("digest-1m", "digest", payload={"blob": data}), namespace)
    s = wait_phase(namespace, "digest-1m", FINISHED, timeout=180)
    assert s["phase"] == "Succeeded" and s["attempt"] == 1, s
    assert s["result"] == {"sha256": hashlib.sha256(data.encode()).hexdigest(), "bytes": len(data)}
    logs = wait_until("the task's log", lambda: kubectl(
        "logs", "-n", namespace, "-l", "kubetasks.io/run=digest-1m", "--tail", "-1"), timeout=60)
    assert "reading the payload from TaskRun" in logs, logs  # the file was absent, as it should be


def test_a_200_kib_payload_reaches_a_command_task_as_a_file(namespace, operator):
    data = blob(200 * 1024)
    show = ("import hashlib, json, os; path = os.environ['KUBETASKS_PAYLOAD_FILE']; "
            "print('payload', path, hashlib.sha256(json.load(open(path))['blob'].encode()).hexdigest()); "
            "print('env', 'KUBETASKS_PAYLOAD' in os.environ)")
    apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "cat"},
           "spec": {"image": TASK_IMAGE, "imagePullPolicy": "Never", "command": ["python", "-c", show],
                    "retry": {"minDelay": "1s"}}}, namespace)
    create(taskrun("cat-200k", "cat", payload={"blob": data}), namespace)
    s = wait_phase(namespace, "cat-200k", FINISHED, timeout=180)
    assert s["phase"] == "Succeeded" and s["attempt"] == 1, s
    logs = wait_until("the task's log", lambda: kubectl(
        "logs", "-n", namespace, "-l", "kubetasks.io/run=cat-200k", "--tail", "-1"), timeout=60)
    expected = hashlib.sha256(data.encode()).hexdigest()
    assert f"payload /var/run/kubetasks/payload.json {expected}" in logs and "env False" in logs, logs
    jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-l", "kubetasks.io/run=cat-200k", "-o", "json"))
    assert jobs["items"] and all(data not in json.dumps(j) for j in jobs["items"])  # not in the Job: not in env
