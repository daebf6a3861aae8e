"""Debounce: runs of one Task with the same ``spec.debounce.key`` close together become one run (pure).

The runs of a key that are unfinished and not started (attempt 0) form a group, together with the
runs already superseded into one of them (``status.supersededBy``, followed through chains: in
trailing mode a survivor is itself superseded by the next newest). Of the group's waiting runs
one survives: the oldest in leading mode (it keeps the first payload), the newest in trailing mode
(the last payload); order is creationTimestamp, then uid, never the name. The survivor starts at
min(newest member's creation + delay, oldest member's creation + maxDelay); the others end
Superseded. Once the survivor has started, a later run of the key opens a new group; a run created
*before* the survivor started but decided only after (an operator that lagged or was down) is
still superseded by it, so a late look does not make a second run (in trailing mode only a run
older than the survivor: a newer one has the later payload, and runs after all).

An idempotency key wins over a debounce key: a run with one joins its group only once it has been
decided at least once (its claim was made: it is no Duplicate), so a run that is about to end
Duplicate is never anyone's survivor. Its claim stays with it if it is superseded; a later
Duplicate of it follows duplicateOf, then supersededBy, to the run that runs.

When the runs of one key disagree on delay, maxDelay or mode, the newest run's settings apply.
Decisions read only the runs' bodies (the operator's cache): the same after a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final, Literal

from kubetasks.api.durations import parse_duration
from kubetasks.api.taskrun import Phase
from kubetasks.api.times import api_time

Body = dict[str, Any]
REASON: Final = "Debounced"  # waitingFor.reason and the condition's reason while the survivor waits
SUPERSEDED = "Superseded"
UNSTAMPED = datetime.max.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Verdict:
    """What becomes of one run of a debounce key: it waits (as the survivor) until ``start_at``,
    goes on (the survivor, its wait over), or is superseded by ``survivor``."""

    action: Literal["wait", "go", "supersede"]
    survivor: str
    start_at: datetime | None
    limit: str  # waitingFor.limit: Debounce/<task>/<key>
    message: str


def debounce_of(body: Body) -> dict[str, Any] | None:
    found = (body.get("spec") or {}).get("debounce")
    return found if isinstance(found, dict) and found.get("key") else None


def group_key(body: Body) -> tuple[str, str, str] | None:
    """The cache index of a run's debounce group: (namespace, task, key); None without a debounce key."""
    debounce = debounce_of(body)
    if debounce is None:
        return None
    return body["metadata"].get("namespace", ""), (body.get("spec") or {}).get("taskRef", ""), str(debounce["key"])


def order(body: Body) -> tuple[datetime, str]:
    """Creation order: creationTimestamp (1 s resolution), then uid; never the name."""
    meta = body.get("metadata") or {}
    created = api_time(meta.get("creationTimestamp")) or UNSTAMPED  # not yet stamped: last
    return created, str(meta.get("uid", ""))


def _status(body: Body) -> dict[str, Any]:
    return body.get("status") or {}


def _phase(body: Body) -> str:
    return str(_status(body).get("phase") or Phase.PENDING.value)


def _waiting(body: Body) -> bool:
    """Unfinished, not started, not being cancelled or deleted: a member that may still survive."""
    try:
        finished = Phase(_phase(body)).finished
    except ValueError:
        finished = False
    return (not finished and not _status(body).get("attempt") and not (body.get("spec") or {}).get("cancel")
            and not body["metadata"].get("deletionTimestamp"))


def _decided(body: Body, me: str) -> bool:
    """A run with an idempotency key joins only after its first decision (its claim is made):
    one about to end Duplicate must not become the survivor of the others."""
    name = body["metadata"]["name"]
    has_key = bool((body.get("spec") or {}).get("idempotencyKey"))
    return name == me or not has_key or _phase(body) != Phase.PENDING.value


