"""Events on the cluster: ``kubetasks send`` starts one run of each subscribed Task whose filter
matches, a resend with the same id starts nothing (counted with a watch on the TaskRuns, not a
final list), and a filter that does not compile makes its Task Ready=False."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kubetasks.core.events import LABEL_EVENT_ID, event_object_name, event_run_name
from tests.conftest import KWOK_PLACEMENT, apply, get, wait_until
from tests.integration.test_cli import cli_env
from tests.integration.test_durable_waits import phase, waits_broken
from tests.integration.test_flow_control import PodTimeline, RunTimeline, Timeline
from tests.integration.test_runtime import sdk_task
from tests.integration.test_taskruns import FINISHED, status, task, taskrun
from tests.integration.test_tokens import finished

pytestmark = pytest.mark.cluster
EVENT = "user.created"


def send(namespace: str, event: str, data: str, id_: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubetasks.cli.main", "send", event, "--data", data, "--id", id_,
                           "-n", namespace], env=cli_env(), capture_output=True, text=True, timeout=60)


def subscriber(name: str, filter_: str | None = None) -> dict:
    on = {"event": EVENT, **({"filter": filter_} if filter_ else {})}
    return task(name, "print(1)", on=[on], **KWOK_PLACEMENT)


def dispatched(namespace: str, id_: str) -> dict:
    return wait_until(f"event {id_} dispatched", lambda: (get("taskevent", event_object_name(EVENT, id_), namespace)
                                                          .get("status") or {}).get("dispatchedAt") and get(
        "taskevent", event_object_name(EVENT, id_), namespace), timeout=60, interval=0.2)


def test_send_starts_each_matching_subscriber_once_and_a_resend_starts_nothing(namespace, operator):
    apply([subscriber("welcome"), subscriber("pro", 'data.plan == "pro"'), subscriber("free", 'data.plan == "free"'),
           subscriber("broken", "data.plan ==")], namespace)
    ready = wait_until("broken is Ready=False", lambda: next(
        (c for c in (get("task", "broken", namespace).get("status") or {}).get("conditions") or []
         if c["type"] == "Ready" and c["status"] == "False"), None), timeout=60)
    assert ready["reason"] == "InvalidFilter" and "spec.on[0] (user.created)" in ready["message"], ready

    with RunTimeline(namespace) as runs:
        first = send(namespace, EVENT, '{"plan": "pro"}', "u1")
        assert first.returncode == 0 and "sent" in first.stdout, first.stderr
        event = dispatched(namespace, "u1")
        assert sorted(event["status"]["runs"]) == sorted(event_run_name(t, EVENT, "u1") for t in ("welcome", "pro"))

        again = send(namespace, EVENT, '{"plan": "free"}', "u1")
        assert again.returncode == 0 and "already sent" in again.stdout, (again.stdout, again.stderr)
        assert get("taskevent", event_object_name(EVENT, "u1"), namespace)["metadata"]["resourceVersion"] == \
            event["metadata"]["resourceVersion"], "the resend changed nothing"
        # A later event, dispatched after the resend: once its run is seen, anything the resend
        # could have started would have been seen too.
        assert send(namespace, EVENT, '{"plan": "free"}', "u2").returncode == 0
        marker = event_run_name("free", EVENT, "u2")
        wait_until(f"{marker} seen", lambda: any(e.name == marker for e in runs.starts()), timeout=60, interval=0.2)
        started = [e for e in runs.starts() if e.obj["metadata"]["labels"].get(LABEL_EVENT_ID) == "u1"]

    assert sorted(e.obj["spec"]["taskRef"] for e in started) == ["pro", "welcome"], [e.name for e in started]
    assert all(e.obj["spec"]["payload"] == {"plan": "pro"} for e in started)
    u2 = dispatched(namespace, "u2")
    assert sorted(u2["status"]["runs"]) == sorted(event_run_name(t, EVENT, "u2") for t in ("welcome", "free")), \
        json.dumps(u2["status"])


AWAIT_PAYMENT = "kubetasks_examples.events:await_payment"


def test_a_run_waits_for_its_event_with_no_pod_and_one_sent_before_it_suspends_is_not_missed(namespace, operator):
    """``waiter`` waits (Waiting, no pod) until an order.paid event for its order is sent; one for
    another order does not wake it for good. ``early``'s event is sent while its pod is still on
    its way to the wait (its ``pause``): the lookback finds it."""
    apply(sdk_task("await-payment", AWAIT_PAYMENT, retry={"maxAttempts": 1}), namespace)
    with RunTimeline(namespace) as runs, Timeline(namespace) as jobs, PodTimeline(namespace) as pods:
        apply([taskrun("waiter", "await-payment", payload={"order": "o-1", "lookback": 0}),
               taskrun("early", "await-payment", payload={"order": "o-2", "pause": 3, "lookback": 30})], namespace)
        wait_until("early's pod runs", lambda: status(namespace, "early").get("phase") == "Running", timeout=120,
                   interval=0.2)
        assert send(namespace, "order.paid", '{"order": "o-2"}', "pay-o-2").returncode == 0
        assert not any(phase(e) == "Waiting" for e in runs.log() if e.name == "early"), "sent before it suspends"

        waiting = wait_until("waiter waits for its event", lambda: (s := status(namespace, "waiter")).get(
            "phase") == "Waiting" and s, timeout=180, interval=0.2)
        assert [e.split(":")[1] for e in waiting["waitingOn"]] == ["order.paid"], waiting
        assert send(namespace, "order.paid", '{"order": "o-9"}', "pay-o-9").returncode == 0  # not its order
        assert send(namespace, "order.paid", '{"order": "o-1", "amount": 5}', "pay-o-1").returncode == 0

        waiter, early = finished(namespace, "waiter"), finished(namespace, "early")
        uid = get("taskrun", "waiter", namespace)["metadata"]["uid"]
        wait_until("the watches saw waiter end, and its pods", lambda: any(
            e.uid == uid and phase(e) in FINISHED for e in runs.log()) and {
            p.owner for p in pods.log() if phase(p) in ("Succeeded", "Failed")} >= {
            j.uid for j in jobs.starts() if j.owner == uid}, timeout=30)
        broken = waits_broken("waiter", runs.log(), jobs.log(), pods.log())

    assert not broken, f"waiter ran while it waited: {broken}"
    assert waiter["phase"] == "Succeeded" and waiter["result"]["id"] == "pay-o-1", waiter
    assert waiter["result"]["data"] == {"order": "o-1", "amount": 5}
    assert [a["reason"] for a in waiter["attempts"]] == ["Waiting", "Succeeded"], waiter["attempts"]
    assert early["phase"] == "Succeeded" and early["result"]["id"] == "pay-o-2", early


def test_wait_any_ends_on_an_event_sent_while_a_token_is_still_open(namespace, operator):
    apply(sdk_task("paid-or-approved", "kubetasks_examples.events:paid_or_approved", retry={"maxAttempts": 1}),
          namespace)
    apply(taskrun("either", "paid-or-approved", payload={"order": "o-7", "lookback": 0}), namespace)
    wait_until("either waits", lambda: status(namespace, "either").get("phase") == "Waiting", timeout=180, interval=0.2)
    assert send(namespace, "order.paid", '{"order": "o-7"}', "pay-o-7").returncode == 0
    either = finished(namespace, "either")
    assert either["phase"] == "Succeeded" and either["result"] == {
        "kind": "event", "key": None, "index": 0, "id": "pay-o-7"}, either
