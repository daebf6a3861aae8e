"""TaskRuns on the real cluster: applied as YAML, observed through the API, as a user would."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from tests.conftest import FINISHED_PHASES, KWOK_PLACEMENT, VERSIONS, apply, get, kubectl, kubectl_run, wait_until

pytestmark = pytest.mark.cluster
IMAGE = VERSIONS["PYTHON_IMAGE"]
FINISHED = FINISHED_PHASES


def task(name: str, script: str, **spec) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"image": IMAGE, "imagePullPolicy": "Never", "command": ["python3", "-c", script],
                     "machine": {"preset": "micro"}, **spec}}


def taskrun(name: str, task_ref: str, **spec) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
            "spec": {"taskRef": task_ref, **spec}}


def status(namespace: str, run: str) -> dict:
    return get("taskrun", run, namespace).get("status") or {}


def wait_phase(namespace: str, run: str, phases: set[str] | str, timeout: float = 180) -> dict:
    phases = {phases} if isinstance(phases, str) else phases
    return wait_until(f"{run} in {phases}", lambda: (s := status(namespace, run)).get("phase") in phases and s,
                      timeout=timeout)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def has_event(namespace: str, run: str, reason: str, timeout: float = 30) -> bool:
    """Waits for an Event: they are posted after the status write they explain, asynchronously."""
    return wait_until(f"a {reason} Event on {run}", lambda: reason in events(namespace, run), timeout=timeout)


def events(namespace: str, run: str) -> list[str]:
    found = json.loads(kubectl("get", "events", "-n", namespace, "--field-selector",
                               f"involvedObject.name={run},involvedObject.kind=TaskRun", "-o", "json"))
    return [e["reason"] for e in found["items"]]


def test_a_run_succeeds(namespace, operator):
    apply([task("hello", "print('hi')"), taskrun("hello-1", "hello")], namespace)
    s = wait_phase(namespace, "hello-1", FINISHED)
    assert s["phase"] == "Succeeded" and s["attempt"] == 1
    cond = next(c for c in s["conditions"] if c["type"] == "Succeeded")
    assert cond["status"] == "True" and s["duration"]
    job = get("job", "hello-1-1", namespace)
    assert job["metadata"]["ownerReferences"][0]["name"] == "hello-1"
    assert job["spec"]["backoffLimit"] == 0
    res = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"] == {"cpu": "250m", "memory": "256Mi"}
    assert has_event(namespace, "hello-1", "Succeeded")
    table = kubectl("get", "taskruns", "-n", namespace)
    assert table.split()[:7] == ["NAME", "TASK", "PHASE", "ATTEMPT", "WAITING", "PROGRESS", "AGE"] and "Succeeded" in table


def test_an_operator_killed_mid_burst_neither_loses_nor_duplicates_work(namespace, operator):
    # Kept on the kwok nodes, which complete pods at once: the burst is what is tested.
    apply(task("burst", "print(1)", **KWOK_PLACEMENT), namespace)
    apply([taskrun(f"b{i}", "burst") for i in range(12)], namespace)

    def jobs() -> list[str]:
        return sorted(j["metadata"]["name"] for j in
                      json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json"))["items"])

    wait_until("the first Job", jobs, timeout=60, interval=0.1)
    operator.kill()  # SIGKILL while the burst is being reconciled
    print(f"Jobs when the operator was killed: {len(jobs())} of 12")
    operator.start()
    for i in range(12):
        assert wait_phase(namespace, f"b{i}", FINISHED)["phase"] == "Succeeded"
    assert jobs() == sorted(f"b{i}-1" for i in range(12))
    assert all(status(namespace, f"b{i}")["attempt"] == 1 for i in range(12))


def test_fails_twice_then_succeeds_with_backoff(namespace, operator):
    script = "import os, sys; a = int(os.environ['KUBETASKS_ATTEMPT']); print('attempt', a); sys.exit(0 if a >= 3 else 1)"
    retry = {"maxAttempts": 3, "minDelay": "3s", "factor": 2, "maxDelay": "1m"}
    apply([task("flaky", script, retry=retry), taskrun("flaky-1", "flaky")], namespace)
    s = wait_phase(namespace, "flaky-1", FINISHED, timeout=240)
    assert s["phase"] == "Succeeded" and s["attempt"] == 3
    a1, a2, a3 = s["attempts"]
    assert (a1["reason"], a1["exitCode"], a2["reason"], a3["reason"]) == ("Error", 1, "Error", "Succeeded")
    # Backoff observed: attempt 2 starts >= 3s after attempt 1 failed, attempt 3 >= 6s after attempt 2.
    assert ts(a2["startTime"]) - ts(a1["completionTime"]) >= timedelta(seconds=3)
    assert ts(a3["startTime"]) - ts(a2["completionTime"]) >= timedelta(seconds=6)
    assert events(namespace, "flaky-1").count("AttemptFailed") == 2


def test_out_of_memory_is_reported_and_retried(namespace, operator):
    hog = "import os; n = 10 if os.environ['KUBETASKS_ATTEMPT'] == '1' else 1; x = bytearray(n * 64 * 1024 * 1024)"
    apply([task("hog", hog, machine={"cpu": "250m", "memory": "96Mi"}, retry={"maxAttempts": 2, "minDelay": "1s"}),
           taskrun("hog-1", "hog")], namespace)
    s = wait_phase(namespace, "hog-1", FINISHED)
    assert s["attempts"][0]["reason"] == "OOMKilled" and s["attempts"][0]["exitCode"] == 137
    assert s["phase"] == "Succeeded" and s["attempt"] == 2


def test_max_duration_times_out(namespace, operator):
    # maxDuration counts from the Job's start: 15 s lets the container start on a loaded machine (one
    # not started by then is a failed start, not TimedOut: test_bad_input's x-max-duration saw it at 10 s).
    apply([task("slow", "import time; time.sleep(300)", maxDuration="15s"), taskrun("slow-1", "slow")], namespace)
    s = wait_phase(namespace, "slow-1", FINISHED)
    assert s["phase"] == "TimedOut" and s["attempt"] == 1 and s["attempts"][0]["reason"] == "DeadlineExceeded"


def test_cancel_stops_a_running_run(namespace, operator):
    apply([task("long", "import time; time.sleep(300)"), taskrun("long-1", "long")], namespace)
    wait_until("the pod runs", lambda: "Running" in kubectl(
        "get", "pods", "-n", namespace, "-l", "job-name=long-1-1", "-o", "jsonpath={.items[*].status.phase}"))
    kubectl("patch", "taskrun", "long-1", "-n", namespace, "--type=merge", "-p", '{"spec":{"cancel":true}}')
    s = wait_phase(namespace, "long-1", FINISHED)
    assert s["phase"] == "Cancelled"
    wait_until("the job is gone", lambda: not kubectl("get", "jobs", "-n", namespace, "-o", "name").strip())
    # Its process stops at the SIGTERM: its pod is gone well before the 30 s grace period ends
    # (as PID 1, `python3 -c` would ignore the SIGTERM and wait for the SIGKILL).
    wait_until("the pod is gone", lambda: not kubectl("get", "pods", "-n", namespace, "-o", "name").strip(),
               timeout=20)


def test_a_delayed_run_does_not_start_early(namespace, operator):
    apply([task("later", "print('now')"), taskrun("later-1", "later", delay="8s")], namespace)
    s = wait_phase(namespace, "later-1", "Delayed", timeout=30)
    s = wait_phase(namespace, "later-1", FINISHED)
    run = get("taskrun", "later-1", namespace)
    created = ts(run["metadata"]["creationTimestamp"])
    assert s["phase"] == "Succeeded"
    assert ts(s["attempts"][0]["startTime"]) >= created + timedelta(seconds=8)


def test_idempotency_keys_run_once(namespace, operator):
    apply([task("once", "print('once')"), taskrun("once-1", "once", idempotencyKey="order-42")], namespace)
    wait_phase(namespace, "once-1", FINISHED)
    apply(taskrun("once-2", "once", idempotencyKey="order-42"), namespace)
    s = wait_phase(namespace, "once-2", "Duplicate")
    assert s["duplicateOf"] == "once-1" and not s.get("attempt")
    cond = next(c for c in s["conditions"] if c["type"] == "Succeeded")
    assert cond["reason"] == "Deduplicated" and "once-1" in cond["message"]
    assert kubectl("get", "jobs", "-n", namespace, "-o", "name").split() == ["job.batch/once-1-1"]


def test_concurrency_limit_holds_the_second_run_queued(namespace, operator):
    apply([task("serial", "import time; time.sleep(6)", concurrency={"limit": 1}),
           taskrun("serial-1", "serial")], namespace)
    wait_phase(namespace, "serial-1", "Running", timeout=60)
    apply(taskrun("serial-2", "serial"), namespace)
    wait_phase(namespace, "serial-2", "Queued", timeout=30)
    assert status(namespace, "serial-1")["phase"] == "Running"
    s1 = wait_phase(namespace, "serial-1", FINISHED)
    s2 = wait_phase(namespace, "serial-2", FINISHED)
    assert s1["phase"] == s2["phase"] == "Succeeded"
    # serial-2 starts once serial-1's pod has ended (its slot is free then; the Job controller
    # marks the Job, whose time is the attempt's completionTime, finished up to a second later).
    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l", "job-name=serial-1-1", "-o", "json"))["items"]
    ended = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
    assert ts(s2["attempts"][0]["startTime"]) >= ts(ended)


def test_an_invalid_payload_is_rejected_with_a_reason(namespace, operator):
    schema = {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}
    apply([task("typed", "print(1)", payloadSchema=schema), taskrun("typed-1", "typed", payload={"url": 7})], namespace)
    s = wait_phase(namespace, "typed-1", FINISHED, timeout=60)
    cond = next(c for c in s["conditions"] if c["type"] == "Succeeded")
    assert s["phase"] == "Failed" and cond["reason"] == "InvalidPayload" and "url" in cond["message"]
    assert has_event(namespace, "typed-1", "InvalidPayload")
    assert not kubectl("get", "jobs", "-n", namespace, "-o", "name").strip()


def test_a_job_the_api_server_refuses_fails_the_run_with_its_message(namespace, operator):
    # The CRD allows any string map; the API server validates the Job's nodeSelector keys.
    apply([task("misplaced", "print(1)", nodeSelector={"not a label!": "x"}), taskrun("misplaced-1", "misplaced")],
          namespace)
    s = wait_phase(namespace, "misplaced-1", FINISHED, timeout=60)
    cond = next(c for c in s["conditions"] if c["type"] == "Succeeded")
    assert s["phase"] == "Failed" and cond["reason"] == "InvalidSpec" and "nodeSelector" in cond["message"]
    assert s["error"]["type"] == "InvalidSpec" and s["completionTime"]
    assert has_event(namespace, "misplaced-1", "InvalidSpec")


def test_an_unknown_task_waits_with_a_reason_and_runs_once_it_exists(namespace, operator):
    apply(taskrun("orphan-1", "missing"), namespace)
    wait_until("TaskNotFound", lambda: any(c.get("reason") == "TaskNotFound"
                                          for c in status(namespace, "orphan-1").get("conditions", [])), timeout=60)
    apply(task("missing", "print(1)"), namespace)
    assert wait_phase(namespace, "orphan-1", FINISHED)["phase"] == "Succeeded"


def test_the_api_server_rejects_bad_input_at_apply_time(namespace, crds):
    cases = {
        "retry.maxAttempts": task("bad-retry", "1", retry={"maxAttempts": -1}),
        "machine.memory": task("bad-memory", "1", machine={"memory": "lots"}),
        "set command or entrypoint, not both": task("bad-both", "1", entrypoint="m:f"),
        "set delay or notBefore, not both": taskrun("bad-delay", "t", delay="1s", notBefore="2030-01-01T00:00:00Z"),
        "spec.delay": taskrun("bad-duration", "t", delay="soon"),
    }
    for expected, manifest in cases.items():
        done = kubectl_run("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
        assert done.returncode != 0 and expected in done.stderr, (expected, done.stderr)
    apply(taskrun("fixed", "t", payload={"a": 1}), namespace)
    done = kubectl_run("patch", "taskrun", "fixed", "-n", namespace, "--type=merge", "-p", '{"spec":{"taskRef":"u"}}')
    assert done.returncode != 0 and "taskRef is immutable" in done.stderr


def test_finished_runs_are_deleted_with_their_jobs_once_their_ttl_is_up(namespace, operator):
    apply([task("brief", "print(1)", retention={"ttlSecondsAfterFinished": 3}),
           taskrun("brief-1", "brief"), taskrun("brief-kept", "brief", ttlSecondsAfterFinished=0)], namespace)
    assert wait_phase(namespace, "brief-kept", FINISHED)["phase"] == "Succeeded"

    def gone(kind: str, name: str) -> bool:
        return not kubectl("get", kind, name, "-n", namespace, "--ignore-not-found", "-o", "name").strip()

    wait_until("brief-1 deleted after its TTL", lambda: gone("taskrun", "brief-1"), timeout=90)
    wait_until("its Job deleted with it", lambda: gone("job", "brief-1-1"), timeout=90)
    assert status(namespace, "brief-kept")["phase"] == "Succeeded"  # ttlSecondsAfterFinished: 0 keeps it
