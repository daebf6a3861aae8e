"""Text the operator echoes into statuses and Events, made safe to show and bounded.

Messages quote what users wrote (a payload's keys, a cron expression, a container's message, an
API server's reply). A NUL, an escape sequence or a carriage return in them would be stored and
shown as is: by ``kubectl describe`` in a terminal, by the dashboard, in logs. Each control
character (but newline and tab) and each Unicode character that reorders or breaks lines is
written as its escape instead (``\\x00``, ``\\u202e``), so the text stays readable and says what
was there.
"""

from __future__ import annotations

import re

MESSAGE_LIMIT = 1024  # characters of a condition or error message: status stays small, Events readable

# C0 controls but \t and \n, DEL and C1 controls; line and paragraph separators; bidirectional
# embeddings, overrides and isolates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every unsafe character written as its escape; the rest as it was."""
    return _UNSAFE.sub(_escape, text)


def bounded(text: str, limit: int = MESSAGE_LIMIT, keep_end: bool = False) -> str:
    """Printable text cut to ``limit`` characters; ``keep_end`` for a traceback, whose end says the error."""
    text = printable(text)
    if len(text) <= limit:
        return text
    return "..." + text[-(limit - 3):] if keep_end else text[:limit - 3] + "..."
