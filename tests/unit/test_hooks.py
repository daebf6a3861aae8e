"""Task hooks (onSuccess, onFailure, onComplete): which fire for each outcome, what their runs are
told and named (core.hooks), and that the reconciler creates each at most once per run, through
repeated reconciles, a restart and a failed create (controller.hooks)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from kubetasks import kube
from kubetasks.api.task import Task
from kubetasks.api.taskrun import HookRecord, Phase, TaskRun
from kubetasks.controller.runs import AFTER_OUTCOME_RETRY
from kubetasks.core.hooks import (
    fired_by, hook_payload, hooks_due, is_hook_of, is_hook_run, render_hook_run, to_fire,
)
from kubetasks.core.naming import (
    ANNOTATION_HOOK_OF, ANNOTATION_HOOK_OF_UID, LABEL_HOOK, LABEL_INSTANCE, MAX_SUBDOMAIN, hook_run_name,
)
from tests.unit.test_reconcile_runs import NS, World, task, taskrun

UID = "0123abcd-0000-4000-8000-000000000000"
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
HOOKS = {"onSuccess": "celebrate", "onFailure": "page", "onComplete": "audit"}


def a_task(**spec: Any) -> Task:
    return Task.model_validate(task(**spec))


def a_run(phase: Phase = Phase.FAILED, name: str = "r", labels: dict[str, str] | None = None,
          **status: Any) -> TaskRun:
    body = taskrun(name)
    body["metadata"].update(uid=UID, labels=labels or {})
    body["status"] = {"phase": phase, "attempt": 2, **status}
    return TaskRun.model_validate(body)


# -- which hooks fire ------------------------------------------------------------------------

@pytest.mark.parametrize("phase", list(Phase))
def test_each_phase_fires_what_try_except_finally_would(phase):
    expected = {Phase.SUCCEEDED: ("onSuccess", "onComplete"), Phase.FAILED: ("onFailure", "onComplete"),
                Phase.TIMED_OUT: ("onFailure", "onComplete"), Phase.CANCELLED: ("onFailure", "onComplete")}
    # Not finished, or Duplicate, Superseded, Skipped (never ran: the run that ran instead fires): none.
    assert fired_by(phase) == expected.get(phase, ())


def test_a_run_fires_the_hooks_its_task_names_for_its_outcome():
    task_ = a_task(**HOOKS)
    due = hooks_due(a_run(Phase.FAILED), task_, Phase.FAILED)
    assert [(h.kind, h.task, h.fired) for h in due] == [("onFailure", "page", False), ("onComplete", "audit", False)]
    due = hooks_due(a_run(Phase.SUCCEEDED), task_, Phase.SUCCEEDED)
    assert [(h.kind, h.task) for h in due] == [("onSuccess", "celebrate"), ("onComplete", "audit")]
    assert hooks_due(a_run(Phase.SKIPPED), task_, Phase.SKIPPED) is None
    only = a_task(onComplete="audit")
    assert [h.kind for h in hooks_due(a_run(Phase.CANCELLED), only, Phase.CANCELLED)] == ["onComplete"]
    assert hooks_due(a_run(Phase.SUCCEEDED), a_task(onFailure="page"), Phase.SUCCEEDED) is None
    assert hooks_due(a_run(), a_task(), Phase.FAILED) is None  # a Task without hooks: no status.hooks
    assert hooks_due(a_run(), None, Phase.FAILED) is None  # no Task


def test_a_hook_run_fires_no_hooks_so_a_task_hooking_itself_cannot_loop():
    loop = a_task(name="t", onFailure="t", onComplete="t")
    hook_run = a_run(Phase.FAILED, labels={LABEL_HOOK: "onFailure"})
    assert is_hook_run(hook_run.model_dump(by_alias=True))
    assert hooks_due(hook_run, loop, Phase.FAILED) is None
    forged = hook_run.model_copy(deep=True)
    forged.status.hooks = [HookRecord(kind="onFailure", task="t", run=hook_run_name("r", UID, "onFailure"))]
    assert to_fire(forged, loop) == []  # nor when its status says otherwise


# -- names ---------------------------------------------------------------------------------------

def test_hook_run_names_are_deterministic_valid_and_distinct():
    names = {hook_run_name("nightly", UID, kind) for kind in HOOKS}
    assert names == {"nightly-0123abcd-on-success", "nightly-0123abcd-on-failure", "nightly-0123abcd-on-complete"}
    assert hook_run_name("nightly", UID, "onFailure") == hook_run_name("nightly", UID, "onFailure")
    # A run re-created under the same name is another run: its hooks fire again, under other names.
    assert hook_run_name("nightly", "ffff" + UID[4:], "onFailure") != hook_run_name("nightly", UID, "onFailure")
    for run in ("a" * 253, "a." * 120 + "b", "x" * 230 + "-" + "y" * 22):
        long = {hook_run_name(run, UID, kind) for kind in HOOKS}
        assert len(long) == 3
        assert all(len(n) <= MAX_SUBDOMAIN and SUBDOMAIN.match(n) for n in long), long
    assert hook_run_name("a" * 253, UID, "onFailure") != hook_run_name("a" * 252 + "b", UID, "onFailure")


# -- what the hook run is told ------------------------------------------------------------------

def succeeded(**status: Any) -> TaskRun:
    cond = {"type": "Succeeded", "status": "True", "reason": "Succeeded", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    return a_run(Phase.SUCCEEDED, conditions=[cond], **status)


def test_the_payload_names_the_run_its_outcome_and_result():
    assert hook_payload(succeeded(result={"rows": 3})) == {
        "run": "r", "task": "t", "phase": "Succeeded", "attempts": 2, "reason": "Succeeded", "result": {"rows": 3}}
    assert hook_payload(succeeded())["result"] is None  # a run with no result says so


def test_a_result_kept_by_reference_is_named_not_copied():
    ref = {"uri": "s3://b/results/ns/r", "size": 5_000_000, "sha256": "0" * 64}
    payload = hook_payload(succeeded(resultRef=ref))
    assert payload["resultRef"] == ref and "result" not in payload


def test_a_failure_carries_the_runs_error():
    cond = {"type": "Succeeded", "status": "False", "reason": "DeadlineExceeded",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}
    run = a_run(Phase.TIMED_OUT, conditions=[cond], error={"type": "DeadlineExceeded", "message": "ran over 5s"},
                result={"partial": True})
    assert hook_payload(run) == {"run": "r", "task": "t", "phase": "TimedOut", "attempts": 2,
                                 "reason": "DeadlineExceeded",
                                 "error": {"type": "DeadlineExceeded", "message": "ran over 5s"}}
    assert "error" not in hook_payload(a_run(Phase.CANCELLED))  # cancelled before anything failed


def test_the_hook_run_is_labelled_annotated_and_owned_by_no_one():
    run = a_run(Phase.FAILED, labels={LABEL_INSTANCE: "blue"})
    (record, _) = hooks_due(run, a_task(**HOOKS), Phase.FAILED)
    body = render_hook_run(run, record)
    meta = body["metadata"]
    assert meta["name"] == "r-0123abcd-on-failure" and meta["namespace"] == NS
    assert meta["labels"][LABEL_HOOK] == "onFailure" and meta["labels"][LABEL_INSTANCE] == "blue"
    assert meta["annotations"] == {ANNOTATION_HOOK_OF: "r", ANNOTATION_HOOK_OF_UID: UID}
    assert "ownerReferences" not in meta  # it outlives the run it reports on (its own Task's retention)
    assert body["spec"] == {"taskRef": "page", "payload": hook_payload(run)}  # no parentRun: not a pod's child
    TaskRun.model_validate(body)
    assert is_hook_of(body, UID, "onFailure")
    assert not is_hook_of(body, UID, "onComplete") and not is_hook_of(body, "other", "onFailure")
    assert not is_hook_of(taskrun(record.run), UID, "onFailure")  # a squatter


def test_only_recorded_unfired_hooks_the_task_still_names_fire():
    task_ = a_task(**HOOKS)
    run = a_run(Phase.FAILED)
    run.status.hooks = hooks_due(run, task_, Phase.FAILED)
    assert [h.kind for h in to_fire(run, task_)] == ["onFailure", "onComplete"]
    run.status.hooks[0].fired = True
    assert [h.kind for h in to_fire(run, task_)] == ["onComplete"]
    assert to_fire(run, a_task(onFailure="page")) == []  # onComplete removed from the Task since
    assert to_fire(run, None) == []  # the Task deleted
    # A status someone else wrote cannot make the operator run any Task, under any name.
    run.status.hooks = [HookRecord(kind="onComplete", task="anything", run=hook_run_name("r", UID, "onComplete")),
                        HookRecord(kind="onComplete", task="audit", run="someone-elses-run"),
                        HookRecord(kind="onSuccess", task="celebrate", run=hook_run_name("r", UID, "onSuccess"))]
    assert to_fire(run, task_) == []


def test_the_task_fields_are_checked_at_admission():
    from kubetasks.api.crd import render_crds

    spec = Task.model_validate(task(onFailure="page", onSuccess="a.b", onComplete="audit")).spec
    assert (spec.on_failure, spec.on_success, spec.on_complete) == ("page", "a.b", "audit")
    schema = render_crds()["kubetasks.io_tasks.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for field in HOOKS:
        node = schema["properties"]["spec"]["properties"][field]
        (rule,) = node["x-kubernetes-validations"]
        assert node["maxLength"] == 253 and f"{field} must name a Task" in rule["message"]


# -- the reconciler ------------------------------------------------------------------------------

def failed_world(**task_spec: Any) -> World:
    w = World(task(retry={"maxAttempts": 2, "minDelay": "0s"}, **task_spec), task("page"), task("audit"),
              taskrun("r"))
    w.settle("r")
    for attempt in (1, 2):
        w.api.finish_job(NS, f"r-{attempt}", ok=False)
        w.api.deliver(w.op.cache)
        w.settle("r")
    return w


def hook_runs(w: World) -> dict[str, dict[str, Any]]:
    return {k[2]: o for k, o in w.api.objects.items() if k[0] == "TaskRun" and LABEL_HOOK in o["metadata"].get("labels", {})}


def requests(w: World) -> list[str]:
    return [fn for fn, _ in w.api.calls if fn not in ("get_configmap",)]


def test_a_run_failing_after_its_retries_fires_on_failure_and_on_complete_once():
    w = failed_world(onFailure="page", onComplete="audit", onSuccess="celebrate")
    s = w.status("r")
    assert s["phase"] == "Failed" and s["attempt"] == 2
    uid = w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    assert s["hooks"] == [{"kind": "onFailure", "task": "page", "run": hook_run_name("r", uid, "onFailure"), "fired": True},
                          {"kind": "onComplete", "task": "audit", "run": hook_run_name("r", uid, "onComplete"),
                           "fired": True}]
    runs = hook_runs(w)
    assert sorted(runs) == sorted(h["run"] for h in s["hooks"])
    assert w.api.created("TaskRun") == [h["run"] for h in s["hooks"]]  # each created once
    failure = runs[hook_run_name("r", uid, "onFailure")]
    assert failure["spec"]["taskRef"] == "page" and failure["metadata"]["annotations"][ANNOTATION_HOOK_OF] == "r"
    assert failure["spec"]["payload"] == {"run": "r", "task": "t", "phase": "Failed", "attempts": 2, "reason": "Failed",
                                          "error": s["error"]}
    assert [e[2] for e in w.api.events if e[0] == "r"].count("HookFired") == 2

    # Reconciled again, and by a restarted operator: nothing more, not even a request.
    w.api.calls.clear()
    w.settle("r")
    w.restart()
    w.settle("r")
    assert w.api.created("TaskRun") == [h["run"] for h in s["hooks"]]
    assert not [c for c in requests(w) if c in ("create", "get", "patch_status")], w.api.calls


def test_no_hook_fires_before_the_retries_are_spent():
    w = World(task(retry={"maxAttempts": 2, "minDelay": "0s"}, onFailure="page"), task("page"), taskrun("r"))
    w.settle("r")
    w.api.finish_job(NS, "r-1", ok=False)
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] in ("Retrying", "Running") and not hook_runs(w)
    assert "hooks" not in w.status("r")


def test_a_success_fires_on_success_and_on_complete_with_its_result():
    w = World(task(onSuccess="page", onFailure="audit", onComplete="audit"), task("page"), task("audit"),
              taskrun("r"))
    w.settle("r")
    w.api.finish_job(NS, "r-1")
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Succeeded"
    runs = hook_runs(w)
    assert sorted(o["metadata"]["labels"][LABEL_HOOK] for o in runs.values()) == ["onComplete", "onSuccess"]
    payload = next(o for o in runs.values() if o["spec"]["taskRef"] == "page")["spec"]["payload"]
    assert payload["phase"] == "Succeeded" and "result" in payload and payload["attempts"] == 1


def test_a_hook_created_before_a_crash_is_not_created_again():
    """The hook run is created, then the operator dies before the status says so: the restarted
    operator's create is a 409 with its own hook run, which it records."""
    w = failed_world(onFailure="page")
    run = w.api.objects[("TaskRun", NS, "r")]
    run["status"]["hooks"][0]["fired"] = False  # as if the record were never written
    w.api.relist(w.op.cache)
    w.restart()
    w.settle("r")
    assert w.api.created("TaskRun") == [run["status"]["hooks"][0]["run"]]  # still the one
    assert w.status("r")["hooks"][0]["fired"] is True


