"""API times for people: reading a timestamp as written (tolerantly: a page or a table must
survive any value) and kubectl's ages. Shared by the CLI's tables and the dashboard's pages."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def api_time(value: Any) -> datetime | None:
    """An API time (RFC 3339) as an aware datetime; None when absent or unreadable."""
    if not value or not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def human_age(since: str | datetime | None, now: datetime | None = None) -> str:
    """kubectl-style age: 45s, 3m12s, 2h5m, 4d3h; "<unknown>" without a time."""
    start = since if isinstance(since, datetime) else api_time(since)
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
