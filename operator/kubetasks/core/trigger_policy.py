"""Whether a child run may run: a run whose ``spec.parentRun`` names the run that triggered it.

RBAC cannot limit ``create`` on TaskRuns by ``taskRef``, so a run's Role grants ``create`` to any
Task's runs as soon as its Task allows triggering at all. The rest is decided here, by the
operator, before the child's first attempt: the parent run must exist and its Task must list the
child's Task in ``allowTrigger``.

The chart's ValidatingAdmissionPolicy makes this sound: a TaskRun created with a run's own
ServiceAccount token (``<run>-<uid8>-run``) is admitted only when its ``parentRun`` names that
very run, so a task pod cannot pass its child off as another run's, nor as no run's.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubetasks.api.task import Task
from kubetasks.api.taskrun import TaskRun

TRIGGER_NOT_ALLOWED = "TriggerNotAllowed"
# A run's Role grants this verb (no request uses it) on the run itself and on RUN_IDENTITY: the
# chart's admission policy asks the authorizer whether a ServiceAccount holds some run's Role
# (RUN_IDENTITY, but not NO_RUN: a holder of every name holds it on its own, not from a run), and
# whether it holds that of the run its TaskRun names as parentRun. Neither name can be a run's
# (TaskRun names are lowercase).
TRIGGER_VERB = "trigger"
RUN_IDENTITY = "Any-Run"
NO_RUN = "No-Run"
SHOWN = 10  # allowTrigger entries quoted in a message at most


@dataclass(frozen=True)
class Refusal:
    """Why a child run must not run: ``reason`` (CamelCase, for the Succeeded condition, the error
    type and the Event) and a message that names Tasks and runs, never a payload."""

    reason: str
    message: str


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > SHOWN else "")
    return f"[{shown}]"


def refuse_child_run(child: TaskRun, parent: TaskRun | None, parent_task: Task | None) -> Refusal | None:
    """None when ``child`` may run: it has no parent, or its parent's Task allows its Task.

    ``parent`` is the run named by ``child.spec.parentRun`` in the child's namespace (None when
    there is none), ``parent_task`` the Task named by the parent's ``taskRef`` (None when gone).
    Decided before the first attempt only: a Task's ``allowTrigger`` changed later does not stop
    a child that already runs."""
    parent_name = child.spec.parent_run
    if not parent_name:
        return None
    if parent is None:
        return Refusal(TRIGGER_NOT_ALLOWED, f"its parent run {parent_name!r} does not exist, so nothing allows "
                                            f"Task {child.spec.task_ref!r} to be triggered")
    if parent_task is None:
        return Refusal(TRIGGER_NOT_ALLOWED, f"the Task {parent.spec.task_ref!r} of its parent run {parent_name!r} "
                                            f"does not exist, so nothing allows Task {child.spec.task_ref!r} "
                                            "to be triggered")
    allowed = parent_task.spec.allow_trigger
    if child.spec.task_ref not in allowed:
        why = f"its allowTrigger is {_listed(allowed)}" if allowed else "it has no allowTrigger"
        return Refusal(TRIGGER_NOT_ALLOWED, f"Task {parent_task.name!r} (of parent run {parent_name!r}) may not "
                                            f"trigger Task {child.spec.task_ref!r}: {why}")
    return None
