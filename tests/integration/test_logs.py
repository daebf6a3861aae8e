"""Logs that outlive pods: `kubetasks logs` prints a finished attempt's log after its Job (and
pod) were deleted by their TTL, from the ConfigMap the operator kept, which goes with the run;
and the kept logs of a namespace stay within its budget, the oldest deleted first."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kubetasks.core.log_archive import MIN_JOB_TTL
from tests.conftest import (INSTANCE, KUBECONFIG, KUBECTL, KWOK_PLACEMENT, OperatorProcess, apply, free_port, get,
                            kubectl, scrape, wait_until)
from tests.integration.test_cli import cli, one_line_error
from tests.integration.test_taskruns import task, taskrun, wait_phase

pytestmark = pytest.mark.cluster

KEEP = 16384  # the session operator's KUBETASKS_LOG_KEEP_BYTES: the default
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


def without_archive_note(stderr: str) -> str:
    """stderr less the line saying the whole log is archived but cannot be fetched as this user: the
    session operator has a store, and the admin's kubeconfig has a client certificate, no token
    (test_log_archive reads archived logs as a token's user)."""
    return "".join(line for line in stderr.splitlines(keepends=True) if " is archived, but " not in line)


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
    assert latest.stdout == "".join(f"attempt 2 line {i}\n" for i in range(3)) and not without_archive_note(latest.stderr)

    first = cli("logs", "chatty-1", "-n", namespace, "--attempt", "1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.endswith("attempt 1 fails\n") and "attempt 1 starts" not in first.stdout  # its end
    assert first.stdout.startswith("filler ") and KEEP - 100 <= len(first.stdout.encode()) <= KEEP
    shown = without_archive_note(first.stderr)
    assert "the log of attempt 1 was longer" in shown and len(shown.strip().splitlines()) == 1

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
        kubectl("get", "pods", "-n", namespace, "-l", f"kubetasks.io/run-uid={uid}", "-o", "json"))["items"],
        timeout=MIN_JOB_TTL + 60)  # a TTL of 0 is raised to MIN_JOB_TTL when the operator has a store
    assert configmap(namespace, "quiet-1-1-log") is None
    error = one_line_error(cli("logs", "quiet-1", "-n", namespace))
    assert "its pod is gone and the operator kept none" in error


# The budget ---------------------------------------------------------------------------------------

KEPT_LOGS = "app.kubernetes.io/managed-by=kubetasks,kubetasks.io/attempt"  # core.logs.KEPT_LOG_SELECTOR
RUNS = 200
BUDGET = 2**20  # bytes per namespace: about 68 of the 200 runs' 15 KiB tails
# 1 MiB of 1 KiB lines, then a line that names the run: its kept tail is the last 15 whole lines.
LOUD = """
import os, sys
sys.stdout.write(("x" * 1023 + "\\n") * 1023)
print(os.environ["KUBETASKS_RUN"] + " " + "y" * (1022 - len(os.environ["KUBETASKS_RUN"])))
"""


class ConfigMapEvents:
    """Every event of the namespace's kept logs, from `kubectl get --watch` (not the operator's own
    client): when each was created and which were deleted."""

    def __init__(self, namespace: str, path: Path) -> None:
        self.path = path
        self.out = open(path, "wb")
        self.proc = subprocess.Popen([KUBECTL, "--kubeconfig", KUBECONFIG, "get", "configmaps", "-n", namespace, "-l",
                                      KEPT_LOGS, "--watch", "--output-watch-events", "-o", "json"],
                                     stdout=self.out, stderr=subprocess.STDOUT)

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        text, at, found = self.path.read_text(), 0, []
        decoder = json.JSONDecoder()
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            if at >= len(text):
                return found
            try:
                event, at = decoder.raw_decode(text, at)
            except json.JSONDecodeError:
                return found  # the last one is still being written
            found.append((event["type"], event["object"]["metadata"]))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.out.close()


def kept_logs(namespace: str) -> list[dict[str, Any]]:
    return json.loads(kubectl("get", "configmaps", "-n", namespace, "-l", KEPT_LOGS, "-o", "json"))["items"]


def data_bytes(configmap: dict[str, Any]) -> int:
    return sum(len(v.encode()) for v in (configmap.get("data") or {}).values())


