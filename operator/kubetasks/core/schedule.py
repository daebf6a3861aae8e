"""Cron schedules of Tasks: which tick is due, what it starts, and which finished runs go.

Pure functions of their inputs (``now`` is passed in, nothing is read or written): the
controller gathers the Task, its scheduled runs and the clock, calls :func:`plan_schedule`, and
carries out the :class:`ScheduleDecision`.

Expressions
    Five fields (minute hour day-of-month month day-of-week, as in crontab(5) and Kubernetes
    CronJob, with names, ranges, steps and croniter's ``L`` and ``#``), or one of the macros
    @yearly @annually @monthly @weekly @daily @midnight @hourly. Seconds and year fields (6 or 7
    fields), @reboot, and hashed (``H``) or random (``R``) values are rejected.

Time zones and daylight saving time
    Expressions match the wall clock of the schedule's IANA ``timezone``; ticks are aware UTC
    datetimes. Where the wall clock jumps, kubetasks does what Vixie (ISC) cron does, which tells
    *fixed-time* schedules (neither the minute nor the hour field starts with ``*``:
    ``30 2 * * *``, ``@daily``) from *wildcard* ones (``* * * * *``, ``*/15 * * * *``,
    ``0 * * * *``, ``@hourly``):

    - Spring forward (Europe/Berlin, last Sunday of March: 02:00 CET -> 03:00 CEST). A fixed-time
      tick in the skipped hour runs once, at the instant of the jump: ``30 2 * * *`` runs at
      03:00 CEST (01:00 UTC) that day. Wildcard ticks in the skipped hour do not exist:
      ``*/15 * * * *`` goes from 01:45 CET to 03:00 CEST, 15 real minutes later.
    - Fall back (last Sunday of October: 03:00 CEST -> 02:00 CET). A fixed-time tick in the
      repeated hour runs once, at its first occurrence: ``30 2 * * *`` runs at 02:30 CEST
      (00:30 UTC), not again at 02:30 CET. Wildcard ticks run in both passes and so keep their
      real-time rhythm: ``@hourly`` runs at 02:00 CEST and at 02:00 CET, an hour apart.

Missed ticks (like the CronJob controller)
    When the operator was down, or the Task suspended, only the most recent due tick runs, once;
    the earlier ones are counted (up to :data:`MAX_MISSED`) but never run. With
    ``startingDeadlineSeconds``, a tick more than that late is skipped instead.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone as dt_timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from kubetasks.api.durations import format_duration
from kubetasks.api.task import TaskSpec
from kubetasks.api.taskrun import Phase
from kubetasks.core.naming import scheduled_run_name
from kubetasks.core.overlap import CRON_POLICY, judge

UTC = dt_timezone.utc
MAX_MISSED = 100  # missed ticks counted at most, as the CronJob controller's "too many missed start times"
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS = "minute hour day-of-month month day-of-week"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PROBE = datetime(2000, 1, 1)  # validation looks for a first tick after this (naive: wall clock)
_DST_WINDOW = timedelta(days=2)  # how far around an instant a clock change is looked for


@dataclass(frozen=True)
class TickDecision:
    """What :func:`due_tick` found."""

    tick: datetime | None = None  # most recent due tick (aware UTC), None when none is due
    skipped: bool = False  # the tick is due but past startingDeadlineSeconds: do not run it
    reason: str | None = None  # why it is skipped, one line
    next_tick: datetime | None = None  # first tick after now: requeue then, status.nextScheduleTime
    missed: int = 0  # due ticks before ``tick`` that never run, at most MAX_MISSED

    @property
    def too_many_missed(self) -> bool:
        return self.missed >= MAX_MISSED


@dataclass(frozen=True)
class ScheduleDecision:
    """What the controller does for a cron Task now.

    ``last_schedule_time`` is the new ``status.lastScheduleTime``: the latest tick the operator
    handled, by starting a run or by deliberately skipping it (Forbid, missed deadline), so a
    skipped tick is reported once and never runs late. ``requeue_at`` is the next tick, which is
    also ``status.nextScheduleTime``; None when suspended or invalid.
    """

    create: datetime | None = None  # tick of the scheduled run to create now
    run_name: str | None = None  # its name, naming.scheduled_run_name(task, create)
    cancel: tuple[str, ...] = ()  # active scheduled runs to cancel first (Replace)
    skip_reason: str | None = None  # a due tick is not run, and why (one line, for an event)
    last_schedule_time: datetime | None = None
    requeue_at: datetime | None = None
    missed: int = 0  # earlier due ticks that never run, at most MAX_MISSED
    error: str | None = None  # invalid schedule or time zone: nothing is scheduled


@dataclass(frozen=True)
class _Schedule:
    fields: str  # five fields, macros expanded
    zone: ZoneInfo
    wildcard: bool  # minute or hour field starts with '*' (Vixie cron's MIN_STAR|HR_STAR)


# ---------------------------------------------------------------------------------------------
# Validation


def validate_schedule(expr: str, timezone: str) -> str | None:
    """A one-line error when ``expr`` is not a supported cron expression or ``timezone`` is not
    an IANA time zone; None when both are fine."""
    return _compile(expr, timezone)[1]


@lru_cache(maxsize=512)
def _compile(expr: str, timezone: str) -> tuple[_Schedule | None, str | None]:
    fields, error = _parse_expression(expr)
    if error:
        return None, error
    try:
        zone = ZoneInfo(timezone)
    except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError, IsADirectoryError, ...
        return None, f"unknown time zone {timezone!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
    minute, hour = fields.split()[:2]
    return _Schedule(fields, zone, minute.startswith("*") or hour.startswith("*")), None


def _parse_expression(expr: str) -> tuple[str, str | None]:
    text = " ".join(expr.split()) if isinstance(expr, str) else ""
    if not text:
        return "", f"schedule is empty: use 5 cron fields ({FIELDS}) or a macro such as @daily"
    if text.startswith("@"):
        macro = text.lower()
        if macro == "@reboot":
            return "", "@reboot is not supported: a Task has no boot time; use 5 cron fields or @hourly, @daily, ..."
        if macro not in MACROS:
            return "", f"unknown macro {text!r}: use one of {', '.join(MACROS)}"
        return MACROS[macro], None
    parts = text.split(" ")
    if len(parts) in (6, 7):
        return "", (f"cron expression {text!r} has {len(parts)} fields; seconds and years are not "
                    f"supported: use 5 fields ({FIELDS})")
    if len(parts) != 5:
        return "", f"cron expression {text!r} has {len(parts)} field(s); expected 5 ({FIELDS})"
    if any(item[:1].upper() in ("H", "R") for part in parts for item in part.split(",")):
        return "", f"cron expression {text!r} uses hashed (H) or random (R) values, which are not supported"
    try:
        croniter(text, _PROBE).get_next(datetime)
    except CroniterBadDateError:
        return "", f"cron expression {text!r} never matches a date"
    except Exception as e:  # noqa: BLE001 - croniter raises several types on bad input
        detail = " ".join(str(e).split()) or type(e).__name__
        return "", f"invalid cron expression {text!r}: {detail}"
    return text, None


def _schedule(expr: str, timezone: str) -> _Schedule:
    schedule, error = _compile(expr, timezone)
    if schedule is None:
        raise ValueError(error)
    return schedule


# ---------------------------------------------------------------------------------------------
# Ticks


def next_tick(expr: str, timezone: str, after: datetime) -> datetime:
    """The first tick strictly after ``after`` (aware), as an aware UTC datetime.

    Raises ValueError for an invalid schedule or time zone (see :func:`validate_schedule`).
    """
    tick = next(_forward(_schedule(expr, timezone), _aware(after, "after")), None)
    if tick is None:
        raise ValueError(f"schedule {expr!r} has no tick after {after.isoformat()}")
    return tick


def due_tick(expr: str, timezone: str, last_scheduled: datetime | None, created: datetime,
             now: datetime, starting_deadline_seconds: int | None) -> TickDecision:
    """The tick to run now, as the CronJob controller picks it.

    The due tick is the most recent tick ``t`` with ``max(last_scheduled, created) < t <= now``;
    earlier ticks in that window are missed and never run (counted in ``missed``, at most
    MAX_MISSED, whatever the downtime). When ``starting_deadline_seconds`` is set and
    ``now - t`` exceeds it, the tick is ``skipped`` with a ``reason``. ``next_tick`` is the first
    tick after ``now``. Raises ValueError for an invalid schedule or time zone.
    """
    schedule = _schedule(expr, timezone)
    now, created = _aware(now, "now"), _aware(created, "created")
    start = max(created, _aware(last_scheduled, "last_scheduled")) if last_scheduled else created
    following = next(_forward(schedule, now), None)
    tick = next(_backward(schedule, now), None)
    if tick is None or tick <= start:
        return TickDecision(next_tick=following)
    missed = 0
    for earlier in _forward(schedule, start):  # bounded: stops at MAX_MISSED
        if earlier >= tick or missed >= MAX_MISSED:
            break
        missed += 1
    late = now - tick
    if starting_deadline_seconds is not None and late > timedelta(seconds=starting_deadline_seconds):
        reason = (f"skipped tick {_clock(tick, schedule.zone)}: {format_duration(late)} late, "
                  f"past startingDeadlineSeconds={starting_deadline_seconds}")
        return TickDecision(tick=tick, skipped=True, reason=reason, next_tick=following, missed=missed)
    return TickDecision(tick=tick, next_tick=following, missed=missed)


def _forward(schedule: _Schedule, after: datetime) -> Iterator[datetime]:
    """Ticks strictly after ``after``, earliest first, each instant once."""
    local = after.astimezone(schedule.zone)
    # After a fall-back, naive times a little before local(after) have a second occurrence
    # that is later than ``after``: start early by the size of a coming fold.
    later = (after + _DST_WINDOW).astimezone(schedule.zone)
    lookback = max(timedelta(0), local.utcoffset() - later.utcoffset())  # type: ignore[operator]
    start = (local.replace(tzinfo=None) - lookback).replace(second=0, microsecond=0) - timedelta(minutes=1)
    wall = croniter(schedule.fields, start)
    pending: list[datetime] = []
    last = None
    while True:
        try:
            naive = wall.get_next(datetime)
        except CroniterBadDateError:
            break
        instants = _instants(schedule, naive)
        if not instants:
            continue
        for instant in instants:
            if instant > after:
                heapq.heappush(pending, instant)
        # Every later wall-clock tick maps to instants at or after this one's first.
        floor = instants[0]
        while pending and pending[0] <= floor:
            instant = heapq.heappop(pending)
            if instant != last:
                last = instant
                yield instant
    while pending:
        instant = heapq.heappop(pending)
        if instant != last:
            last = instant
            yield instant


def _backward(schedule: _Schedule, at: datetime) -> Iterator[datetime]:
    """Ticks at or before ``at``, latest first, each instant once."""
    local = at.astimezone(schedule.zone)
    # Just after a fall-back, naive times a little after local(at) had a first occurrence
    # before ``at``: start late by the size of the past fold.
    earlier = (at - _DST_WINDOW).astimezone(schedule.zone)
    lookahead = max(timedelta(0), earlier.utcoffset() - local.utcoffset())  # type: ignore[operator]
    start = (local.replace(tzinfo=None) + lookahead).replace(second=0, microsecond=0) + timedelta(minutes=1)
    wall = croniter(schedule.fields, start)
    pending: list[tuple[float, datetime]] = []  # max-heap by negated timestamp
    last = None
    while True:
        try:
            naive = wall.get_prev(datetime)
        except CroniterBadDateError:
            break
        instants = _instants(schedule, naive)
        if not instants:
            continue
        for instant in instants:
            if instant <= at:
                heapq.heappush(pending, (-instant.timestamp(), instant))
        # Every earlier wall-clock tick maps to instants at or before this one's last.
        ceiling = instants[-1]
        while pending and pending[0][1] >= ceiling:
            instant = heapq.heappop(pending)[1]
            if instant != last:
                last = instant
                yield instant
    while pending:
        instant = heapq.heappop(pending)[1]
        if instant != last:
            last = instant
            yield instant


def _instants(schedule: _Schedule, naive: datetime) -> list[datetime]:
    """The UTC instants at which a wall-clock tick fires, in order (see the module docs)."""
    first = naive.replace(tzinfo=schedule.zone).astimezone(UTC)
    second = naive.replace(tzinfo=schedule.zone, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if first.astimezone(schedule.zone).replace(tzinfo=None) == naive:  # repeated (fall back)
        return [first, second] if schedule.wildcard else [first]
    # Skipped (spring forward): fold=1 reads it with the new offset, before the jump.
    return [] if schedule.wildcard else [_jump(schedule.zone, second, first)]


def _jump(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The instant in (before, after] at which the UTC offset of ``zone`` changes."""
    low, high = int(before.timestamp()), int(after.timestamp())
    target = after.astimezone(zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _clock(tick: datetime, zone: ZoneInfo) -> str:
    local = tick.astimezone(zone)
    return f"{local:%H:%M} {local.tzname()}"


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# The decision


def plan_schedule(spec: TaskSpec, task_name: str, last_schedule_time: datetime | None, created: datetime,
                  now: datetime, active_runs: Sequence[str]) -> ScheduleDecision:
    """What to do for a cron Task now.

    ``task_name`` is the Task's metadata.name, ``last_schedule_time`` its
    status.lastScheduleTime, ``created`` its creationTimestamp, and ``active_runs`` the names of
    its scheduled runs that have not finished.

    - No schedule: nothing. Invalid schedule or time zone: ``error``, nothing else.
    - Suspended: nothing is created or cancelled and there is no next tick. As with CronJob,
      ticks that pass while suspended are missed, and on resume the latest of them runs once,
      unless startingDeadlineSeconds says it is too late.
    - A due tick past startingDeadlineSeconds is skipped (``skip_reason``).
    - Allow: the run is created. Forbid: it is skipped while another scheduled run is active.
      Replace: the other active runs are cancelled and the run is created.
    A run of the due tick that already exists (the operator restarted before updating the
    status) counts as this tick's run, not as another active one; its create meets a conflict.
    """
    keep = ScheduleDecision(last_schedule_time=last_schedule_time)
    if not spec.schedule:
        return keep
    error = validate_schedule(spec.schedule, spec.timezone)
    if error:
        return replace(keep, error=error)
    if spec.suspend:
        return keep
    due = due_tick(spec.schedule, spec.timezone, last_schedule_time, created, now, spec.starting_deadline_seconds)
    decision = replace(keep, requeue_at=due.next_tick, missed=due.missed)
    if due.tick is None:
        return decision
    decision = replace(decision, last_schedule_time=due.tick)
    if due.skipped:
        return replace(decision, skip_reason=due.reason)
    name = scheduled_run_name(task_name, due.tick)
    others = tuple(sorted(run for run in set(active_runs) if run != name))
    # The overlap judgement of TaskRuns (core.overlap), over the Task's scheduled runs: every other
    # active one is older than the tick's run. A skipped tick makes no run, as a CronJob's.
    judged = judge(CRON_POLICY[spec.concurrency_policy], others)
    if judged.action == "skip":
        runs = f"run {others[0]} is" if len(others) == 1 else f"runs {', '.join(others)} are"
        reason = f"skipped tick {_clock(due.tick, ZoneInfo(spec.timezone))} because {runs} still active"
        return replace(decision, skip_reason=reason)
    return replace(decision, create=due.tick, run_name=name, cancel=judged.cancel)


# ---------------------------------------------------------------------------------------------
# History


def runs_to_prune(runs: Iterable[tuple[str, str | Phase | None, datetime | None]], successful_limit: int,
                  failed_limit: int) -> list[str]:
    """Names of finished runs beyond the history limits, oldest first.

    ``runs`` are (name, phase, completion time). Succeeded runs count against
    ``successful_limit``; Failed, TimedOut and Cancelled ones against ``failed_limit``; the newest
    of each are kept. Unfinished runs are never pruned; a finished run without a completion time
    counts as the oldest.
    """
    succeeded: list[tuple[datetime, str]] = []
    failed: list[tuple[datetime, str]] = []
    for name, phase, completed in runs:
        try:
            state = Phase(phase or Phase.PENDING)
        except ValueError:
            continue
        if state.finished:
            group = succeeded if state == Phase.SUCCEEDED else failed
            group.append((_aware(completed, "completion time") if completed else _EPOCH, name))
    prune: list[tuple[datetime, str]] = []
    for group, limit in ((succeeded, successful_limit), (failed, failed_limit)):
        group.sort()
        prune += group[: max(len(group) - max(limit, 0), 0)]
    return [name for _, name in sorted(prune)]