def test_a_lost_status_write_after_the_create_is_tried_again_without_a_second_run():
    w = World(task(retry={"maxAttempts": 1}, onFailure="page"), task("page"), taskrun("r"))
    w.settle("r")
    w.api.finish_job(NS, "r-1", ok=False)
    w.api.deliver(w.op.cache)
    real = w.api.patch_status
    refused: list[str] = []

    def refuse_the_hook_record(plural, namespace, name, patch, *args):
        if set(patch) == {"hooks"} and not refused:
            refused.append(name)
            raise kube.ApiException(status=503, reason="Unavailable")
        return real(plural, namespace, name, patch, *args)

    w.api.patch_status = refuse_the_hook_record
    w.reconcile("r")  # finishes: Failed, its hooks recorded
    with pytest.raises(kube.ApiException):
        w.reconcile("r")  # the hook run is created; its record refused: the queue retries
    w.settle("r")
    assert refused == ["r"] and len(w.api.created("TaskRun")) == 1
    assert w.status("r")["phase"] == "Failed" and w.status("r")["hooks"][0]["fired"] is True


def test_an_error_creating_a_hook_run_leaves_the_outcome_as_it_is():
    w = World(task(retry={"maxAttempts": 1}, onFailure="page", onComplete="audit"), task("page"), taskrun("r"))
    w.settle("r")
    real = w.api.create_or_get

    def forbidden(obj):
        if obj["kind"] == "TaskRun":
            raise kube.ApiException(status=403, reason="Forbidden")
        return real(obj)

    w.api.create_or_get = forbidden
    w.api.finish_job(NS, "r-1", ok=False)
    w.api.deliver(w.op.cache)
    w.reconcile("r")
    before = dict(w.status("r"))
    assert w.reconcile("r") == AFTER_OUTCOME_RETRY  # looked at again later, not failed again
    assert w.reconcile("r") == AFTER_OUTCOME_RETRY
    s = w.status("r")
    assert s == before and s["phase"] == "Failed" and not any(h["fired"] for h in s["hooks"])
    warnings = [e for e in w.api.events if e[:3] == ("r", "Warning", "HookFailed")]
    assert len(warnings) == 1 and "403 Forbidden" in warnings[0][3] and "onFailure" in warnings[0][3]
    assert not hook_runs(w)
    w.api.create_or_get = real  # the operator is granted create: the hooks fire
    w.reconcile("r")
    assert len(hook_runs(w)) == 2 and all(h["fired"] for h in w.status("r")["hooks"])


