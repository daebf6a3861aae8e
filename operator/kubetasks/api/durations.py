"""Durations in the Go/Kubernetes style ("90s", "5m", "1h30m", "250ms").

Units are those of Go's time.ParseDuration, so the same strings work in CRD CEL rules (duration()).
"""

from __future__ import annotations

import re
from datetime import timedelta

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """Parses ``"1h30m"`` into a timedelta; raises ValueError with the offending text."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit (ms, s, m, h), e.g. '30s' or '1h30m'")
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text)))


def format_duration(delta: timedelta) -> str:
    """Formats a timedelta compactly, the way ``kubectl`` shows ages ("3m12s", "2h5m", "850ms")."""
    total = delta.total_seconds()
    if 0 < total < 1:
        return f"{round(total * 1000)}ms"
    seconds = int(round(total))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{seconds}s" if seconds else f"{minutes}m"
    return f"{seconds}s"
