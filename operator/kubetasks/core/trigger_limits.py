"""How far a chain of triggers may go: its depth, and the children of one run.

A task that triggers itself (``allowTrigger: [itself]``) would otherwise run generation after
generation until stopped by hand. Two limits, decided before a child's first attempt:

- depth: a child is one deeper than its parent; a root (no ``parentRun``) is 0. The parent's
  Task's ``maxTriggerDepth``, capped by the operator's (chart) limit, is the deepest child it
  may have: one deeper fails ``TriggerDepthExceeded``.
- breadth: a run may have ``maxChildRuns`` children (of its Task's); a child past that fails
  ``TooManyChildRuns``. Siblings are ranked by creation, so the first ones keep running.

Depth is never the child's own claim: the operator records it in ``status.triggerDepth`` (which
a task pod cannot write) from the parent it reads. A parent without a record (written before
the field existed, or not yet reconciled) is walked up through its ancestors, at most ``bound``
steps: a longer chain, or a cycle of ``parentRun`` names, counts as too deep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kubetasks.api.task import Task
from kubetasks.core.trigger_policy import Refusal

TRIGGER_DEPTH_EXCEEDED = "TriggerDepthExceeded"
TOO_MANY_CHILD_RUNS = "TooManyChildRuns"
DEPTH_CAP = 10  # the operator's cap (KUBETASKS_MAX_TRIGGER_DEPTH, chart value maxTriggerDepth)


@dataclass(frozen=True)
class Link:
    """What the depth of one run is read from: its ``spec.parentRun`` and ``status.triggerDepth``."""

    name: str
    parent_run: str | None
    trigger_depth: int | None


def depth_of(run: Link, ancestor: Callable[[str], Link | None], bound: int) -> int:
    """The run's depth: its record, else one more than its parent's, up to ``bound``. A parent
    that no longer exists (deleted at its retention) counts as a root."""
    steps, seen = 0, {run.name}
    link: Link | None = run
    while link is not None and steps < bound:
        if not link.parent_run:
            return steps
        if link.trigger_depth is not None:
            return min(bound, steps + link.trigger_depth)
        if link.parent_run in seen:  # a cycle of names: no root to count from
            return bound
        seen.add(link.parent_run)
        link = ancestor(link.parent_run)
        steps += 1
    return steps if link is None else bound


def root_of(run: Link, ancestor: Callable[[str], Link | None], bound: int) -> str:
    """The name of the furthest ancestor that exists, at most ``bound`` steps up: the run whose
    chain this is, for the Event a person will look for."""
    seen, link = {run.name}, run
    for _ in range(bound):
        up = ancestor(link.parent_run) if link.parent_run and link.parent_run not in seen else None
        if up is None:
            break
        seen.add(up.name)
        link = up
    return link.name


def depth_limit(parent_task: Task, cap: int) -> int:
    return min(parent_task.spec.max_trigger_depth, cap)


def older_siblings(child: tuple[str, str], siblings: Iterable[tuple[str, str]]) -> int:
    """How many of ``siblings`` (creationTimestamp, name) were created before ``child``, the name
    breaking ties (RFC 3339 timestamps of one server sort as text)."""
    return sum(1 for s in siblings if s < child)


def refuse_runaway(child_depth: int, older: int, parent_name: str, parent_task: Task, cap: int) -> Refusal | None:
    """Why a child may not run although its parent's Task allows its Task: too deep, or one child
    too many of its parent. None when it may."""
    limit = depth_limit(parent_task, cap)
    if child_depth > limit:
        source = ("the operator's cap" if cap < parent_task.spec.max_trigger_depth
                  else f"maxTriggerDepth of Task {parent_task.name!r}")
        return Refusal(TRIGGER_DEPTH_EXCEEDED, f"it would be {child_depth} triggers deep (run {parent_name!r} "
                                               f"and its ancestors triggered it), past {limit} ({source})")
    budget = parent_task.spec.max_child_runs
    if older >= budget:
        return Refusal(TOO_MANY_CHILD_RUNS, f"its parent run {parent_name!r} already has {older} child runs, "
                                            f"its budget (maxChildRuns of Task {parent_task.name!r}) is {budget}")
    return None
