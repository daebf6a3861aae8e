"""Durable waits for child runs (ctx.step.trigger_and_wait): which runs a waiting run waits for,
and whether they are done (pure).

The pod writes the wait into its checkpoint (a ``wait`` record naming the children, before it
triggers them) and ends its attempt; the run is then Waiting, with no pod and no slot. The
operator starts the next attempt once every child it may wait for has finished: a run that names
it as ``parentRun``. A name that is no such run is not waited for (the pod writes the record, so
nothing in it is trusted): a run of someone else's cannot hold this one back, nor keep it for ever.
A child the cache has not seen yet (its create is newer than the watch) is looked up first: see
:func:`unseen`.

A wait may name tokens too (``ctx.step.wait_for_token``): ``waitpoint:<name>``, a Waitpoint the
pod made for this run (api.waitpoint). It waits while that Waitpoint is Waiting and its
``expiresAt`` has not passed; once it is Completed or TimedOut (the operator times it out), the
operator writes its outcome (:func:`token_outcome`) as a record of its own in the run's
checkpoints (protocol.TOKEN), as the pod may not read Waitpoints, and the next attempt reads it.
A name that is no Waitpoint of this run (missing, or made for another) ends the wait with a
NotFound outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubetasks.api.taskrun import StepRecord
from kubetasks.api.times import format_time, parse_time
from kubetasks.api.waitpoint import FINISHED, TOKEN_DATA_LIMIT
from kubetasks.protocol import EVENT, TOKEN, json_size
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


@dataclass(frozen=True)
class WaitState:
    waiting_on: list[str]  # what the run still waits for: [] when its wait is over
    cancel: list[str]  # children of a wait_any that is over, not finished: they are cancelled
    look_again: datetime | None  # a wait_any's timeout


def wait_state(steps: Sequence[StepRecord] | None, attempt: int, pending: Sequence[str], now: datetime) -> WaitState:
    """Of the waits ``attempt`` wrote and nobody completed, what the run still waits for, given the
    entries ``pending`` (children not finished, tokens not completed). A wait for all
    (trigger_and_wait, wait_for_token) waits while any of its entries is pending; a wait_any
    (``anyOf``) is over once one of its entries is not, or at its ``timeoutAt``, and the children
    it still waits for are cancelled then (its tokens are left: nobody waits for them)."""
    left, waiting, cancel, wake = set(pending), [], [], None
    for step in steps or ():
        if step.completed_at is not None or step.waiting_on is None or step.attempt != attempt:
            continue
        still = [n for n in step.waiting_on if n in left]
        if not step.any_of:
            waiting += still
        elif len(still) < len(step.waiting_on) or (step.timeout_at is not None and step.timeout_at <= now):
            cancel += children_in(still)
        else:
            waiting += still
            wake = step.timeout_at if wake is None or (step.timeout_at and step.timeout_at < wake) else wake
    return WaitState(list(dict.fromkeys(waiting)), cancel, wake)


def unseen(names: Sequence[str], runs: Mapping[str, Body | None]) -> list[str]:
    """The names the cache has no run for: read from the API server before deciding."""
    return [n for n in names if runs.get(n) is None]


def still_waiting(parent: str, names: Sequence[str], runs: Mapping[str, Body | None]) -> list[str]:
    """Of ``names``, the children of ``parent`` that have not finished. ``runs`` holds what is known
    of each (None: no such run, after a read): a run that is not the parent's child is no wait."""
    return [n for n in names if (body := runs.get(n)) is not None
            and (body.get("spec") or {}).get("parentRun") == parent and unfinished(body)]


def tokens_in(names: Sequence[str]) -> list[str]:
    """The Waitpoints a wait names (without the prefix), in order."""
    return [n[len(TOKEN):] for n in names if n.startswith(TOKEN)]


def children_in(names: Sequence[str]) -> list[str]:
    return [n for n in names if not n.startswith((TOKEN, EVENT))]


def events_in(names: Sequence[str]) -> list[str]:
    """The event waits' entries (core.event_waits.entry) a wait names."""
    return [n for n in names if n.startswith(EVENT)]


