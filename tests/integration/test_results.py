"""On the real cluster: a plain command's result is its termination message (issue 18, item 6), and a
Duplicate whose payload is not its holder's says so (item 8)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FINISHED_PHASES, KWOK_PLACEMENT, REPO, VERSIONS, apply, get, kubectl, wait_until

pytestmark = pytest.mark.cluster
IMAGE = VERSIONS["PYTHON_IMAGE"]
FINISHED = FINISHED_PHASES


def plain_task(name: str, script: str, **spec: object) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"image": IMAGE, "imagePullPolicy": "Never", "command": ["sh", "-c", script],
                     "machine": {"cpu": "50m", "memory": "64Mi"}, "retry": {"maxAttempts": 1}, **spec}}


def taskrun(name: str, task_ref: str, **spec: object) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
            "spec": {"taskRef": task_ref, **spec}}


def finished(namespace: str, run: str, timeout: float = 120) -> dict:
    def done() -> dict | None:
        status = get("taskrun", run, namespace).get("status") or {}
        return status if status.get("phase") in FINISHED else None
    return wait_until(f"{run} finished", done, timeout=timeout)


def events(namespace: str, run: str, reason: str) -> list[dict]:
    found = json.loads(kubectl("get", "events", "-n", namespace, "--field-selector",
                               f"involvedObject.name={run},involvedObject.kind=TaskRun,reason={reason}", "-o", "json"))
    return found["items"]


def test_a_plain_commands_json_termination_message_is_its_result(namespace, operator):
    apply([plain_task("rows", """echo '{"rows": 3, "table": "orders"}' > /dev/termination-log"""),
           taskrun("rows-1", "rows")], namespace)
    status = finished(namespace, "rows-1")
    assert status["phase"] == "Succeeded" and status["result"] == {"rows": 3, "table": "orders"}, status
    assert not events(namespace, "rows-1", "ResultDropped")


def test_a_plain_commands_termination_message_that_is_not_json_is_dropped_with_a_warning(namespace, operator):
    apply([plain_task("text", "echo 'rows=3' > /dev/termination-log"), taskrun("text-1", "text")], namespace)
    status = finished(namespace, "text-1")
    assert status["phase"] == "Succeeded" and status.get("result") is None, status
    assert "ResultDropped: its termination message is not JSON" in status["attempts"][0]["message"], status
    warnings = wait_until("a ResultDropped Event", lambda: events(namespace, "text-1", "ResultDropped"), timeout=30)
    assert warnings[0]["type"] == "Warning"
    assert warnings[0]["message"] == ("attempt 1 succeeded, but its termination message is not JSON (Expecting value "
                                      "at line 1 column 1): 'rows=3': the run has no result")


def test_a_plain_command_that_writes_the_runtimes_envelope_cannot_sleep_its_run(namespace, operator):
    envelope = '{"kubetasks":1,"outcome":"sleeping","wakeAt":"2999-01-01T00:00:00Z"}'
    apply([plain_task("forger", f"echo '{envelope}' > /dev/termination-log"), taskrun("forger-1", "forger")],
          namespace)
    status = finished(namespace, "forger-1")
    assert status["phase"] == "Succeeded" and status["result"] == json.loads(envelope), status


@pytest.mark.parametrize("same", [False, True], ids=["payloads-differ", "payloads-same"])
def test_a_duplicate_says_when_its_payload_is_not_its_holders(namespace, operator, same):
    task = plain_task("charge", "true", **KWOK_PLACEMENT)
    apply([task, taskrun("charge-a", "charge", idempotencyKey="order-42", payload={"amount": 10})], namespace)
    first = finished(namespace, "charge-a")  # it holds the key before the second run exists
    assert first["phase"] == "Succeeded", first
    apply(taskrun("charge-b", "charge", idempotencyKey="order-42", payload={"amount": 10 if same else 99}), namespace)
    second = finished(namespace, "charge-b")
    assert second["phase"] == "Duplicate" and second["duplicateOf"] == "charge-a", second
    condition = next(c for c in second["conditions"] if c["type"] == "Succeeded")
    event = wait_until("a Deduplicated Event", lambda: events(namespace, "charge-b", "Deduplicated"), timeout=30)[0]
    assert event["type"] == "Warning" and event["message"] == condition["message"]
    if same:
        assert "differs" not in condition["message"], condition
    else:
        assert "whose payload differs from this run's (sha256 " in condition["message"], condition
        assert "the result of 'charge-a' is not this payload's" in condition["message"]



def test_the_plain_result_example_returns_its_result(namespace, operator):
    apply((REPO / "examples" / "plain-result.yaml").read_text(), namespace)
    status = finished(namespace, "count-words")
    assert status["phase"] == "Succeeded" and status["result"] == {"words": 4}, status