@pytest.mark.serial  # 40 pods at once fill the one real node: another session's pods would wait past their start deadline
def test_kept_logs_stay_within_the_namespace_budget_and_the_oldest_are_evicted(namespace, tmp_path: Path):
    """200 runs on the real node each print 1 MiB; 16 KiB of each is kept (the default), under a
    1 MiB budget: the ConfigMaps' data, measured, stay within it, and those gone are the oldest."""
    instance = f"{INSTANCE}-budget"  # an operator of its own (the budget is its setting), beside the session's
    op = OperatorProcess(tmp_path / "operator.log", namespaces=namespace, metrics_port=free_port(),
                         env={"KUBETASKS_INSTANCE_ID": instance, "KUBETASKS_LOG_BUDGET_BYTES": str(BUDGET),
                              "KUBETASKS_START_DEADLINE_SECONDS": "600"})
    watch = ConfigMapEvents(namespace, tmp_path / "configmaps.json")
    op.start()
    started = time.monotonic()
    try:
        loud = task("loud", LOUD, ttlSecondsAfterFinished=30, retry={"maxAttempts": 1}, concurrency={"limit": 40},
                    machine={"cpu": "20m", "memory": "64Mi"})  # many at once on the 2-core node
        apply([loud, *(taskrun(f"loud-{i:03d}", "loud") for i in range(RUNS))], namespace, instance)

        def finished() -> dict[str, int] | None:
            runs = json.loads(kubectl("get", "taskruns", "-n", namespace, "-o", "json"))["items"]
            counts: dict[str, int] = {}
            for run in runs:
                phase = (run.get("status") or {}).get("phase", "")
                counts[phase] = counts.get(phase, 0) + 1
            ended = sum(n for p, n in counts.items() if p in {"Succeeded", "Failed", "TimedOut"})
            return counts if ended == RUNS else None
        done = wait_until("every run finished", finished, timeout=420, interval=5)  # within pytest-timeout
        assert done == {"Succeeded": RUNS}, done

        def settled() -> list[dict[str, Any]] | None:
            added = {m["uid"] for t, m in watch.events() if t == "ADDED"}
            left = kept_logs(namespace)
            return left if len(added) == RUNS and sum(map(data_bytes, left)) <= BUDGET else None
        left = wait_until("every run's log kept, and the namespace's within its budget", settled, timeout=120)
        seconds = time.monotonic() - started
        events = watch.events()
    finally:
        watch.stop()
        metrics = scrape(op.metrics_port) if op.proc and op.proc.poll() is None else {}
        op.stop()
        print(f"operator log: {op.log_path}")

    created = {m["uid"]: m for t, m in events if t == "ADDED"}
    deleted = {m["uid"] for t, m in events if t == "DELETED"}
    survivors = {c["metadata"]["uid"] for c in left}
    kept_bytes = sum(map(data_bytes, left))
    log_bytes = {data_bytes(c) for c in left}
    print(f"{RUNS} runs printed 1 MiB each; {len(created)} logs kept, {len(deleted)} evicted, {len(left)} left "
          f"holding {kept_bytes} bytes of data (budget {BUDGET}; {sorted(log_bytes)} each) after {seconds:.0f}s")
    assert len(created) == RUNS and deleted | survivors == set(created) and not deleted & survivors
    assert log_bytes == {15 * 1024}  # the last 15 whole 1 KiB lines: 16 KiB, cut at a line start
    assert BUDGET - 15 * 1024 < kept_bytes <= BUDGET  # within the budget, and no more evicted than needed
    # The oldest went: none of those evicted was created after one that stays (seconds resolution).
    assert max(created[u]["creationTimestamp"] for u in deleted) <= min(created[u]["creationTimestamp"] for u in survivors)
    assert all(c["data"]["log"].endswith(c["metadata"]["labels"]["kubetasks.io/run"] + " " + "y" * (
        1022 - len(c["metadata"]["labels"]["kubetasks.io/run"])) + "\n") for c in left)  # each its own run's tail
    samples = {s.name: s.value for f in metrics.values() for s in f if s.labels.get("namespace") == namespace}
    assert samples.get("kubetasks_kept_log_bytes") == kept_bytes and samples.get("kubetasks_kept_logs") == len(left)
    assert samples.get("kubetasks_kept_log_evictions_total") == len(deleted)
