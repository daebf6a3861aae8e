"""Overlap: what a Task does with a new run while another run of its concurrency key is unfinished (pure).

- queue (the default): nothing here; the concurrency limits decide when it starts.
- skip: the new run ends Skipped.
- cancelRunning: the older unfinished runs of the key are cancelled (``spec.cancel``), the new one goes on.
- cancelNew: the new run ends Cancelled.

"New" is creation order (creationTimestamp, then uid), not the order runs are looked at, so two
runs decided in any order, or after a restart, decide the same; a run that has begun (its Job
exists or is being made) is older than any that has not, so a run made in the same second as a
running one never passes for the older. Under cancelRunning a run that is not started and sees a
newer unfinished run of its key ends Cancelled itself (the newer one would cancel it). Runs being
cancelled or deleted are on their way out and overlap nothing.

Cron's concurrencyPolicy is the same judgement over a Task's scheduled runs (Forbid is skip,
Replace is cancelRunning), with one difference CronJob users expect: a skipped tick makes no run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from kubetasks.api.flow import Overlap
from kubetasks.api.taskrun import Phase
from kubetasks.core.debounce import order

Body = dict[str, Any]
CRON_POLICY: dict[str, Overlap] = {"Allow": "queue", "Forbid": "skip", "Replace": "cancelRunning"}


@dataclass(frozen=True)
class Judgement:
    """``go`` (with ``cancel``: the older runs to cancel first), ``skip`` or ``cancel`` the new run;
    ``because`` names the runs that decided it."""

    action: Literal["go", "skip", "cancel"]
    cancel: tuple[str, ...] = ()
    because: tuple[str, ...] = ()


def judge(policy: Overlap, older: Sequence[str], newer: Sequence[str] = ()) -> Judgement:
    """The one rule, over the names of the other unfinished runs of the key, older and newer."""
    if policy == "skip" and older:
        return Judgement("skip", because=tuple(older))
    if policy == "cancelNew" and older:
        return Judgement("cancel", because=tuple(older))
    if policy == "cancelRunning":
        if newer:
            return Judgement("cancel", because=tuple(newer))
        return Judgement("go", cancel=tuple(older), because=tuple(older))
    return Judgement("go")


def overlap_key(body: Body) -> tuple[str, str, str] | None:
    """The cache index of an unfinished run: (namespace, task, concurrency key; "" without one)."""
    try:
        if Phase((body.get("status") or {}).get("phase") or Phase.PENDING).finished:
            return None
    except ValueError:
        pass
    spec = body.get("spec") or {}
    return body["metadata"].get("namespace", ""), spec.get("taskRef", ""), str(spec.get("concurrencyKey") or "")


def _live(body: Body) -> bool:
    return overlap_key(body) is not None and not (body.get("spec") or {}).get("cancel") \
        and not body["metadata"].get("deletionTimestamp")


@dataclass(frozen=True)
class Verdict:
    judgement: Judgement
    cancel: tuple[tuple[str, str], ...]  # (name, uid) of the older runs to cancel
    message: str


def began(body: Body) -> bool:
    return bool((body.get("status") or {}).get("attempt"))


def decide(policy: Overlap, runs: Iterable[Body], name: str, started: Callable[[Body], bool] = began) -> Verdict | None:
    """The verdict for run ``name`` among ``runs``, the unfinished runs of its Task and
    concurrency key (its own included); None when there is nothing to do (queue, or no overlap).
    ``started(run)``: whether it has begun (a Job, or one being made): a run that has is older than
    any that has not, whatever their creation times (1 s resolution) and uids say."""
    if policy == "queue":
        return None
    runs = list(runs)
    me = next((b for b in runs if b["metadata"]["name"] == name), None)
    if me is None:
        return None

    def age(body: Body) -> tuple[bool, datetime, str]:
        return (not started(body), *order(body))

    mine = age(me)
    others = sorted((b for b in runs if b["metadata"]["name"] != name and _live(b)), key=age)
    older = [b for b in others if age(b) < mine]
    newer = [b for b in others if age(b) > mine]
    judgement = judge(policy, [b["metadata"]["name"] for b in older], [b["metadata"]["name"] for b in newer])
    if judgement.action == "go" and not judgement.cancel:
        return None
    key = (me.get("spec") or {}).get("concurrencyKey")
    of_key = f"of concurrency key {key!r}" if key else "(no concurrency key)"
    names = ", ".join(repr(n) for n in judgement.because[:5]) + (" ..." if len(judgement.because) > 5 else "")
    runs_are = f"run {names} {of_key} is" if len(judgement.because) == 1 else f"runs {names} {of_key} are"
    if judgement.action == "skip":
        message = f"skipped: {runs_are} unfinished (overlap: skip)"
    elif judgement.action == "cancel" and policy == "cancelNew":
        message = f"cancelled: {runs_are} unfinished (overlap: cancelNew)"
    elif judgement.action == "cancel":
        message = f"cancelled: newer {runs_are} replacing it (overlap: cancelRunning)"
    else:
        message = f"cancelled by the newer run {name!r} {of_key} (overlap: cancelRunning)"
    cancel = tuple((str(b["metadata"]["name"]), str(b["metadata"].get("uid", "")))
                   for b in older if b["metadata"]["name"] in judgement.cancel)
    return Verdict(judgement, cancel, message)
