"""Task hooks (onSuccess, onFailure, onComplete): which fire for each outcome, what their runs are
told and named (core.hooks)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kubetasks.api.task import Task
from kubetasks.api.taskrun import HookRecord, Phase, TaskRun
from kubetasks.core.hooks import (
    fired_by, hook_payload, hooks_due, is_hook_of, is_hook_run, render_hook_run, to_fire,
)
from kubetasks.core.naming import (
    ANNOTATION_HOOK_OF, ANNOTATION_HOOK_OF_UID, LABEL_HOOK, LABEL_INSTANCE, MAX_SUBDOMAIN, hook_run_name,
)
from tests.unit.test_reconcile_runs import NS, task, taskrun

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
