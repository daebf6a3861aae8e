"""Attempts whose container cannot start (no image, no Secret, no node): the reason shows in the
run's status while the start deadline lasts (the session operator's: START_DEADLINE_SECONDS),
then the attempt fails with that reason and the retry policy decides, never Running forever.
What no wait can mend (a bad image name, a missing image never pulled, a missing
ServiceAccount) fails the attempt and the run at once."""

from __future__ import annotations

import pytest

from tests.conftest import START_DEADLINE_SECONDS, apply, wait_until
from tests.integration.test_taskruns import status, task, taskrun, ts, wait_phase

pytestmark = pytest.mark.cluster

# The real node has no registry access: a pull of an image it does not hold fails, and may heal.
UNREACHABLE = "registry.invalid/kubetasks/none:1"
PULL = {"ErrImagePull", "ImagePullBackOff"}
CASES = {
    # name: (Task spec changes, the reasons the run shows and fails with)
    "no-registry": ({"image": UNREACHABLE, "imagePullPolicy": "IfNotPresent"}, PULL),
    "no-secret": ({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "token"}}}]},
                  {"CreateContainerConfigError"}),
    "no-node": ({"nodeSelector": {"kubetasks.io/no-such-node": "true"}}, {"Unschedulable"}),
}
# A pod sandbox cannot be made with 1 KiB of memory: the pod's Events say so (read 40 s after the
# pod was made, or at the deadline), its status does not: not NotStarted.
NO_SANDBOX = {"machine": {"cpu": "100m", "memory": "1Ki"}}
PERMANENT = {
    # name: (Task spec changes, the reason, text the error must show)
    # Admission checks the grammar (upper case, spaces are refused); a sha256 digest of 32 hex
    # digits passes it, and no runtime can parse it.
    "bad-name": ({"image": "localhost/kubetasks/python@sha256:0123456789abcdef0123456789abcdef"}, "InvalidImageName",
                 "0123456789abcdef0123456789abcdef"),
    "never-pulled": ({"image": "localhost/kubetasks/does-not-exist:1", "imagePullPolicy": "Never"},
                     "ErrImageNeverPull", "does-not-exist"),
    "no-account": ({"serviceAccountName": "no-such-account"}, "PodNotCreated",
                   "ServiceAccount 'no-such-account' does not exist"),
}
PERMANENT_WITHIN = 30  # seconds from the attempt's start (its Job's pods made) to the run's failure


def test_a_container_that_cannot_start_is_explained_then_fails_its_attempt(namespace, operator):
    once = {"maxAttempts": 1}
    apply([task(name, "print('never')", retry=once, **spec) for name, (spec, _) in CASES.items()]
          + [task("no-sandbox", "print('never')", retry=once, **NO_SANDBOX)]
          + [taskrun(f"{name}-1", name) for name in [*CASES, "no-sandbox"]], namespace)
    for name, (_, reasons) in CASES.items():
        # While it waits: Running, with the reason in the condition (kubectl get -o wide shows it).
        s = wait_until(f"{name}-1 shows {reasons}", lambda: (s := status(namespace, f"{name}-1")).get("conditions")
                       and s["conditions"][0]["reason"] in reasons and s, timeout=START_DEADLINE_SECONDS)
        assert s["phase"] == "Running" and "has not started" in s["conditions"][0]["message"]
    for name, (_, reasons) in CASES.items():
        s = wait_phase(namespace, f"{name}-1", {"Failed", "TimedOut", "Succeeded"}, timeout=START_DEADLINE_SECONDS + 60)
        assert s["phase"] == "Failed" and s["attempts"][0]["reason"] in reasons, (name, s)
        assert "did not start" in s["error"]["message"] and s["conditions"][0]["reason"] == "Failed"
    s = wait_phase(namespace, "no-sandbox-1", {"Failed", "TimedOut", "Succeeded"}, timeout=START_DEADLINE_SECONDS + 60)
    assert s["phase"] == "Failed" and s["attempts"][0]["reason"] == "FailedCreatePodSandBox", s
    assert "Failed to create pod sandbox" in s["error"]["message"], s


def test_a_start_no_wait_can_mend_fails_the_run_within_30_seconds(namespace, operator):
    """InvalidImageName, ErrImageNeverPull, a missing ServiceAccount: not retried (three attempts
    allowed), failed within PERMANENT_WITHIN seconds of the attempt's start, the cause named."""
    thrice = {"maxAttempts": 3, "minDelay": "1s"}
    apply([task(name, "print('never')", retry=thrice, **spec) for name, (spec, _, _) in PERMANENT.items()]
          + [taskrun(f"{name}-1", name) for name in PERMANENT], namespace)
    for name, (_, reason, shown) in PERMANENT.items():
        s = wait_phase(namespace, f"{name}-1", {"Failed", "TimedOut", "Succeeded"}, timeout=START_DEADLINE_SECONDS + 30)
        assert s["phase"] == "Failed" and s["attempt"] == 1 and s["attempts"][0]["reason"] == reason, (name, s["attempts"])
        assert shown in s["error"]["message"] and "cannot start until its Task changes" in s["conditions"][0]["message"]
        attempt = s["attempts"][0]
        took = (ts(attempt["completionTime"]) - ts(attempt["startTime"])).total_seconds()
        print(f"{name}: {reason} failed {took:.0f} s after its attempt started")
        assert took <= PERMANENT_WITHIN, (name, took, s)


def test_time_spent_not_starting_is_not_a_timeout(namespace, operator):
    """maxDuration shorter than the start deadline: the Job's deadline ends an attempt that never
    started, which fails with the reason it could not start, not TimedOut; it is retried (the
    retry, from the same Task with the same problem, fails when the problem is seen), and the run
    fails, never TimedOut."""
    # 20 s, under the start deadline (45 s), and long enough for a busy kubelet to report the pull
    # error: at 8 s, with another session sharing the cluster, a retry's pod was still being created.
    apply([task("slow-start", "print('never')", image=UNREACHABLE, imagePullPolicy="IfNotPresent",
                maxDuration="20s", retry={"maxAttempts": 2, "minDelay": "1s"}),
           taskrun("slow-start-1", "slow-start")], namespace)
    s = wait_phase(namespace, "slow-start-1", {"Failed", "TimedOut", "Succeeded"}, timeout=START_DEADLINE_SECONDS + 60)
    assert s["phase"] == "Failed" and s["attempt"] == 2, s
    assert [a["reason"] in PULL for a in s["attempts"]] == [True, True], s
