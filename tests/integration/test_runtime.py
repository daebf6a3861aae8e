"""The task runtime on the real cluster: durable steps, sleeps, typed triggers, failures."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TASK_IMAGE, apply, get, kubectl
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
