"""What an API server's refusal says, in a line a person can act on: which field, and why.

The API server answers a refused write with a Status object (JSON): ``details.causes`` names each
field and what is wrong with it. Pasted whole into a run's message, that is a page of JSON with
the useful part inside; :func:`api_error_message` keeps the useful part.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kubetasks.core.echo import MESSAGE_LIMIT, bounded

MAX_CAUSES = 5
# "Invalid value: "<the value>": why": the value is what the user wrote (shown in full elsewhere),
# possibly long; the field and the why are what to act on.
_QUOTED_VALUE = re.compile(r'^Invalid value: "(?:[^"\\]|\\.)*": ')


def _status(body: Any) -> dict[str, Any] | None:
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    return body if isinstance(body, dict) and body.get("kind") == "Status" else None


def _cause(cause: Any) -> str | None:
    if not isinstance(cause, dict):
        return None
    why = _QUOTED_VALUE.sub("", str(cause.get("message") or cause.get("reason") or "").strip())
    field = str(cause.get("field") or "").strip()
    if not why:
        return None
    return f"{field}: {why}" if field else why


def api_error_message(body: Any, limit: int = MESSAGE_LIMIT) -> str:
    """One line from an API error's body (a Status as JSON text, bytes or a dict): each cause as
    ``field: why``; else the Status's message; else the text itself, first line. Printable and
    at most ``limit`` characters."""
    status = _status(body)
    if status is None:
        text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return bounded(lines[0] if lines else "no reason given", limit)
    details = status.get("details")
    causes = [c for c in map(_cause, details.get("causes") or []) if c] if isinstance(details, dict) else []
    if causes:
        more = len(causes) - MAX_CAUSES
        text = "; ".join(causes[:MAX_CAUSES]) + (f"; and {more} more" if more > 0 else "")
    else:
        text = str(status.get("message") or status.get("reason") or "no reason given")
    return bounded(" ".join(text.split()), limit)
