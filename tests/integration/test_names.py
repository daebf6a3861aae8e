"""Names on the real cluster: object names of any valid length work, and nobody can squat on a
name the operator or the SDK derives (a cron tick's, an idempotency key's)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from kubetasks.core.naming import checkpoint_name, payload_name

from tests.conftest import apply, get, kubectl, wait_until
from tests.integration.test_runtime import sdk_task
from tests.integration.test_taskruns import FINISHED, task, taskrun, wait_phase

pytestmark = pytest.mark.cluster

# A valid object name of the longest kind: a DNS-1123 subdomain of 253 characters, with dots
# (a Job name may have none) and parts longer than a label's 63 (the API server checks the whole).
LONG = ".".join(["a" * 80 + "-" + "b" * 20, "c" * 70, "d" * 80])
assert len(LONG) == 253


def jobs_of(namespace: str, uid: str) -> list[dict]:
    return json.loads(kubectl("get", "jobs", "-n", namespace, "-l", f"kubetasks.io/run-uid={uid}",
                              "-o", "json"))["items"]


def runs(namespace: str) -> list[dict]:
    return json.loads(kubectl("get", "taskruns", "-n", namespace, "-o", "json"))["items"]


def task_events(namespace: str, task_name: str) -> list[dict]:
    return json.loads(kubectl("get", "events", "-n", namespace, "--field-selector",
                              f"involvedObject.name={task_name},involvedObject.kind=Task", "-o", "json"))["items"]


def test_a_run_named_with_253_characters_succeeds_with_one_job(namespace, operator):
    apply([sdk_task("hello", "kubetasks_examples.hello:run"), taskrun(LONG, "hello", payload={"name": "long"})],
          namespace)
    s = wait_phase(namespace, LONG, FINISHED, timeout=180)
    assert s["phase"] == "Succeeded" and s["attempt"] == 1, s
    assert s["result"] == {"greeting": "Hello, long!"}  # the payload's file reached the pod
    uid = get("taskrun", LONG, namespace)["metadata"]["uid"]
    [job] = jobs_of(namespace, uid)
    name = job["metadata"]["name"]
    assert len(name) <= 63 and "." not in name and name.endswith("-1"), name
    assert s["attempts"][0]["jobName"] == name
    assert len(job["metadata"]["labels"]["kubetasks.io/run"]) <= 63
    # Its identity, checkpoint and payload objects have names of up to 253 characters. Its pod ran as
    # its account (deleted once the run finished); the ConfigMaps stay until its retention.
    account = job["spec"]["template"]["spec"]["serviceAccountName"]
    assert len(account) <= 253 and account.endswith("-run"), account
    for kept in (checkpoint_name(LONG, uid), payload_name(LONG, uid)):
        assert len(kept) <= 253 and get("configmap", kept, namespace)["metadata"]["ownerReferences"][0]["uid"] == uid


def minutes_from_now(n: int) -> datetime:
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    return now + timedelta(minutes=n)


def test_cron_tick_names_a_253_character_tasks_and_a_squatted_one(namespace, operator):
    """Two cron Tasks in one namespace wait for the same minute's tick (a minute of CI each, apart)."""
    apply(task(LONG, "print('tick')", schedule="* * * * *", startingDeadlineSeconds=50), namespace)
    squatted_tick_name_is_not_adopted_and_a_warning_names_it(namespace)
    a_cron_task_named_with_253_characters_runs(namespace)


def a_cron_task_named_with_253_characters_runs(namespace: str) -> None:
    def finished_run() -> dict | None:
        mine = [r for r in runs(namespace) if r["spec"]["taskRef"] == LONG]
        return next((r for r in mine if (r.get("status") or {}).get("phase") in FINISHED), None)

    run = wait_until("a scheduled run of the 253-character Task to finish", finished_run, timeout=150, interval=1)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert len(run["metadata"]["name"]) <= 63 and run["metadata"]["labels"]["kubetasks.io/scheduled"] == "true"
    assert run["metadata"]["ownerReferences"][0]["uid"] == get("task", LONG, namespace)["metadata"]["uid"]


