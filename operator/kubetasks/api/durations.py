"""Durations in the Go/Kubernetes style ("90s", "5m", "1h30m", "250ms").

Units are those of Go's time.ParseDuration, so the same strings work in CRD CEL rules (duration()).
"""

from __future__ import annotations

import re
from datetime import timedelta

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
MAX_DURATION_LENGTH = 64
# Durations that CEL's duration() converts without overflowing Go's time.Duration (about
# 2562047h): at most 8 parts, each below 277778h (99999h, 9999999m, 999999999s, 999999999999ms),
# so at most 2.3 million hours in all. Admission rules test it before calling duration(), which
# would otherwise fail with "type conversion error" instead of their message. Any duration up
# to a year can be written so. RE2 (the API server's CEL and google-re2 alike).
DURATION_CONVERTIBLE = (r"^([0-9]{1,5}(\.[0-9]+)?h|[0-9]{1,7}(\.[0-9]+)?m|[0-9]{1,9}(\.[0-9]+)?s"
                        r"|[0-9]{1,12}(\.[0-9]+)?ms){1,8}$")
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
