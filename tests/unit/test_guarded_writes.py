"""Writes that cannot land on another object, and outcomes that are never rewritten.

Every status write names the run's (or Task's) UID and the resourceVersion it was decided from;
the fake API server checks both, as the API server does. A run deleted and re-created under its
name while a reconcile of the old one is in flight, or changed meanwhile, refuses the old
decision (409): it is read and decided again. A finished run keeps its outcome whatever fails
after it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubetasks.controller import metrics
from kubetasks.controller.queue import Requeue
from kubetasks.core.dedup import LABEL_CLAIM
from tests.unit.test_reconcile_runs import NS, World, finished, task, taskrun


def uid(w: World, name: str) -> str:
    return str(w.api.objects[("TaskRun", NS, name)]["metadata"]["uid"])


def while_writing(w: World, change: Any) -> None:
    """The next status write of a run is held in flight (a slow API server, a webhook) while
    ``change`` happens to the cluster; then it reaches the server."""
    real = w.api.patch_status

    def held(*args: Any) -> Any:
        w.api.patch_status = real  # type: ignore[method-assign]
        change()
        return real(*args)

    w.api.patch_status = held  # type: ignore[method-assign]


def recreate(w: World, name: str, **spec: Any) -> None:
    """`kubectl replace --force`: the run is deleted (the garbage collector takes its Jobs) and a
    new one is created under its name."""
    old = uid(w, name)
    w.api.remove(("TaskRun", NS, name))
    for job in [j for j in w.api.jobs() if j["metadata"]["ownerReferences"][0]["uid"] == old]:
        w.api.remove(("Job", NS, job["metadata"]["name"]))
    w.api.add(taskrun(name, **spec))


def test_an_outcome_decided_for_a_deleted_run_never_lands_on_the_run_recreated_under_its_name():
    w = World(task(retry={"maxAttempts": 1}), taskrun("r"))
    w.settle("r")
    old = uid(w, "r")
    w.api.finish_job(NS, "r-1")
    w.api.deliver(w.op.cache)
    while_writing(w, lambda: recreate(w, "r"))
    with pytest.raises(Requeue):  # the old run's Succeeded is refused: it is decided again
        w.reconcile("r", deliver=False)
    assert w.api.conflicts == 1 and w.status("r") == {}  # nothing of the old run's status
    new = uid(w, "r")
    assert new != old
    w.api.deliver(w.op.cache)
    w.settle("r")
    s = w.status("r")
    assert s["phase"] == "Running" and s["attempt"] == 1 and "completionTime" not in s
    [job] = w.api.jobs()
    assert job["metadata"]["ownerReferences"][0]["uid"] == new and job["metadata"]["name"] == "r-1"
    w.api.finish_job(NS, "r-1", ok=False)  # its own outcome, not the old run's
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Failed"


def test_a_start_decided_for_a_deleted_run_never_lands_on_the_recreated_one():
    # The old run's Job is created, then its Running is refused: the new run starts its own.
    w = World(task(), taskrun("r", payload={"v": "old"}))
    while_writing(w, lambda: recreate(w, "r", payload={"v": "new"}))
    with pytest.raises(Requeue):
        w.reconcile("r", deliver=False)
    assert w.status("r") == {} and w.api.conflicts == 1
    w.api.deliver(w.op.cache)
    w.settle("r")
    new = uid(w, "r")
    s = w.status("r")
    assert s["phase"] == "Running" and [a["jobName"] for a in s["attempts"]] == ["r-1"]
    [job] = w.api.jobs()
    assert job["metadata"]["ownerReferences"][0]["uid"] == new


def test_a_run_changed_while_its_write_was_in_flight_is_read_and_decided_again():
    # Cancelled while the write that starts it is held: the start is refused, the cancel wins.
    w = World(task(), taskrun("r"))
    while_writing(w, lambda: w.api.update("TaskRun", NS, "r", spec={"cancel": True}))
    with pytest.raises(Requeue) as refused:
        w.reconcile("r", deliver=False)
    assert refused.value.delay == 0  # the same run, changed: decided again at once, on what was read
    assert w.op.cache.runs.get((NS, "r"))["spec"]["cancel"] is True  # the read is in the store
    w.reconcile("r", deliver=False)
    s = w.status("r")
    assert s["phase"] == "Cancelled" and not w.api.jobs()


def test_a_decision_on_a_state_the_watch_has_since_replaced_is_not_carried_out():
    w = World(task(), taskrun("r"))
    runs = w.op.cache.runs
    real = w.op.runs._observe

    async def observe_then_change(*args: Any) -> Any:
        found = await real(*args)
        w.api.update("TaskRun", NS, "r", spec={"cancel": True})
        w.api.deliver(w.op.cache)  # the watch shows the cancel while the run is being decided
        return found

    w.op.runs._observe = observe_then_change  # type: ignore[method-assign]
    with pytest.raises(Requeue):
        w.reconcile("r", deliver=False)
    assert w.api.created() == [] and w.api.conflicts == 0  # no Job, not even a refused write
    w.op.runs._observe = real  # type: ignore[method-assign]
    w.reconcile("r")
    assert runs.get((NS, "r"))["status"]["phase"] == "Cancelled"


def test_a_finished_run_that_meets_a_403_on_cleanup_stays_succeeded_with_an_event():
    w = World(task(retention={"ttlSecondsAfterFinished": 60}), finished("r", 7200))
    before = w.api.objects[("TaskRun", NS, "r")]["status"].copy()

    def forbidden(*args: Any) -> None:
        raise ApiException(status=403, reason="Forbidden")

    w.api.delete = forbidden  # type: ignore[method-assign]
    counter = metrics.FINISHED_RUN_ERRORS.labels("t")
    errors = counter._value.get()
    again = w.reconcile("r")
    assert again and again > 0  # looked at again later, not in a hot loop
    assert w.status("r") == before and not any(fn == "patch_status" for fn, _ in w.api.calls)
    assert [e[:3] for e in w.api.events] == [("r", "Warning", "CleanupFailed")]
    assert "Forbidden" in w.api.events[0][3] and counter._value.get() == errors + 1
    w.reconcile("r")  # the same error again: counted, not another Event
    assert len(w.api.events) == 1 and counter._value.get() == errors + 2
    assert w.status("r")["phase"] == "Succeeded"


def test_a_webhook_refusing_the_reaping_of_a_finished_runs_job_leaves_its_outcome():
    w = World(task(), taskrun("r"))
    w.settle("r")
    # Cancelled as a cancel that raced a start leaves it, its Job still running (by an operator that
    # went before: this one believes it, having not written otherwise; core.status_trust).
    w.api.update("TaskRun", NS, "r", status={"phase": "Cancelled"})
    w.restart()

    def denied(*args: Any) -> None:
        raise ApiException(status=400, reason="admission webhook \"deny.example.com\" denied the request")

    w.api.delete_jobs = denied  # type: ignore[method-assign]
    w.reconcile("r")
    assert w.status("r")["phase"] == "Cancelled" and "ReconcileError" not in str(w.status("r"))
    assert [e[1:3] for e in w.api.events] == [("Warning", "CleanupFailed")]


def test_an_error_while_a_run_is_unfinished_still_fails_it():
    w = World(task(), taskrun("r", delay="99999999h"))
    w.reconcile("r")
    assert w.status("r")["phase"] == "Failed"  # the failure is its outcome: not rewritten later
    w.reconcile("r")
    assert w.status("r")["conditions"][0]["reason"] == "ReconcileError" and len(w.api.events) == 1


SCHEMA = {"type": "object", "required": ["to"], "properties": {"to": {"type": "string"}}}


def test_a_run_refused_for_its_payload_does_not_hold_its_idempotency_key():
    w = World(task(payloadSchema=SCHEMA), taskrun("bad", idempotencyKey="k", payload={"to": 1}))
    w.settle("bad")
    assert w.status("bad")["error"]["type"] == "InvalidPayload"
    assert not [o for k, o in w.api.objects.items() if k[0] == "ConfigMap"
                and (o["metadata"].get("labels") or {}).get(LABEL_CLAIM)]
    w.api.add(taskrun("good", idempotencyKey="k", payload={"to": "a@b.c"}))
    w.api.deliver(w.op.cache)
    w.settle("good")
    assert w.status("good")["phase"] == "Running" and "good-1" in w.api.created()


def test_a_valid_run_still_claims_its_key_and_a_second_is_a_duplicate():
    w = World(task(payloadSchema=SCHEMA), taskrun("a", idempotencyKey="k", payload={"to": "x"}),
              taskrun("b", idempotencyKey="k", payload={"to": "y"}))
    w.settle("a")
    w.settle("b")
    assert w.status("a")["phase"] == "Running" and w.status("b")["phase"] == "Duplicate"
    assert w.status("b")["duplicateOf"] == "a" and w.api.created() == ["a-1"]


def test_a_successful_single_attempt_run_costs_five_requests():
    # Its Job, Running, its pod's list (its result is its termination message), Succeeded and one
    # Event: no label patch (runs are selected by spec.taskRef). The kept log reuses the pod list.
    w = World(task(), taskrun("r"))
    w.op.runs.logs.keep_bytes = 0  # keeping logs is counted apart (README)
    w.settle("r")
    w.api.finish_job(NS, "r-1")
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Succeeded"
    assert [fn for fn, _ in w.api.calls] == ["create", "patch_status", "list_pods", "patch_status"]
    assert [e[2] for e in w.api.events] == ["Succeeded"]
    assert "kubetasks.io/task" not in (w.api.objects[("TaskRun", NS, "r")]["metadata"].get("labels") or {})


def test_a_task_recreated_while_its_status_write_is_in_flight_is_not_written():
    w = World(task(), taskrun("r"))
    real = w.api.patch_status

    def recreate_task(plural: str, *args: Any) -> Any:
        if plural == "tasks":
            w.api.patch_status = real  # type: ignore[method-assign]
            w.api.remove(("Task", NS, "t"))
            w.api.add(task(image="other:2"))
        return real(plural, *args)

    w.api.patch_status = recreate_task  # type: ignore[method-assign]
    with pytest.raises(Requeue):
        asyncio.run(w.op.tasks.reconcile((NS, "t")))
    assert w.api.conflicts == 1 and "status" not in w.api.objects[("Task", NS, "t")]


def test_replace_cancels_the_run_it_saw_never_one_recreated_under_its_name():
    from datetime import timedelta

    from tests.unit.test_cron_names import NOW, PLAIN, Cron

    c = Cron(concurrencyPolicy="Replace")
    status = c.tick()
    assert c.api.created("TaskRun") == [PLAIN]
    seen = c.run(PLAIN)
    c.api.remove(("TaskRun", NS, PLAIN))  # re-created by someone else; the watch has not said so yet
    c.api.add({**taskrun(PLAIN, "report"), "metadata": {"name": PLAIN, "namespace": NS}})
    with pytest.raises(Requeue):  # the Task is decided again once the watch shows the new run
        asyncio.run(c.scheduler(c.task, status, NOW + timedelta(minutes=1)))
    assert c.api.conflicts == 1 and "cancel" not in c.run(PLAIN)["spec"]
    assert c.run(PLAIN)["metadata"]["uid"] != seen["metadata"]["uid"]
