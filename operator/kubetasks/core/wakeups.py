"""Which runs to look at again when something else changes (pure).

Level-based reconcilers still need to be woken: a queued run when a slot frees, a run waiting
for its Task when the Task appears. Waking only those (not every run of the Task on every
status write) keeps a change O(runs of that Task that can act), not O(all runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kubetasks.api.taskrun import Phase
from kubetasks.core.admit import frees_slot, holds_slot, runs_to_wake, waits_for_slot

Body = dict[str, Any]


def _generation(body: Body | None) -> tuple[Any, Any]:
    meta = (body or {}).get("metadata") or {}
    return meta.get("uid"), meta.get("generation")


def unfinished(body: Body) -> bool:
    try:
        return not Phase((body.get("status") or {}).get("phase") or Phase.PENDING).finished
    except ValueError:
        return True


Runs = Callable[[], Iterable[Body]]  # the runs of the Task, asked for only when needed


def task_spec_changed(old: Body | None, new: Body | None) -> bool:
    """A Task created, deleted, re-created or with a new spec; not a write of its status alone."""
    return _generation(old) != _generation(new)


def after_task_change(old: Body | None, new: Body | None, runs: Runs) -> list[str]:
    """A Task created, deleted, re-created or with a new spec: its unfinished runs may act
    differently. Its own status writes wake nobody."""
    if not task_spec_changed(old, new):
        return []
    return [r["metadata"]["name"] for r in runs() if unfinished(r)]


def after_run_change(old: Body | None, new: Body | None, concurrency: int | None, runs: Runs) -> list[str]:
    """A run left a concurrency slot (finished, paused out, or deleted), or left the queue without
    taking one: the queued runs that may take the free slots, first come first served."""
    if not concurrency or not (frees_slot(old, new) or leaves_queue(old, new)):
        return []
    return runs_to_wake(concurrency, runs())


def leaves_queue(old: Body | None, new: Body | None) -> bool:
    """A queued run that went away before it took a slot (deleted, cancelled, delayed or failed
    while it waited). It may have been woken for a free slot: the run behind it gets that slot
    now, not at the next resync."""
    return old is not None and waits_for_slot(old) and (new is None or not (waits_for_slot(new) or holds_slot(new)))


def phase_of(body: Body | None) -> str | None:
    return None if body is None else (body.get("status") or {}).get("phase", Phase.PENDING.value)
