"""Attempts whose container cannot start (no image, no Secret, no node): the reason shows in the
run's status while the start deadline lasts (the session operator's: START_DEADLINE_SECONDS),
then the attempt fails with that reason and the retry policy decides, never Running forever."""

from __future__ import annotations

import pytest

from tests.conftest import START_DEADLINE_SECONDS, apply, wait_until
from tests.integration.test_taskruns import status, task, taskrun, wait_phase

pytestmark = pytest.mark.cluster

CASES = {
    # name: (Task spec changes, the reason the run shows and fails with)
    "no-image": ({"image": "localhost/kubetasks/does-not-exist:1", "imagePullPolicy": "Never"}, "ErrImageNeverPull"),
    "no-secret": ({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "token"}}}]},
                  "CreateContainerConfigError"),
    "no-node": ({"nodeSelector": {"kubetasks.io/no-such-node": "true"}}, "Unschedulable"),
}


def test_a_container_that_cannot_start_is_explained_then_fails_its_attempt(namespace, operator):
    once = {"maxAttempts": 1}
    apply([task(name, "print('never')", retry=once, **spec) for name, (spec, _) in CASES.items()]
          + [taskrun(f"{name}-1", name) for name in CASES], namespace)
    for name, (_, reason) in CASES.items():
        # While it waits: Running, with the reason in the condition (kubectl get -o wide shows it).
        s = wait_until(f"{name}-1 shows {reason}", lambda: (s := status(namespace, f"{name}-1")).get("conditions")
                       and s["conditions"][0]["reason"] == reason and s, timeout=START_DEADLINE_SECONDS)
        assert s["phase"] == "Running" and "has not started" in s["conditions"][0]["message"]
    for name, (_, reason) in CASES.items():
        s = wait_phase(namespace, f"{name}-1", {"Failed", "TimedOut", "Succeeded"}, timeout=START_DEADLINE_SECONDS + 60)
        assert s["phase"] == "Failed" and s["attempts"][0]["reason"] == reason, (name, s)
        assert "did not start" in s["error"]["message"] and s["conditions"][0]["reason"] == "Failed"


def test_time_spent_not_starting_is_not_a_timeout(namespace, operator):
    """maxDuration shorter than the start deadline: the Job's deadline ends an attempt that never
    started, which fails with the reason it could not start, not TimedOut."""
    apply([task("slow-start", "print('never')", image="localhost/kubetasks/does-not-exist:1",
                imagePullPolicy="Never", maxDuration="8s", retry={"maxAttempts": 1}),
           taskrun("slow-start-1", "slow-start")], namespace)
    s = wait_phase(namespace, "slow-start-1", {"Failed", "TimedOut", "Succeeded"}, timeout=START_DEADLINE_SECONDS + 60)
    assert s["phase"] == "Failed" and s["attempts"][0]["reason"] == "ErrImageNeverPull", s

