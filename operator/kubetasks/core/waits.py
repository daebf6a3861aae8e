"""Durable waits for child runs (ctx.step.trigger_and_wait): which runs a waiting run waits for,
and whether they are done (pure).

The pod writes the wait into its checkpoint (a ``wait`` record naming the children, before it
triggers them) and ends its attempt; the run is then Waiting, with no pod and no slot. The
operator starts the next attempt once every child it may wait for has finished: a run that names
it as ``parentRun``. A name that is no such run is not waited for (the pod writes the record, so
nothing in it is trusted): a run of someone else's cannot hold this one back, nor keep it for ever.
A child the cache has not seen yet (its create is newer than the watch) is looked up first: see
:func:`unseen`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubetasks.api.taskrun import StepRecord
from kubetasks.core.wakeups import unfinished

Body = dict[str, Any]
SHOWN = 5  # children named in the condition's message


def waited_for(steps: Sequence[StepRecord] | None, attempt: int) -> list[str]:
    """The runs named by the waits that ``attempt`` wrote and no attempt has completed, in order."""
    names: dict[str, None] = {}
    for step in steps or ():
        if step.completed_at is None and step.waiting_on is not None and step.attempt == attempt:
            names.update(dict.fromkeys(step.waiting_on))
    return list(names)


def unseen(names: Sequence[str], runs: Mapping[str, Body | None]) -> list[str]:
    """The names the cache has no run for: read from the API server before deciding."""
    return [n for n in names if runs.get(n) is None]


def still_waiting(parent: str, names: Sequence[str], runs: Mapping[str, Body | None]) -> list[str]:
    """Of ``names``, the children of ``parent`` that have not finished. ``runs`` holds what is known
    of each (None: no such run, after a read): a run that is not the parent's child is no wait."""
    return [n for n in names if (body := runs.get(n)) is not None
            and (body.get("spec") or {}).get("parentRun") == parent and unfinished(body)]


def waiting_message(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
    return f"waiting for {len(names)} child run{'s' if len(names) != 1 else ''} to finish: {shown}"
