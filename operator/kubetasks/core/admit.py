"""Concurrency slots of a Task: who may start, who waits, whom to wake (pure, over run bodies)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kubetasks.api.taskrun import Phase

Body = dict[str, Any]
# Phases that hold one of a Task's concurrency slots.
HOLDS_SLOT = (Phase.RUNNING, Phase.RETRYING, Phase.SLEEPING)
WAITING = (Phase.PENDING, Phase.QUEUED)


def _status(body: Body) -> dict[str, Any]:
    return body.get("status") or {}


def holds_slot(body: Body | None) -> bool:
    return body is not None and _status(body).get("phase") in HOLDS_SLOT


def waits_for_slot(body: Body) -> bool:
    """Not started yet, and not finished or delayed: in the Task's FIFO queue."""
    status = _status(body)
    return not status.get("attempt") and status.get("phase", Phase.PENDING) in WAITING and not body.get(
        "metadata", {}).get("deletionTimestamp")


def fifo(body: Body) -> tuple[str, str]:
    """Queue order: creation time, then name (creationTimestamp has 1 s resolution)."""
    return str(body["metadata"].get("creationTimestamp", "")), body["metadata"]["name"]


def slots_free(concurrency: int | None, runs: Iterable[Body], name: str) -> int | None:
    """Slots left for run ``name`` once the runs queued ahead of it are served (None: no limit).
    Positive means it may start now."""
    if not concurrency:
        return None
    runs = list(runs)
    holding = sum(1 for b in runs if holds_slot(b))
    waiting = sorted((b for b in runs if waits_for_slot(b)), key=fifo)
    ahead = next((i for i, b in enumerate(waiting) if b["metadata"]["name"] == name), len(waiting))
    return concurrency - holding - ahead


def runs_to_wake(concurrency: int | None, runs: Iterable[Body]) -> list[str]:
    """The queued runs that may take a slot now, in FIFO order (none when there is no limit:
    such runs never wait for a slot)."""
    if not concurrency:
        return []
    runs = list(runs)
    free = concurrency - sum(1 for b in runs if holds_slot(b))
    waiting = sorted((b for b in runs if waits_for_slot(b)), key=fifo)
    return [b["metadata"]["name"] for b in waiting[:max(free, 0)]]


def frees_slot(old: Body | None, new: Body | None) -> bool:
    """Whether a change of a run may let a queued run of its Task start."""
    return holds_slot(old) and not holds_slot(new)
