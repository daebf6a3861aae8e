"""Cron logic of Tasks (kubetasks.core.schedule), with fixed clocks."""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from kubetasks.api.task import TaskSpec
from kubetasks.api.taskrun import Phase
from kubetasks.core.naming import scheduled_run_name
from kubetasks.core.schedule import (
    MAX_MISSED,
    ScheduleDecision,
    TickDecision,
    _backward,
    _compile,
    _forward,
    due_tick,
    next_tick,
    plan_schedule,
    runs_to_prune,
    validate_schedule,
)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def at(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    """A wall-clock time in ``zone``, as aware UTC."""
    return datetime(*args, tzinfo=zone, fold=fold).astimezone(UTC)


def ticks(expr: str, tz: str, after: datetime, n: int) -> list[datetime]:
    out = []
    for _ in range(n):
        after = next_tick(expr, tz, after)
        out.append(after)
    return out


# ---------------------------------------------------------------------------------------------
# validate_schedule


@pytest.mark.parametrize("expr", [
    "* * * * *", "*/5 * * * *", "0 9 * * 1-5", "30 2 * * *", "0 0 1,15 * *", "0 12 * JAN-MAR MON",
    "0 0 * * 7", "0 0 L * *", "0 0 * * 5#2", "0 0 29 2 *", "  0   0  * * *  ",
    "@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight", "@DAILY",
])
def test_valid_expressions(expr: str) -> None:
    assert validate_schedule(expr, "UTC") is None


@pytest.mark.parametrize(("expr", "fragment"), [
    ("", "schedule is empty"),
    ("   ", "schedule is empty"),
    ("* * * *", "has 4 field(s); expected 5"),
    ("0 * * * * *", "has 6 fields; seconds and years are not supported"),
    ("0 0 0 * * * 2030", "has 7 fields; seconds and years are not supported"),
    ("@reboot", "@reboot is not supported"),
    ("@every 5m", "unknown macro '@every 5m'"),
    ("61 * * * *", "invalid cron expression '61 * * * *'"),
    ("0 24 * * *", "invalid cron expression"),
    ("*/0 * * * *", "invalid cron expression"),
    ("0 0 * * 8", "invalid cron expression"),
    ("a b c d e", "invalid cron expression"),
    ("1,,2 * * * *", "invalid cron expression"),
    ("H * * * *", "hashed (H) or random (R)"),
    ("0 R * * *", "hashed (H) or random (R)"),
    ("0 0 30 2 *", "never matches a date"),
])
def test_invalid_expressions(expr: str, fragment: str) -> None:
    error = validate_schedule(expr, "UTC")
    assert error is not None and fragment in error
    assert "\n" not in error
    with pytest.raises(ValueError, match="cron|schedule|macro|@reboot"):
        next_tick(expr, "UTC", utc(2024, 1, 1))


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Etc/GMT+5"])
def test_known_time_zones(tz: str) -> None:
    assert validate_schedule("@daily", tz) is None


@pytest.mark.parametrize("tz", ["", "Mars/Olympus", "utc", "Europe", "Europe/Berlin ", "../etc/passwd", "CEST"])
def test_unknown_time_zones(tz: str) -> None:
    error = validate_schedule("@daily", tz)
    assert error == f"unknown time zone {tz!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
    with pytest.raises(ValueError, match="unknown time zone"):
        due_tick("@daily", tz, None, utc(2024, 1, 1), utc(2024, 1, 2), None)


# ---------------------------------------------------------------------------------------------
# next_tick


def test_every_minute_is_strictly_after() -> None:
    assert next_tick("* * * * *", "UTC", utc(2024, 5, 1, 12, 0)) == utc(2024, 5, 1, 12, 1)
    assert next_tick("* * * * *", "UTC", utc(2024, 5, 1, 12, 0, 59, 999999)) == utc(2024, 5, 1, 12, 1)
    assert ticks("* * * * *", "UTC", utc(2024, 12, 31, 23, 58, 30), 3) == [
        utc(2024, 12, 31, 23, 59), utc(2025, 1, 1, 0, 0), utc(2025, 1, 1, 0, 1)]


def test_returns_aware_utc_for_any_aware_input() -> None:
    after = datetime(2024, 5, 1, 14, 0, 30, tzinfo=BERLIN)  # 12:00:30 UTC
    tick = next_tick("* * * * *", "UTC", after)
    assert tick == utc(2024, 5, 1, 12, 1) and tick.tzinfo is UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_tick("@daily", "UTC", datetime(2024, 1, 1))


def test_macros_in_utc() -> None:
    start = utc(2024, 2, 28, 22, 30)
    assert ticks("@hourly", "UTC", start, 3) == [utc(2024, 2, 28, 23), utc(2024, 2, 29, 0), utc(2024, 2, 29, 1)]
    assert ticks("@daily", "UTC", start, 2) == [utc(2024, 2, 29), utc(2024, 3, 1)]
    assert ticks("@midnight", "UTC", start, 1) == [utc(2024, 2, 29)]
    assert ticks("@weekly", "UTC", start, 2) == [utc(2024, 3, 3), utc(2024, 3, 10)]  # Sundays
    assert ticks("@monthly", "UTC", start, 2) == [utc(2024, 3, 1), utc(2024, 4, 1)]
    assert ticks("@yearly", "UTC", start, 1) == ticks("@annually", "UTC", start, 1) == [utc(2025, 1, 1)]


def test_daily_in_a_time_zone_follows_its_wall_clock() -> None:
    # Midnight in New York is 05:00 UTC in winter (EST) and 04:00 UTC in summer (EDT).
    assert next_tick("@daily", "America/New_York", utc(2024, 1, 15, 12)) == utc(2024, 1, 16, 5)
    assert next_tick("@daily", "America/New_York", utc(2024, 7, 15, 12)) == utc(2024, 7, 16, 4)
    assert next_tick("0 9 * * 1-5", "Europe/Berlin", utc(2024, 7, 12, 8)) == utc(2024, 7, 15, 7)  # Fri -> Mon


# Daylight saving time. Europe/Berlin: 2024-03-31 02:00 CET -> 03:00 CEST (01:00 UTC) and
# 2024-10-27 03:00 CEST -> 02:00 CET (01:00 UTC). America/New_York: 2024-03-10 02:00 EST ->
# 03:00 EDT (07:00 UTC) and 2024-11-03 02:00 EDT -> 01:00 EST (06:00 UTC).


def test_berlin_spring_forward_fixed_time_runs_once_at_the_jump() -> None:
    assert ticks("30 2 * * *", "Europe/Berlin", utc(2024, 3, 29, 12), 3) == [
        at(BERLIN, 2024, 3, 30, 2, 30),  # 01:30 UTC
        utc(2024, 3, 31, 1, 0),          # 02:30 does not exist: 03:00 CEST, when the clock jumps
        at(BERLIN, 2024, 4, 1, 2, 30),   # 00:30 UTC
    ]


def test_berlin_fall_back_fixed_time_runs_once_in_the_first_pass() -> None:
    assert ticks("30 2 * * *", "Europe/Berlin", utc(2024, 10, 25, 12), 3) == [
        utc(2024, 10, 26, 0, 30),  # 02:30 CEST
        utc(2024, 10, 27, 0, 30),  # 02:30 CEST; 02:30 CET (01:30 UTC) does not run again
        utc(2024, 10, 28, 1, 30),  # 02:30 CET
    ]
    # Asked from inside the repeated hour, after the first 02:30: tomorrow, not 02:30 CET today.
    assert next_tick("30 2 * * *", "Europe/Berlin", utc(2024, 10, 27, 1, 10)) == utc(2024, 10, 28, 1, 30)


def test_new_york_spring_forward_and_fall_back() -> None:
    assert ticks("30 2 * * *", "America/New_York", utc(2024, 3, 9, 12), 2) == [
        utc(2024, 3, 10, 7, 0), utc(2024, 3, 11, 6, 30)]  # 03:00 EDT at the jump, then 02:30 EDT
    # 02:30 exists once on the fall-back day; 01:30 is the repeated time there.
    assert ticks("30 2 * * *", "America/New_York", utc(2024, 11, 2, 12), 2) == [
        utc(2024, 11, 3, 7, 30), utc(2024, 11, 4, 7, 30)]
    assert ticks("30 1 * * *", "America/New_York", utc(2024, 11, 2, 12), 2) == [
        utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]  # 01:30 EDT only, then 01:30 EST


def test_wildcard_schedules_keep_real_time_across_dst() -> None:
    # Every 15 minutes: the skipped hour has no ticks; 15 real minutes from 01:45 CET to 03:00 CEST.
    assert ticks("*/15 * * * *", "Europe/Berlin", utc(2024, 3, 31, 0, 40), 3) == [
        utc(2024, 3, 31, 0, 45), utc(2024, 3, 31, 1, 0), utc(2024, 3, 31, 1, 15)]
    # Hourly: runs at 02:00 CEST and again at 02:00 CET, an hour apart.
    assert ticks("@hourly", "Europe/Berlin", utc(2024, 10, 26, 23, 30), 4) == [
        utc(2024, 10, 27, 0), utc(2024, 10, 27, 1), utc(2024, 10, 27, 2), utc(2024, 10, 27, 3)]
    # Every minute through the fall-back: one tick per real minute, none twice.
    got = ticks("* * * * *", "Europe/Berlin", utc(2024, 10, 27, 0, 58), 4)
    assert got == [utc(2024, 10, 27, 0, 59), utc(2024, 10, 27, 1, 0), utc(2024, 10, 27, 1, 1), utc(2024, 10, 27, 1, 2)]


def test_two_fixed_times_landing_on_the_jump_run_once() -> None:
    # 02:00 is skipped and moves to the jump, which is 03:00 CEST: one run, not two.
    assert ticks("0 2,3 * * *", "Europe/Berlin", utc(2024, 3, 30, 23), 2) == [
        utc(2024, 3, 31, 1, 0), at(BERLIN, 2024, 4, 1, 2, 0)]


def _reference(expr: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """Brute force, minute by minute in real time: wildcard schedules fire when the wall clock
    matches; fixed-time ones also, but not in the second pass of a repeated hour, and at a jump
    forward when a skipped wall-clock minute matches."""
    schedule = _compile(expr, tz)[0]
    assert schedule is not None
    zone, out = ZoneInfo(tz), []
    # The wall-clock minutes that match, from croniter on naive times (no time zone involved).
    wall_clock = croniter(schedule.fields, start.replace(tzinfo=None) - timedelta(days=1))
    matching: set[datetime] = set()
    while not matching or max(matching) < end.replace(tzinfo=None) + timedelta(days=1):
        matching.add(wall_clock.get_next(datetime))
    moment = start
    while moment <= end:
        local = moment.astimezone(zone)
        fire = local.replace(tzinfo=None) in matching
        if not schedule.wildcard:
            before = (moment - timedelta(minutes=1)).astimezone(zone)
            second_pass = local.replace(tzinfo=None) <= before.replace(tzinfo=None) or local.fold == 1
            fire = fire and not second_pass
            wall = before.replace(tzinfo=None) + timedelta(minutes=1)
            while wall < local.replace(tzinfo=None):  # minutes the clock skipped
                fire = fire or wall in matching
                wall += timedelta(minutes=1)
        if fire:
            out.append(moment)
        moment += timedelta(minutes=1)
    return out


@pytest.mark.parametrize("expr", ["30 2 * * *", "0 2 * * *", "*/20 * * * *", "@hourly", "15 1-3 * * *",
                                  "*/10 2 * * *", "0 */2 * * *", "59 1 * * *", "0 3 * * *"])
@pytest.mark.parametrize(("tz", "day"), [("Europe/Berlin", (2024, 3, 31)), ("Europe/Berlin", (2024, 10, 27)),
                                         ("America/New_York", (2024, 3, 10)), ("America/New_York", (2024, 11, 3)),
                                         ("Australia/Lord_Howe", (2024, 4, 7)), ("UTC", (2024, 3, 31))])
def test_ticks_match_a_brute_force_reference_on_dst_days(expr: str, tz: str, day: tuple[int, int, int]) -> None:
    start, end = utc(*day) - timedelta(hours=14), utc(*day) + timedelta(hours=38)
    expected = _reference(expr, tz, start, end)
    schedule = _compile(expr, tz)[0]
    assert schedule is not None
    forward = list(itertools.takewhile(lambda t: t <= end, _forward(schedule, start - timedelta(seconds=1))))
    assert forward == expected
    backward = list(itertools.takewhile(lambda t: t >= start, _backward(schedule, end)))
    assert backward == expected[::-1]
    # next_tick from any minute of the window agrees, including from inside repeated hours.
    for moment in (start + timedelta(minutes=13 * i) for i in range(0, 52 * 60 // 13)):
        want = next(t for t in expected if t > moment) if any(t > moment for t in expected) else None
        if want is not None:
            assert next_tick(expr, tz, moment) == want, moment


# ---------------------------------------------------------------------------------------------
# due_tick


def test_nothing_due_before_the_first_tick_after_creation() -> None:
    created = utc(2024, 5, 1, 12, 0, 10)
    decision = due_tick("* * * * *", "UTC", None, created, utc(2024, 5, 1, 12, 0, 50), None)
    assert decision == TickDecision(tick=None, next_tick=utc(2024, 5, 1, 12, 1))
    # A tick at the creation instant itself is not due; one exactly at now is.
    assert due_tick("* * * * *", "UTC", None, utc(2024, 5, 1, 12, 1), utc(2024, 5, 1, 12, 1), None).tick is None
    assert due_tick("* * * * *", "UTC", None, created, utc(2024, 5, 1, 12, 1), None).tick == utc(2024, 5, 1, 12, 1)


def test_on_time_tick() -> None:
    decision = due_tick("@hourly", "UTC", utc(2024, 5, 1, 11), utc(2024, 1, 1), utc(2024, 5, 1, 12, 0, 2), None)
    assert decision == TickDecision(tick=utc(2024, 5, 1, 12), next_tick=utc(2024, 5, 1, 13), missed=0)


def test_already_scheduled_tick_is_not_due_again() -> None:
    decision = due_tick("@hourly", "UTC", utc(2024, 5, 1, 12), utc(2024, 1, 1), utc(2024, 5, 1, 12, 30), None)
    assert decision.tick is None and decision.next_tick == utc(2024, 5, 1, 13)


def test_operator_down_ten_minutes_runs_only_the_latest_tick_once() -> None:
    last, now = utc(2024, 5, 1, 12, 0), utc(2024, 5, 1, 12, 10, 20)
    decision = due_tick("* * * * *", "UTC", last, utc(2024, 1, 1), now, None)
    assert decision == TickDecision(tick=utc(2024, 5, 1, 12, 10), next_tick=utc(2024, 5, 1, 12, 11), missed=9)
    assert not decision.too_many_missed
    # Once that tick is recorded, nothing more is due until the next one: never a burst.
    again = due_tick("* * * * *", "UTC", decision.tick, utc(2024, 1, 1), now, None)
    assert again.tick is None and again.missed == 0


def test_operator_down_with_a_deadline_skips_the_late_tick() -> None:
    # Every 5 minutes, last run 12:00, operator back at 12:11:30 with startingDeadlineSeconds=30:
    # 12:05 is missed, and 12:10 is 90 s late, so it is skipped too; 12:15 runs as usual.
    last, created = utc(2024, 5, 1, 12, 0), utc(2024, 1, 1)
    decision = due_tick("*/5 * * * *", "UTC", last, created, utc(2024, 5, 1, 12, 11, 30), 30)
    assert decision == TickDecision(
        tick=utc(2024, 5, 1, 12, 10), skipped=True, next_tick=utc(2024, 5, 1, 12, 15), missed=1,
        reason="skipped tick 12:10 UTC: 1m30s late, past startingDeadlineSeconds=30")
    # Back at 12:10:20 instead: 20 s late is in time.
    decision = due_tick("*/5 * * * *", "UTC", last, created, utc(2024, 5, 1, 12, 10, 20), 30)
    assert decision.tick == utc(2024, 5, 1, 12, 10) and not decision.skipped and decision.missed == 1


def test_starting_deadline() -> None:
    last, created = utc(2024, 5, 1, 11, 0), utc(2024, 1, 1)
    on_time = due_tick("@hourly", "UTC", last, created, utc(2024, 5, 1, 12, 0, 30), 30)
    assert on_time.tick == utc(2024, 5, 1, 12) and not on_time.skipped  # exactly at the deadline
    in_time = due_tick("@hourly", "UTC", last, created, utc(2024, 5, 1, 12, 0, 20), 30)
    assert not in_time.skipped and in_time.reason is None
    too_late = due_tick("@hourly", "UTC", last, created, utc(2024, 5, 1, 12, 1, 30), 30)
    assert too_late == TickDecision(
        tick=utc(2024, 5, 1, 12), skipped=True, next_tick=utc(2024, 5, 1, 13),
        reason="skipped tick 12:00 UTC: 1m30s late, past startingDeadlineSeconds=30")
    berlin = due_tick("30 2 * * *", "Europe/Berlin", None, utc(2024, 3, 1), utc(2024, 3, 31, 1, 5), 60)
    assert berlin.skipped and berlin.reason == "skipped tick 03:00 CEST: 5m late, past startingDeadlineSeconds=60"


def test_long_downtime_counts_at_most_max_missed_quickly() -> None:
    began = time.perf_counter()
    decision = due_tick("* * * * *", "Europe/Berlin", utc(2023, 1, 1), utc(2022, 1, 1),
                        utc(2024, 6, 1, 12, 0, 30), None)
    assert time.perf_counter() - began < 2  # a year and a half of minutes is not walked
    assert decision.tick == utc(2024, 6, 1, 12) and decision.next_tick == utc(2024, 6, 1, 12, 1)
    assert decision.missed == MAX_MISSED and decision.too_many_missed


def test_due_tick_after_fall_back_does_not_repeat_the_fixed_time() -> None:
    # 02:30 CEST ran; at 02:45 CET (01:45 UTC) 02:30 CET is not due again.
    decision = due_tick("30 2 * * *", "Europe/Berlin", utc(2024, 10, 27, 0, 30), utc(2024, 1, 1),
                        utc(2024, 10, 27, 1, 45), None)
    assert decision.tick is None and decision.next_tick == utc(2024, 10, 28, 1, 30)


def test_rare_schedules_look_far_back() -> None:
    decision = due_tick("0 0 29 2 *", "UTC", None, utc(2021, 1, 1), utc(2024, 6, 1), None)
    assert decision.tick == utc(2024, 2, 29) and decision.next_tick == utc(2028, 2, 29)


# ---------------------------------------------------------------------------------------------
# plan_schedule

CREATED = utc(2024, 1, 1)
TICK = utc(2024, 5, 1, 12, 10)
NOW = utc(2024, 5, 1, 12, 10, 3)
NAME = scheduled_run_name("report", TICK)


def spec(**cron: object) -> TaskSpec:
    return TaskSpec(image="example.com/report:1.0", **{"schedule": "*/5 * * * *", **cron})


def test_not_a_cron_task() -> None:
    decision = plan_schedule(TaskSpec(image="example.com/x:1"), "x", None, CREATED, NOW, [])
    assert decision == ScheduleDecision()


def test_invalid_schedule_or_zone_is_an_error_and_nothing_else() -> None:
    bad = plan_schedule(spec(schedule="*/5 * * *"), "report", TICK, CREATED, NOW, [])
    assert bad == ScheduleDecision(last_schedule_time=TICK, error=validate_schedule("*/5 * * *", "UTC"))
    zone = plan_schedule(spec(timezone="Berlin"), "report", None, CREATED, NOW, [])
    assert zone.error and "unknown time zone 'Berlin'" in zone.error and zone.requeue_at is None


def test_allow_creates_the_due_run() -> None:
    decision = plan_schedule(spec(), "report", utc(2024, 5, 1, 12, 5), CREATED, NOW, ["report-old"])
    assert decision == ScheduleDecision(create=TICK, run_name=NAME, last_schedule_time=TICK,
                                        requeue_at=utc(2024, 5, 1, 12, 15))
    assert NAME == f"report-{int(TICK.timestamp()) // 60}"


def test_names_are_deterministic_across_restarts() -> None:
    # An operator that restarts before recording the tick decides the same run, by name.
    first = plan_schedule(spec(), "report", utc(2024, 5, 1, 12, 5), CREATED, NOW, [])
    later = plan_schedule(spec(), "report", utc(2024, 5, 1, 12, 5), CREATED, NOW + timedelta(seconds=40), [NAME])
    assert first.run_name == later.run_name == NAME and later.create == TICK


def test_nothing_due_just_requeues_at_the_next_tick() -> None:
    decision = plan_schedule(spec(), "report", TICK, CREATED, NOW, [])
    assert decision == ScheduleDecision(last_schedule_time=TICK, requeue_at=utc(2024, 5, 1, 12, 15))


def test_forbid_skips_while_a_run_is_active_and_reports_once() -> None:
    decision = plan_schedule(spec(concurrency_policy="Forbid"), "report", utc(2024, 5, 1, 12, 5), CREATED, NOW,
                             ["report-28578605"])
    assert decision == ScheduleDecision(
        skip_reason="skipped tick 12:10 UTC because run report-28578605 is still active",
        last_schedule_time=TICK, requeue_at=utc(2024, 5, 1, 12, 15))
    # The tick is handled: the next reconcile (run still active, or finished) does not revisit it.
    again = plan_schedule(spec(concurrency_policy="Forbid"), "report", decision.last_schedule_time, CREATED,
                          NOW + timedelta(minutes=2), [])
    assert again.create is None and again.skip_reason is None


def test_forbid_names_every_active_run_in_the_schedules_zone() -> None:
    decision = plan_schedule(spec(concurrency_policy="Forbid", timezone="Europe/Berlin"), "report",
                             utc(2024, 5, 1, 12, 5), CREATED, NOW, ["report-b", "report-a"])
    assert decision.skip_reason == "skipped tick 14:10 CEST because runs report-a, report-b are still active"


def test_forbid_creates_when_nothing_is_active_or_only_this_ticks_run() -> None:
    for active in ([], [NAME]):
        decision = plan_schedule(spec(concurrency_policy="Forbid"), "report", utc(2024, 5, 1, 12, 5), CREATED, NOW,
                                 active)
        assert decision.create == TICK and decision.run_name == NAME and decision.skip_reason is None


def test_replace_cancels_the_active_runs_and_creates() -> None:
    decision = plan_schedule(spec(concurrency_policy="Replace"), "report", utc(2024, 5, 1, 12, 5), CREATED, NOW,
                             ["report-2", "report-1", NAME])
    assert decision.create == TICK and decision.run_name == NAME
    assert decision.cancel == ("report-1", "report-2")  # not this tick's own run
    allow = plan_schedule(spec(concurrency_policy="Allow"), "report", utc(2024, 5, 1, 12, 5), CREATED, NOW,
                          ["report-1"])
    assert allow.create == TICK and allow.cancel == ()


def test_missed_deadline_is_skipped_before_any_concurrency_policy() -> None:
    decision = plan_schedule(spec(concurrency_policy="Replace", starting_deadline_seconds=30), "report",
                             utc(2024, 5, 1, 12, 5), CREATED, utc(2024, 5, 1, 12, 11, 30), ["report-1"])
    assert decision == ScheduleDecision(
        skip_reason="skipped tick 12:10 UTC: 1m30s late, past startingDeadlineSeconds=30",
        last_schedule_time=TICK, requeue_at=utc(2024, 5, 1, 12, 15))


def test_downtime_creates_only_the_latest_tick_and_counts_the_rest() -> None:
    decision = plan_schedule(spec(schedule="* * * * *"), "report", utc(2024, 5, 1, 12, 0), CREATED,
                             utc(2024, 5, 1, 12, 10, 20), [])
    assert decision.create == TICK and decision.missed == 9 and decision.requeue_at == utc(2024, 5, 1, 12, 11)


def test_suspended_does_nothing_and_has_no_next_tick() -> None:
    last = utc(2024, 5, 1, 12, 5)
    decision = plan_schedule(spec(suspend=True, concurrency_policy="Replace"), "report", last, CREATED, NOW,
                             ["report-1"])
    assert decision == ScheduleDecision(last_schedule_time=last)


def test_resume_runs_the_latest_missed_tick_once_unless_past_the_deadline() -> None:
    last, resumed = utc(2024, 5, 1, 8, 0), utc(2024, 5, 1, 12, 10, 3)
    decision = plan_schedule(spec(), "report", last, CREATED, resumed, [])
    assert decision.create == TICK and decision.missed == 49
    decision = plan_schedule(spec(starting_deadline_seconds=2), "report", last, CREATED, resumed, [])
    assert decision.create is None and decision.skip_reason and "startingDeadlineSeconds=2" in decision.skip_reason


def test_daily_0230_in_berlin_on_dst_days() -> None:
    daily = spec(schedule="30 2 * * *", timezone="Europe/Berlin")
    spring = plan_schedule(daily, "nightly", utc(2024, 3, 30, 1, 30), CREATED, utc(2024, 3, 31, 1, 0, 5), [])
    assert spring.create == utc(2024, 3, 31, 1, 0) and spring.requeue_at == utc(2024, 4, 1, 0, 30)
    assert spring.run_name == scheduled_run_name("nightly", utc(2024, 3, 31, 1, 0))
    before = plan_schedule(daily, "nightly", utc(2024, 3, 30, 1, 30), CREATED, utc(2024, 3, 31, 0, 59), [])
    assert before.create is None and before.requeue_at == utc(2024, 3, 31, 1, 0)
    autumn = plan_schedule(daily, "nightly", utc(2024, 10, 26, 0, 30), CREATED, utc(2024, 10, 27, 0, 30, 1), [])
    assert autumn.create == utc(2024, 10, 27, 0, 30) and autumn.requeue_at == utc(2024, 10, 28, 1, 30)
    repeat = plan_schedule(daily, "nightly", autumn.last_schedule_time, CREATED, utc(2024, 10, 27, 1, 30, 1), [])
    assert repeat.create is None and repeat.skip_reason is None


# ---------------------------------------------------------------------------------------------
# runs_to_prune


def test_prunes_the_oldest_finished_runs_beyond_each_limit() -> None:
    runs = [
        ("s1", "Succeeded", utc(2024, 5, 1, 1)),
        ("s2", Phase.SUCCEEDED, utc(2024, 5, 1, 2)),
        ("s3", "Succeeded", utc(2024, 5, 1, 3)),
        ("s4", "Succeeded", utc(2024, 5, 1, 4)),
        ("f1", "Failed", utc(2024, 5, 1, 1, 30)),
        ("f2", "TimedOut", utc(2024, 5, 1, 2, 30)),
        ("f3", "Cancelled", utc(2024, 5, 1, 3, 30)),
        ("r1", "Running", None),
        ("q1", "Queued", None),
        ("x1", None, None),
    ]
    assert runs_to_prune(runs, successful_limit=3, failed_limit=1) == ["s1", "f1", "f2"]
    assert runs_to_prune(runs, successful_limit=0, failed_limit=0) == ["s1", "f1", "s2", "f2", "s3", "f3", "s4"]
    assert runs_to_prune(runs, successful_limit=10, failed_limit=10) == []


def test_finished_runs_without_completion_time_go_first() -> None:
    runs = [("a", "Succeeded", utc(2024, 5, 1)), ("b", "Succeeded", None), ("c", "Succeeded", utc(2024, 4, 1))]
    assert runs_to_prune(runs, successful_limit=1, failed_limit=1) == ["b", "c"]