def squatted_tick_name_is_not_adopted_and_a_warning_names_it(namespace: str) -> None:
    # Someone who may create TaskRuns (a task pod, say) takes the names of the next two ticks,
    # with the labels and annotation of scheduled runs and a payload of their own.
    ticks = [minutes_from_now(1), minutes_from_now(2)]
    forged = {f"report-{int(t.timestamp()) // 60}": t for t in ticks}
    for name, tick in forged.items():
        run = taskrun(name, "report", payload={"report": "forged"})
        run["metadata"].update(labels={"kubetasks.io/task": "report", "kubetasks.io/scheduled": "true"},
                               annotations={"kubetasks.io/scheduled-at": tick.isoformat()})
        apply(run, namespace)
    apply(task("report", "print('report')", schedule="* * * * *", startingDeadlineSeconds=50,
               payload={"report": "real"}), namespace)
    uid = get("task", "report", namespace)["metadata"]["uid"]

    warning = wait_until("a TickNameTaken Warning on the Task",
                         lambda: next((e for e in task_events(namespace, "report")
                                       if e["reason"] == "TickNameTaken"), None), timeout=100, interval=1)
    squatted = next(name for name in forged if name in warning["message"])
    assert warning["type"] == "Warning" and "not controlled by this Task" in warning["message"]
    assert "forged" not in warning["message"]  # names the run, never quotes its payload

    # The tick ran under the Task's UID-qualified name, with the Task's payload.
    minute = int(forged[squatted].timestamp()) // 60
    qualified = f"report-{uid[:8]}-{minute}"
    assert qualified in warning["message"]
    real = get("taskrun", qualified, namespace)
    assert real["spec"]["payload"] == {"report": "real"}
    assert real["metadata"]["ownerReferences"][0]["uid"] == uid
    s = wait_phase(namespace, qualified, FINISHED, timeout=120)
    assert s["phase"] == "Succeeded"

    # The squatter's run was not adopted: no owner, its own payload, not among the Task's runs.
    theirs = get("taskrun", squatted, namespace)
    assert not theirs["metadata"].get("ownerReferences") and theirs["spec"]["payload"] == {"report": "forged"}
    status = wait_until("the Task's status to record the tick",
                        lambda: (st := get("task", "report", namespace).get("status") or {}).get("lastScheduleTime")
                        and st, timeout=30)
    assert squatted not in (status.get("activeRuns") or [])


def test_a_squatted_idempotency_key_name_raises_instead_of_returning_the_other_run(namespace):
    from kubetasks.core.naming import idempotent_run_name
    from kubetasks.runtime.errors import IdempotencyConflict
    from kubetasks.runtime.trigger import trigger

    apply(task("orders", "print('order')"), namespace)
    # The name trigger("orders", ..., idempotency_key="order-99") computes, taken with another payload.
    name = idempotent_run_name("orders", "order-99")
    apply(taskrun(name, "orders", payload={"order": 99, "to": "attacker"}, idempotencyKey="order-99"), namespace)
    with pytest.raises(IdempotencyConflict, match="another payload") as conflict:
        trigger("orders", {"order": 99, "to": "customer"}, idempotency_key="order-99", namespace=namespace)
    assert conflict.value.run == name and "attacker" not in str(conflict.value)

    # The same payload but not made by trigger (no digest annotation): refused too.
    kubectl("delete", "taskrun", name, "-n", namespace)
    apply(taskrun(name, "orders", payload={"order": 99, "to": "customer"}, idempotencyKey="order-99"), namespace)
    with pytest.raises(IdempotencyConflict, match="not made by trigger"):
        trigger("orders", {"order": 99, "to": "customer"}, idempotency_key="order-99", namespace=namespace)

    # A key triggered twice by the SDK gives one run, round-tripped through the API server
    # (a float with an integral value comes back an integer).
    payload = {"order": 100, "amount": 12.5, "count": 2.0, "items": [{"sku": "a", "n": 1}]}
    first = trigger("orders", payload, idempotency_key="order-100", namespace=namespace)
    again = trigger("orders", payload, idempotency_key="order-100", namespace=namespace)
    assert first.name == again.name == idempotent_run_name("orders", "order-100")
    assert [r["metadata"]["name"] for r in runs(namespace) if r["spec"].get("idempotencyKey") == "order-100"] == [
        first.name]
