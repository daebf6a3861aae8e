"""Logs that outlive pods: `kubetasks logs` prints a finished attempt's log after its Job (and
pod) were deleted by their TTL, from the ConfigMap the operator kept, which goes with the run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import KWOK_PLACEMENT, apply, get, kubectl, wait_until
from tests.integration.test_cli import cli, one_line_error
from tests.integration.test_taskruns import task, taskrun, wait_phase

pytestmark = pytest.mark.cluster

KEEP = 262144  # the session operator's KUBETASKS_LOG_KEEP_BYTES: the default
JOB_TTL = 5  # seconds: the Jobs go soon after their attempt, the operator has read the log by then
# Attempt 1 prints a first line, more than KEEP bytes of filler and a last line, then fails;
# attempt 2 prints three lines and succeeds.
SCRIPT = """
import os, sys
n = os.environ["KUBETASKS_ATTEMPT"]
if n == "1":
    print("attempt 1 starts")
    for i in range(3500):
        print(f"filler {i:06d} " + "x" * 80)
    print("attempt 1 fails", flush=True)
    sys.exit(1)
for i in range(3):
    print(f"attempt {n} line {i}")
"""


def jobs_of(namespace: str, uid: str) -> list[str]:
    found = json.loads(kubectl("get", "jobs", "-n", namespace, "-l", f"kubetasks.io/run-uid={uid}", "-o", "json"))
    return [j["metadata"]["name"] for j in found["items"]]


def configmap(namespace: str, name: str) -> dict | None:
    out = kubectl("get", "configmap", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out) if out.startswith("{") else None


def test_logs_of_a_run_whose_jobs_were_deleted_by_their_ttl_come_from_the_kept_configmaps(namespace, operator):
    apply([task("chatty", SCRIPT, ttlSecondsAfterFinished=JOB_TTL, retry={"maxAttempts": 2, "minDelay": "1s"}),
           taskrun("chatty-1", "chatty")], namespace)
    s = wait_phase(namespace, "chatty-1", {"Succeeded", "Failed", "TimedOut"}, timeout=240)
    assert s["phase"] == "Succeeded" and [a["reason"] for a in s["attempts"]] == ["Error", "Succeeded"], s
    uid = get("taskrun", "chatty-1", namespace)["metadata"]["uid"]
    wait_until("the run's Jobs deleted by their TTL", lambda: not jobs_of(namespace, uid), timeout=120)
    assert not json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"kubetasks.io/run-uid={uid}",
                                  "-o", "json"))["items"]

    latest = cli("logs", "chatty-1", "-n", namespace)
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout == "".join(f"attempt 2 line {i}\n" for i in range(3)) and not latest.stderr

    first = cli("logs", "chatty-1", "-n", namespace, "--attempt", "1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.endswith("attempt 1 fails\n") and "attempt 1 starts" not in first.stdout  # its end
    assert first.stdout.startswith("filler ") and KEEP - 100 <= len(first.stdout.encode()) <= KEEP
    assert "the log of attempt 1 was longer" in first.stderr and len(first.stderr.strip().splitlines()) == 1

    kept = [configmap(namespace, f"chatty-1-{n}-log") for n in (1, 2)]
    for n, cm in enumerate(kept, start=1):
        assert cm is not None and cm["metadata"]["ownerReferences"][0]["uid"] == uid
        assert cm["metadata"]["labels"]["kubetasks.io/attempt"] == str(n)
    assert [cm["metadata"]["annotations"]["kubetasks.io/log-truncated"] for cm in kept] == ["true", "false"]

    kubectl("delete", "taskrun", "chatty-1", "-n", namespace, "--wait=false")
    wait_until("the kept logs removed with their run (garbage collector)",
               lambda: not any(configmap(namespace, f"chatty-1-{n}-log") for n in (1, 2)), timeout=120)


def test_a_run_with_no_pod_and_no_kept_log_says_so(namespace, operator):
    """Pods on kwok nodes have no log (their kubelet is fake): the read fails once, the run does
    not mind, and once the pod is gone the CLI says there is no log, with a non-zero exit."""
    apply([task("quiet", "print('never runs')", ttlSecondsAfterFinished=0, retry={"maxAttempts": 1}, **KWOK_PLACEMENT),
           taskrun("quiet-1", "quiet")], namespace)
    assert wait_phase(namespace, "quiet-1", {"Succeeded", "Failed", "TimedOut"}, timeout=120)["phase"] == "Succeeded"
    uid = get("taskrun", "quiet-1", namespace)["metadata"]["uid"]
    wait_until("the Job and its pod deleted by its TTL", lambda: not jobs_of(namespace, uid) and not json.loads(
        kubectl("get", "pods", "-n", namespace, "-l", f"kubetasks.io/run-uid={uid}", "-o", "json"))["items"], timeout=60)
    assert configmap(namespace, "quiet-1-1-log") is None
    error = one_line_error(cli("logs", "quiet-1", "-n", namespace))
    assert "its pod is gone and the operator kept none" in error
