"""Durable trigger-and-wait on the real cluster (examples/python/kubetasks_examples/fan_out.py):
the parent waits for its children with no pod running, resumes with their typed results, catches
a child's failure, and its steps before the wait ran once."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import JobWatch, apply, kubectl, wait_until
from tests.integration.test_runtime import counter_with_access, sdk_task
from tests.integration.test_taskruns import FINISHED, status, taskrun

pytestmark = pytest.mark.cluster
FAN_OUT = "kubetasks_examples.fan_out"


def parent_pods_running(namespace: str, run: str) -> list[str]:
    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"kubetasks.io/run={run}", "-o", "json"))
    return [p["metadata"]["name"] for p in pods["items"] if p["status"].get("phase") not in ("Succeeded", "Failed")]


def test_a_parent_waits_for_its_children_with_no_pod_and_resumes_with_their_results(namespace, operator):
    apply(counter_with_access(namespace), namespace)
    apply([sdk_task("square", f"{FAN_OUT}:square", retry={"maxAttempts": 1}),
           sdk_task("fan-out", f"{FAN_OUT}:fan_out", allowTrigger=["square"], retry={"maxAttempts": 1})], namespace)
    with JobWatch(namespace) as jobs:
        apply(taskrun("fan", "fan-out", payload={"numbers": [1, 2, 3], "seconds": 4, "counter": "counter"}),
              namespace)
        waiting = wait_until("the parent waits for its three children",
                             lambda: (s := status(namespace, "fan")).get("phase") == "Waiting"
                             and len(s.get("waitingOn") or []) >= 1 and s, timeout=180)
        looks = 0
        while (s := status(namespace, "fan")).get("phase") == "Waiting":  # the whole wait: no parent pod runs
            assert not parent_pods_running(namespace, "fan"), f"a pod of the parent runs while it waits: {s}"
            looks += 1
            time.sleep(0.5)
        final = wait_until("the parent finishes", lambda: (s := status(namespace, "fan")).get("phase") in FINISHED
                           and s, timeout=180)
        parent_uid = json.loads(kubectl("get", "taskrun", "fan", "-n", namespace, "-o", "json"))["metadata"]["uid"]
        parent_jobs = [j.name for j in jobs.owned_by(parent_uid)]

    assert looks >= 3, f"the wait was seen {looks} times"
    assert len(waiting["waitingOn"]) == 3 and all(n.startswith("square-") for n in waiting["waitingOn"]), waiting
    assert final["phase"] == "Succeeded", final
    result = final["result"]
    assert result["squares"] == [1, 4, 9] and result["attempt"] == 3
    assert result["caught"]["phase"] == "Failed" and result["caught"]["error"] == "ValueError", result
    # Waiting is no failed attempt (maxAttempts 1), and the history shows each wait.
    assert [a["reason"] for a in final["attempts"]] == ["Waiting", "Waiting", "Succeeded"], final["attempts"]
    assert len(parent_jobs) == 3, f"one Job per attempt, none while waiting: {parent_jobs}"
    counter = json.loads(kubectl("get", "configmap", "counter", "-n", namespace, "-o", "json"))["data"]
    assert counter == {"before": "1"}, f"the step before the waits ran once: {counter}"
    children = json.loads(kubectl("get", "taskruns", "-n", namespace, "-l", "kubetasks.io/task=square", "-o", "json"))
    assert len(children["items"]) == 4 and all(c["spec"]["parentRun"] == "fan" for c in children["items"])
