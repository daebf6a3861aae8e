"""Times, read and written in one place: the API's timestamps (RFC 3339), the times of the
runtime's reports and checkpoints, a Lease's, a filter typed in the dashboard; and kubectl's
ages for people. ``parse_time`` is the one parser; ``api_time`` is its tolerant form for what
must survive any value (a page, a table, a task's report)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 (or ISO 8601) time, or a datetime, as an aware datetime: UTC when it names no
    zone. None when absent; ValueError when present but not a time."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value.strip())  # Python 3.11 reads "Z" and dates alone
    else:
        raise ValueError(f"not a time: {value!r}")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def api_time(value: Any) -> datetime | None:
    """``parse_time``, with None for what is not a time."""
    try:
        return parse_time(value)
    except ValueError:
        return None


def format_time(moment: datetime, timespec: Literal["seconds", "milliseconds", "microseconds"] = "milliseconds") -> str:
    """RFC 3339 in UTC, as Kubernetes writes times ("2026-01-01T00:00:00.000Z"). A Lease's
    MicroTime needs "microseconds": the API server reads exactly six fractional digits there."""
    return moment.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def human_age(since: str | datetime | None, now: datetime | None = None) -> str:
    """kubectl-style age: 45s, 3m12s, 2h5m, 4d3h; "<unknown>" without a time."""
    start = api_time(since)
    if start is None:
        return "<unknown>"
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - start).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{s}s" if minutes < 10 and s else f"{minutes}m"
    hours, m = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{m}m" if m else f"{hours}h"
    days, h = divmod(hours, 24)
    return f"{days}d{h}h" if h and days < 10 else f"{days}d"
