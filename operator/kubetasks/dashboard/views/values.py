"""Values cut before they are formatted, so no payload can make a page huge or slow."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


from kubetasks.dashboard.views.common import e

# What a page shows of a JSON value (a payload, a result) or a text (an error's traceback): the
# API server accepts JSON nested 10,000 deep, and indenting it is quadratic in its depth (a 20 KB
# payload pretty-prints to 200 MB), so the value is cut to these bounds *before* it is formatted.
SHOWN_DEPTH = 20
SHOWN_BYTES = 64 * 1024
CUT = "…"


@dataclass
class _Budget:
    left: int
    cut: bool = False


def clip(value: Any, max_depth: int = SHOWN_DEPTH, max_bytes: int = SHOWN_BYTES) -> tuple[Any, bool]:
    """A copy of a JSON value that nests at most ``max_depth`` containers and whose pretty-printed
    form (``indent=2``) is about ``max_bytes`` at most, and whether anything was cut. What is cut is
    marked in place: a container too deep becomes a string, a long string ends in ``…``, and a
    container that did not fit whole ends with an item (a list) or key (an object) ``…`` saying how
    many more there were. Recursion is bounded by ``max_depth``, whatever the input's depth."""
    budget = _Budget(max_bytes)
    return _clip(value, 0, max_depth, budget), budget.cut


def _json_len(value: Any) -> int:
    """Characters of a scalar as JSON (escapes included: a control character takes six)."""
    return len(json.dumps(value, ensure_ascii=False))


def _text(value: str, line: int, budget: _Budget) -> str:
    """As much of ``value`` as its JSON fits in what is left (the start, marked when cut)."""
    head = value[:max(0, budget.left)]  # at least a character of JSON each
    cost = _json_len(head) + line
    while head and cost > budget.left:  # escapes made it longer: shrink in proportion
        head = head[:len(head) * max(0, budget.left - line) // cost]
        cost = _json_len(head) + line
    if len(head) < len(value):
        budget.cut = True
        head += CUT
        cost += 1
    budget.left -= cost
    return head


def _more(budget: _Budget, line: int, text: str) -> str:
    budget.cut = True
    budget.left -= len(text) + line + 4
    return f"{CUT} {text}"


def _clip(value: Any, depth: int, max_depth: int, budget: _Budget) -> Any:
    line = 2 * depth + 2  # its line's indent and newline, and a comma
    if isinstance(value, (dict, list)):
        if depth >= max_depth:
            return _more(budget, line, f"nested deeper than {max_depth} levels")
        budget.left -= 2 * line  # the opening and closing lines
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for i, key in enumerate(sorted(value, key=str)):
                name = str(key)
                cost = _json_len(name) + 2 + line
                if budget.left <= 0 or cost > budget.left:
                    out[CUT] = _more(budget, line, f"{len(value) - i} more keys")[2:]
                    break
                budget.left -= cost - line  # the value below pays for the line
                out[name] = _clip(value[key], depth + 1, max_depth, budget)
            return out
        items: list[Any] = []
        for i, item in enumerate(value):
            if budget.left <= 0:
                items.append(_more(budget, line, f"{len(value) - i} more items"))
                break
            items.append(_clip(item, depth + 1, max_depth, budget))
        return items
    if isinstance(value, str):
        return _text(value, line, budget)
    budget.left -= _json_len(value) + line
    return value


def clip_text(text: str, max_bytes: int = SHOWN_BYTES) -> tuple[str, bool]:
    """The start of ``text`` in at most ``max_bytes`` characters, and whether it was cut."""
    return (text, False) if len(text) <= max_bytes else (text[:max_bytes] + CUT, True)


def cut_note(what: str) -> str:
    return (f'<p class="cut" data-testid="value-cut">{e(what)} is shown cut (at most {SHOWN_DEPTH} levels deep '
            f'and about {SHOWN_BYTES // 1024} KiB): <code>kubectl get -o json</code> shows it whole.</p>')


def _text_block(text: Any, what: str) -> str:
    shown, cut = clip_text(str(text))
    return f'<pre class="log">{e(shown)}</pre>' + (cut_note(what) if cut else "")


def pretty_json(value: Any, what: str = "The value") -> str:
    """A JSON value, indented, cut to the shown bounds first (with a note when it was cut)."""
    shown, cut = clip(value)
    text = json.dumps(shown, indent=2, sort_keys=True, ensure_ascii=False)
    return f'<pre class="json">{e(text)}</pre>' + (cut_note(what) if cut else "")