def decide(runs: Iterable[Body], superseded_into: Callable[[str], Iterable[Body]], name: str,
           now: datetime) -> Verdict | None:
    """The verdict for run ``name`` among ``runs``, the unfinished runs of its debounce key (its
    own included); ``superseded_into(n)`` gives the runs superseded by run ``n``. None when the
    run has no debounce key or is no longer waiting to start."""
    runs = list(runs)
    me = next((b for b in runs if b["metadata"]["name"] == name), None)
    if me is None or debounce_of(me) is None or not _waiting(me):
        return None
    task, key = str((me.get("spec") or {}).get("taskRef", "")), str(debounce_of(me)["key"])  # type: ignore[index]
    limit = f"Debounce/{task}/{key}"
    waiting = sorted((b for b in runs if _waiting(b) and debounce_of(b) and _decided(b, name)), key=order)
    settings = debounce_of(waiting[-1]) if waiting else debounce_of(me)
    assert settings is not None
    mode = settings.get("mode") or "leading"
    # A survivor that started after a run was created was that run's group's: a late look (an
    # operator that lagged, or restarted) must not open a second group for it. In trailing mode
    # only for runs older than it: a newer one has the later payload, and runs in a group of its own.
    started = sorted((b for b in runs if _status(b).get("attempt") and debounce_of(b)
                      and not (b.get("spec") or {}).get("cancel")), key=order)
    survivor = _closed_by(started, me, mode)
    if survivor is not None:
        return Verdict("supersede", survivor, None, limit,
                       f"run {survivor!r} of debounce key {key!r} started after this run was created, "
                       "and runs instead")
    waiting = [b for b in waiting if _closed_by(started, b, mode) is None]
    survivor_body = waiting[0] if mode == "leading" else waiting[-1]
    survivor = survivor_body["metadata"]["name"]
    if survivor != name:
        return Verdict("supersede", survivor, None, limit,
                       f"run {survivor!r} of debounce key {key!r} runs instead ({mode}: it has the "
                       f"{'first' if mode == 'leading' else 'last'} payload)")
    members = _members(waiting, superseded_into)
    newest, oldest = max(order(b)[0] for b in members), min(order(b)[0] for b in members)
    latest = oldest + parse_duration(str(settings["maxDelay"]))
    start_at = min(newest + parse_duration(str(settings["delay"])), latest)
    if now >= start_at:
        return Verdict("go", survivor, start_at, limit, f"debounce key {key!r}: quiet since {newest.isoformat()}")
    return Verdict("wait", survivor, start_at, limit,
                   f"debounced: starts at {start_at.isoformat()} unless another run of key {key!r} comes first "
                   f"(at the latest {latest.isoformat()}); {len(members) - 1} run(s) superseded into it")


def _closed_by(started: list[Body], body: Body, mode: str) -> str | None:
    """The started run of the key that started after ``body`` was created (and, trailing, is newer
    than it), if any."""
    created = order(body)
    return next((s["metadata"]["name"] for s in started
                 if (api_time(_status(s).get("startTime")) or created[0]) > created[0]
                 and (mode == "leading" or order(s) > created)), None)


def _members(waiting: list[Body], superseded_into: Callable[[str], Iterable[Body]]) -> list[Body]:
    """The waiting runs and every run superseded into them, through chains (each run once)."""
    seen = {b["metadata"]["name"]: b for b in waiting}
    todo = list(seen)
    while todo:
        for body in superseded_into(todo.pop()):
            found = body["metadata"]["name"]
            if found not in seen and _phase(body) == Phase.SUPERSEDED.value:
                seen[found] = body
                todo.append(found)
    return list(seen.values())



# A run that ends in another's place: its waiters (the SDK's RunHandle.wait, `kubetasks run --wait`)
# follow it, through chains (trailing debounce), to the run that does the work; a Duplicate of a
# superseded run leads on through both.
FOLLOWED = {Phase.SUPERSEDED.value: "supersededBy", Phase.DUPLICATE.value: "duplicateOf"}


def followed(status: dict[str, Any]) -> str | None:
    """The run that ran in place of this one (Superseded by debounce, Duplicate by idempotency key)."""
    into = status.get(FOLLOWED.get(str(status.get("phase")), ""))
    return into if isinstance(into, str) and into else None
