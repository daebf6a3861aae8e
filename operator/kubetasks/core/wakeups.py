"""Which runs to look at again when something else changes (pure).

Level-based reconcilers still need to be woken: a run waiting for its Task when the Task
appears (a queued run when a slot frees is woken by controller.flow). Waking only those (not
every run of the Task on every status write) keeps a change O(runs of that Task that can act).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kubetasks.api.taskrun import Phase

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


def phase_of(body: Body | None) -> str | None:
    return None if body is None else (body.get("status") or {}).get("phase", Phase.PENDING.value)


def parent_to_wake(old: Body | None, new: Body | None) -> str | None:
    """A child run that finished (or went) wakes its parent, which may be waiting for it (core.waits)."""
    body = new or old
    parent = ((body or {}).get("spec") or {}).get("parentRun")
    if not parent or (old is not None and not unfinished(old)):
        return None
    return parent if new is None or not unfinished(new) else None


def run_to_wake_for_token(old: Body | None, new: Body | None) -> str | None:
    """A token (Waitpoint) made, completed, timed out or deleted wakes the run it was made for,
    which may be waiting for it (core.waits); its status written again the same way wakes none."""
    body = new or old
    run = ((body or {}).get("spec") or {}).get("run")
    phase = lambda b: ((b or {}).get("status") or {}).get("phase")  # noqa: E731
    if not run or (old is not None and new is not None and phase(old) == phase(new)):
        return None
    return str(run)