def test_a_transient_error_is_left_to_the_queue_to_retry():
    w = World(task(retry={"maxAttempts": 1}, onFailure="page"), task("page"), taskrun("r"))
    w.settle("r")
    w.api.finish_job(NS, "r-1", ok=False)
    w.api.deliver(w.op.cache)
    w.reconcile("r")
    real = w.api.create_or_get
    w.api.create_or_get = lambda obj: (_ for _ in ()).throw(kube.ApiException(status=500, reason="Internal"))
    with pytest.raises(kube.ApiException):
        w.reconcile("r")
    assert not [e for e in w.api.events if e[2] == "HookFailed"]
    w.api.create_or_get = real
    w.reconcile("r")
    assert len(hook_runs(w)) == 1


def test_a_task_run_holding_the_hook_runs_name_is_not_taken_for_it():
    w = World(task(retry={"maxAttempts": 1}, onFailure="page"), task("page"), taskrun("r"))
    uid = w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    w.api.add(taskrun(hook_run_name("r", uid, "onFailure"), "page"))  # someone's run, under the name
    w.api.deliver(w.op.cache)
    w.settle("r")
    w.api.finish_job(NS, "r-1", ok=False)
    w.api.deliver(w.op.cache)
    w.reconcile("r")
    assert w.reconcile("r") == AFTER_OUTCOME_RETRY
    (warning,) = [e for e in w.api.events if e[2] == "HookFailed"]
    assert "not this run's onFailure hook" in warning[3]
    assert w.status("r")["hooks"][0]["fired"] is False


