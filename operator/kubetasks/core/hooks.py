"""Task hooks: the runs a finished run's Task names in onSuccess, onFailure and onComplete (pure).

- Which fire is decided by the phase the run ends in, once, as it finishes: the records go into
  the same status write as the outcome (``status.hooks``), so a Task edited later (a hook added or
  removed) changes nothing for runs that had already finished, and adding a hook to a Task with a
  long history fires nothing for the old runs.
  - Succeeded: onSuccess, onComplete.
  - Failed (retries spent, or a failure that never retries), TimedOut, Cancelled (whether it had
    started or not: ``spec.cancel``, overlap's cancelNew and cancelRunning): onFailure, onComplete.
  - Duplicate, Superseded, Skipped: none. Those runs never ran; the run that ran instead fires.
- A hook fires only while the Task still names it: one removed from the Task (or the Task deleted)
  before its run was created does not fire, and a record in the status that the Task does not
  name (not the operator's write) never does.
- Each hook run has a deterministic name (:func:`kubetasks.core.naming.hook_run_name`: the run's
  name, its UID, the hook), so creating it again is a 409 and a hook fires at most once per
  run, whatever crashes between the create and the record that it fired. ``fired`` in the record
  saves the requests once it is written, and keeps a hook run that its own retention deleted
  from being made again while the finished run is kept.
- A hook run fires no hooks of its own (its label :data:`LABEL_HOOK` says what it is): a Task whose
  onFailure names itself, or two Tasks that name each other, cannot make a chain without end.
- No owner reference to the finished run, and no ``spec.parentRun``: the hook run outlives the run
  it reports on (a run deleted at its retention, or by historyLimit, would take a hook run that
  may still be running with it), its own Task's retention governs it, and it is not a child a
  pod triggered (``allowTrigger`` is for those; a hook is declared by the Task itself).
"""

from __future__ import annotations

from typing import Any

from kubetasks.api.common import API_VERSION
from kubetasks.api.task import Task
from kubetasks.api.taskrun import HookKind, HookRecord, Phase, TaskRun
from kubetasks.core.conditions import get_condition
from kubetasks.core.naming import (
    ANNOTATION_HOOK_OF, ANNOTATION_HOOK_OF_UID, LABEL_HOOK, LABEL_INSTANCE, LABEL_TASK, hook_run_name, instance_of,
    label_value,
)

Body = dict[str, Any]
HOOK_KINDS: tuple[HookKind, ...] = ("onSuccess", "onFailure", "onComplete")
FAILURE = (Phase.FAILED, Phase.TIMED_OUT, Phase.CANCELLED)


def fired_by(phase: Phase) -> tuple[HookKind, ...]:
    """The hooks an outcome fires: try, except, finally (never for a run that did not run)."""
    if phase == Phase.SUCCEEDED:
        return ("onSuccess", "onComplete")
    if phase in FAILURE:
        return ("onFailure", "onComplete")
    return ()


def is_hook_run(body: Body) -> bool:
    return bool(((body.get("metadata") or {}).get("labels") or {}).get(LABEL_HOOK))


def hook_task(task: Task, kind: HookKind) -> str | None:
    return {"onSuccess": task.spec.on_success, "onFailure": task.spec.on_failure,
            "onComplete": task.spec.on_complete}[kind]


def hooks_due(run: TaskRun, task: Task | None, phase: Phase) -> list[HookRecord] | None:
    """The hooks a run that finishes now in ``phase`` fires, none fired yet; None when it fires none
    (no Task, a hook run itself, a phase that fires nothing, or a Task with no hooks)."""
    if task is None or is_hook_run({"metadata": run.metadata}):
        return None
    uid = str(run.metadata.get("uid") or "")
    due = [HookRecord(kind=kind, task=name, run=hook_run_name(run.name, uid, kind))
           for kind in fired_by(phase) if (name := hook_task(task, kind))]
    return due or None


def to_fire(run: TaskRun, task: Task | None) -> list[HookRecord]:
    """The hooks of a finished run still to create: recorded as it finished, not fired yet, and
    still what its Task names. A record its outcome does not fire, naming another run or a Task the
    Task does not name (a status someone other than the operator wrote, or a hook removed from the
    Task meanwhile) never fires: the status cannot make the operator create runs of any Task."""
    if task is None or is_hook_run({"metadata": run.metadata}):
        return []
    uid = str(run.metadata.get("uid") or "")
    return [h for h in run.status.hooks or [] if not h.fired and h.kind in fired_by(run.status.phase)
            and h.task == hook_task(task, h.kind) and h.run == hook_run_name(run.name, uid, h.kind)]


def hook_payload(run: TaskRun) -> Body:
    """What a hook run is told of the finished run: small (it goes into the hook run's spec). A
    result kept by reference is named (``resultRef``), never copied; ``reason`` is the run's
    Succeeded condition's (OverlapCancelled, DeadlineExceeded, TaskNotFound...)."""
    status = run.status
    payload: Body = {"run": run.name, "task": run.spec.task_ref, "phase": str(status.phase),
                     "attempts": status.attempt}
    condition = get_condition(status.conditions, "Succeeded")
    if condition is not None:
        payload["reason"] = condition.reason
    if status.phase == Phase.SUCCEEDED:
        if status.result_ref is not None:
            payload["resultRef"] = status.result_ref.to_api()
        else:
            payload["result"] = status.result
    elif status.error is not None:
        payload["error"] = status.error.to_api()
    return payload


def render_hook_run(run: TaskRun, record: HookRecord) -> Body:
    """The TaskRun of a hook: the hook's Task, with the finished run's :func:`hook_payload`, for
    the same operator instance; labelled with the hook and annotated with the run it is of."""
    labels = {LABEL_TASK: label_value(record.task), LABEL_HOOK: record.kind}
    instance = instance_of({"metadata": run.metadata})
    if instance:
        labels[LABEL_INSTANCE] = instance
    return {"apiVersion": API_VERSION, "kind": "TaskRun",
            "metadata": {"name": record.run, "namespace": run.namespace, "labels": labels,
                         "annotations": {ANNOTATION_HOOK_OF: run.name,
                                         ANNOTATION_HOOK_OF_UID: str(run.metadata.get("uid") or "")}},
            "spec": {"taskRef": record.task, "payload": hook_payload(run)}}


def is_hook_of(existing: Body, uid: str, kind: HookKind) -> bool:
    """Whether ``existing``, which holds a hook run's name, is that hook run (of the run ``uid``),
    not a TaskRun someone else made under the name."""
    meta = existing.get("metadata") or {}
    return ((meta.get("annotations") or {}).get(ANNOTATION_HOOK_OF_UID) == uid
            and (meta.get("labels") or {}).get(LABEL_HOOK) == kind)
