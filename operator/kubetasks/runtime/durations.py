"""Durations as task code writes them: seconds (int or float), a timedelta, or "30s"/"1h30m"."""

from __future__ import annotations

import math
from datetime import timedelta

from kubetasks.api.durations import parse_duration

DurationLike = int | float | timedelta | str


def seconds_of(value: DurationLike) -> float:
    """Seconds in ``value``; raises ValueError for negative or unreadable durations."""
    if isinstance(value, bool):
        raise TypeError("a duration is seconds, a timedelta or a string like '30s', not a bool")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_duration(value.strip()).total_seconds()
    else:
        raise TypeError(f"a duration is seconds, a timedelta or a string like '30s', not {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and not negative: {value!r}")
    return seconds


def duration_string(value: DurationLike) -> str:
    """The API's form of a duration ("90s", "1500ms"), as TaskRun.spec.delay takes it."""
    if isinstance(value, str):
        seconds_of(value)  # validates
        return value.strip()
    seconds = seconds_of(value)
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"