def ours(waitpoint: Body | None, run: str, uid: str) -> bool:
    """A Waitpoint made for the run ``uid`` named ``run``: any other (a run re-created under the
    name, another run's pod squatting the name) is not waited for."""
    spec = (waitpoint or {}).get("spec") or {}
    return waitpoint is not None and spec.get("run") == run and spec.get("runUid") == uid


COMPLETION_TRIES = 5  # completions lost to a racing writer (409) before giving up


def completed_token(waitpoint: Body, data: Any, now: datetime) -> Body | None:
    """The Waitpoint with its completion, to write as read (with its resourceVersion: of two racing
    completions one lands); None when it has finished already (completed or timed out): the first
    outcome stands."""
    status = waitpoint.get("status") or {}
    if status.get("phase") in FINISHED:
        return None
    return {**waitpoint, "status": {**status, "phase": "Completed", "data": data, "completedAt": format_time(now)}}


def nothing_changed(waitpoint: Body) -> str:
    """What a completion of a token that has finished already says (:func:`completed_token`)."""
    status = waitpoint.get("status") or {}
    return f"already {str(status.get('phase')).lower()} at {status.get('completedAt')}: nothing changed"


def token_phase(waitpoint: Body | None) -> str:
    return str(((waitpoint or {}).get("status") or {}).get("phase") or "Waiting")


def expiry(waitpoint: Body | None) -> datetime | None:
    try:
        return parse_time(((waitpoint or {}).get("spec") or {}).get("expiresAt"))
    except ValueError:  # the schema says date-time: an older object's, never trusted to fail us
        return None


def tokens_waiting(run: str, uid: str, names: Sequence[str], waitpoints: Mapping[str, Body | None]) -> list[str]:
    """Of the tokens ``names``, those still to come: a Waitpoint of this run, neither Completed
    nor TimedOut (one past its expiry is timed out by the operator first, see :func:`expired`)."""
    return [n for n in names if ours(waitpoints.get(n), run, uid) and token_phase(waitpoints.get(n)) not in FINISHED]


def expired(names: Sequence[str], waitpoints: Mapping[str, Body | None], now: datetime) -> list[str]:
    """The waiting tokens whose time is up: the operator writes them TimedOut."""
    return [n for n in names if token_phase(waitpoints.get(n)) not in FINISHED
            and (at := expiry(waitpoints.get(n))) is not None and at <= now]


def next_expiry(names: Sequence[str], waitpoints: Mapping[str, Body | None]) -> datetime | None:
    """When the first of the waiting tokens times out: the run is looked at again then."""
    times = [at for n in names if (at := expiry(waitpoints.get(n))) is not None]
    return min(times, default=None)


def token_outcome(name: str, waitpoint: Body | None, run: str, uid: str) -> dict[str, Any]:
    """What the run's next attempt gets for the token ``name``: its phase, and the completion's
    data (at most TOKEN_DATA_LIMIT bytes of JSON: more is refused, not copied into the record)."""
    if not ours(waitpoint, run, uid):
        return {"token": name, "phase": "NotFound",
                "message": f"Waitpoint {name} is gone, or was not made for this run"}
    status = (waitpoint or {}).get("status") or {}
    outcome: dict[str, Any] = {"token": name, "phase": token_phase(waitpoint)}
    if status.get("message"):
        outcome["message"] = str(status["message"])
    if "data" in status:
        size = json_size(status["data"])
        if size > TOKEN_DATA_LIMIT:
            return {**outcome, "phase": "Refused",
                    "message": f"the completion's data is {size:,} bytes of JSON, more than {TOKEN_DATA_LIMIT:,}"}
        outcome["data"] = status["data"]
    return outcome


def waiting_message(names: Sequence[str]) -> str:
    children, tokens, events = children_in(names), tokens_in(names), events_in(names)
    parts = []
    if children:
        parts.append(f"{len(children)} child run{'s' if len(children) != 1 else ''} to finish: {_shown(children)}")
    if tokens:
        parts.append(f"{len(tokens)} token{'s' if len(tokens) != 1 else ''} to be completed "
                     f"(kubetasks complete NAME): {_shown(tokens)}")
    if events:
        parts.append(f"an event (kubetasks send EVENT): {_shown(sorted({e.split(':')[1] for e in events}))}")
    return "waiting for " + "; and for ".join(parts)


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