def test_a_task_that_hooks_itself_runs_its_hook_once_and_stops():
    w = World(task(retry={"maxAttempts": 1}, onFailure="t", onComplete="t"), taskrun("r"))
    w.settle("r")
    w.api.finish_job(NS, "r-1", ok=False)
    w.api.deliver(w.op.cache)
    w.settle("r")
    hooks = sorted(hook_runs(w))
    assert len(hooks) == 2
    for name in hooks:  # the hook runs fail too
        w.settle(name)
        job = next(j["metadata"]["name"] for j in w.api.jobs() if j["metadata"]["labels"]["kubetasks.io/run"] == name)
        w.api.finish_job(NS, job, ok=False)
        w.api.deliver(w.op.cache)
        w.settle(name)
        assert w.status(name)["phase"] == "Failed" and "hooks" not in w.status(name)
    assert sorted(hook_runs(w)) == hooks  # no hook of a hook


def test_a_hook_added_to_the_task_after_a_run_finished_fires_nothing_for_it():
    w = World(task(retry={"maxAttempts": 1}), task("page"), taskrun("r"))
    w.settle("r")
    w.api.finish_job(NS, "r-1", ok=False)
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Failed"
    w.api.update("Task", NS, "t", spec={"onFailure": "page"})
    w.api.deliver(w.op.cache)
    w.settle("r")
    w.restart()
    w.settle("r")
    assert not hook_runs(w) and "hooks" not in w.status("r")


def test_a_run_failed_by_an_error_fires_its_failure_hooks():
    w = World(task(onFailure="page"), task("page"), taskrun("r"))
    asyncio.run(w.op.runs._fail((NS, "r"), RuntimeError("boom")))
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Failed"
    (hook,) = hook_runs(w).values()
    assert hook["spec"]["payload"]["error"]["type"] == "ReconcileError"


def test_a_run_past_its_retention_fires_its_hooks_before_it_is_deleted():
    w = World(task(retry={"maxAttempts": 1}, onFailure="page", retention={"ttlSecondsAfterFinished": 1}),
              task("page"), taskrun("r"))
    w.settle("r")
    w.api.finish_job(NS, "r-1", ok=False)
    w.api.deliver(w.op.cache)
    w.reconcile("r")  # finishes; its hooks recorded, not created yet
    run = w.api.objects[("TaskRun", NS, "r")]
    run["status"]["completionTime"] = "2020-01-01T00:00:00Z"  # long past its retention
    w.api.relist(w.op.cache)
    w.settle("r")
    assert ("TaskRun", NS, "r") not in w.api.objects and len(hook_runs(w)) == 1
