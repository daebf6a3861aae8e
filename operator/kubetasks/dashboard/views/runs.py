"""The runs list: its query (filters, newest first, paging that stays fast at 10,000 runs) and its page."""

from __future__ import annotations

import base64
import heapq
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from kubetasks.api.times import parse_time
from kubetasks.core.run_filter import PHASE_GROUPS, filter_words, run_test
from kubetasks.dashboard.views.common import (
    Body, FINISHED, PHASES, SortKey, UTC, _api_time, e, layout, _list, _meta, phase_of, run_seconds,
    runs_table, sort_key, _spec, _status)

DEFAULT_LIMIT, MAX_LIMIT = 50, 500


# The runs list's query ----------------------------------------------------------------------

@dataclass(frozen=True)
class RunQuery:
    task: str = ""
    phase: str = ""  # a phase, "active" or "finished"
    tag: str = ""
    namespace: str = ""
    after: datetime | None = None  # created at or after
    before: datetime | None = None  # created before
    limit: int = DEFAULT_LIMIT
    cursor: str = ""
    errors: tuple[str, ...] = ()

    def params(self, **changes: Any) -> dict[str, str]:
        """The query string's parameters (for links), with ``changes``."""
        values = {"task": self.task, "phase": self.phase, "tag": self.tag, "namespace": self.namespace,
                  "after": _api_time(self.after) if self.after else "",
                  "before": _api_time(self.before) if self.before else "",
                  "limit": str(self.limit) if self.limit != DEFAULT_LIMIT else "", "cursor": self.cursor}
        values.update(changes)
        return {k: v for k, v in values.items() if v}

    def url(self, path: str = "/", **changes: Any) -> str:
        params = self.params(**changes)
        return f"{path}?{urlencode(params)}" if params else path


def parse_query(params: Mapping[str, str]) -> RunQuery:
    """The runs list's query from a request's parameters; what cannot be read is named in ``errors``."""
    errors: list[str] = []
    times: dict[str, datetime | None] = {"after": None, "before": None}
    for name in times:
        text = (params.get(name) or "").strip()
        if text:
            try:
                times[name] = parse_time(text)  # a date, or a date and time (UTC unless it says)
            except ValueError:
                errors.append(f"{name}: not a date or time: {text[:40]!r}")
    limit = DEFAULT_LIMIT
    if params.get("limit"):
        try:
            limit = min(MAX_LIMIT, max(1, int(params["limit"])))
        except ValueError:
            errors.append("limit: not a number")
    return RunQuery(task=(params.get("task") or "").strip(), phase=(params.get("phase") or "").strip(),
                    tag=(params.get("tag") or "").strip(), namespace=(params.get("namespace") or "").strip(),
                    after=times["after"], before=times["before"], limit=limit, cursor=params.get("cursor") or "",
                    errors=tuple(errors))


def encode_cursor(direction: str, key: SortKey) -> str:
    """``direction`` "a": the page after (older than) ``key``; "b": the page before (newer)."""
    return direction + base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, SortKey] | None:
    if len(cursor) < 2 or cursor[0] not in "ab":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor[1:] + "=" * (-len(cursor[1:]) % 4))
        a, b, c = json.loads(raw)
        return cursor[0], (str(a), str(b), str(c))
    except (ValueError, TypeError):
        return None


def matches(query: RunQuery) -> Callable[[Body], bool] | None:
    """A predicate for runs that pass the query's filters (paging aside); None when all do."""
    return run_test(task=query.task, tag=query.tag, phase=query.phase, namespace=query.namespace,
                    after=query.after, before=query.before)


def _first(pair: tuple[SortKey, Body]) -> SortKey:
    return pair[0]


@dataclass
class RunPage:
    items: list[Body]
    total: int  # runs that pass the filters
    offset: int  # of them, how many come before this page
    next: str | None = None  # cursor of the following (older) page
    prev: str | None = None  # cursor of the preceding (newer) page
    errors: tuple[str, ...] = field(default_factory=tuple)


def select_runs(runs: Iterable[Body], query: RunQuery) -> RunPage:
    """One page of the runs that pass the query, newest first. One pass over the runs plus a
    bounded heap of the page (O(n log page)): a page of 10,000 runs takes a few milliseconds."""
    test = matches(query)
    cursor = decode_cursor(query.cursor)
    errors = query.errors + (() if cursor or not query.cursor else ("cursor: unreadable, showing the newest",))
    total = newer = 0
    candidates: list[tuple[SortKey, Body]] = []
    for run in runs:
        if test is not None and not test(run):
            continue
        total += 1
        key = sort_key(run)
        if cursor is None:
            candidates.append((key, run))
        elif cursor[0] == "a":
            if key < cursor[1]:
                candidates.append((key, run))
            else:
                newer += 1
        elif key > cursor[1]:
            candidates.append((key, run))
            newer += 1
    limit = query.limit
    if cursor is not None and cursor[0] == "b":  # the page just newer than the cursor
        chosen = sorted(heapq.nsmallest(limit, candidates, key=_first), key=_first, reverse=True)
        offset = newer - len(chosen)
    else:
        chosen = heapq.nlargest(limit, candidates, key=_first)
        offset = newer
    page = RunPage([b for _, b in chosen], total, offset, errors=errors)
    if chosen and offset + len(chosen) < total:
        page.next = encode_cursor("a", chosen[-1][0])
    if chosen and offset > 0:
        page.prev = encode_cursor("b", chosen[0][0])
    return page


def run_summary(run: Body, now: datetime) -> Body:
    """A run as the list's JSON shows it."""
    meta, spec, status = _meta(run), _spec(run), _status(run)
    return {"namespace": meta.get("namespace"), "name": meta.get("name"), "task": spec.get("taskRef"),
            "phase": phase_of(run), "attempt": status.get("attempt") or 0, "tags": _list(spec.get("tags")),
            "created": meta.get("creationTimestamp"), "seconds": run_seconds(run, now)}


def _errors(errors: Sequence[str]) -> str:
    if not errors:
        return ""
    return '<div class="errors" data-testid="query-errors">' + "".join(f"<p>{e(m)}</p>" for m in errors) + "</div>"


def _options(values: Iterable[str], chosen: str, blank: str) -> str:
    out = [f'<option value="">{e(blank)}</option>']
    for v in values:
        out.append(f'<option value="{e(v)}"{" selected" if v == chosen else ""}>{e(v)}</option>')
    return "".join(out)


def _time_input(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if moment else ""


def runs_page(page: RunPage, query: RunQuery, task_names: Iterable[str], namespaces: Iterable[str],
              now: datetime, scope: str = "") -> str:
    """``/``: the filter form, the live runs table and the pager."""
    tasks = sorted(set(task_names))
    form = (
        '<form class="filters" id="run-filters" method="get" action="/">'
        f'<label>Task <input name="task" id="filter-task" list="task-names" value="{e(query.task)}"></label>'
        f'<datalist id="task-names">{"".join(f"<option value={chr(34)}{e(t)}{chr(34)}>" for t in tasks)}</datalist>'
        f'<label>Phase <select name="phase" id="filter-phase">'
        f'{_options([*PHASE_GROUPS, *PHASES], query.phase, "any")}</select></label>'
        f'<label>Tag <input name="tag" id="filter-tag" value="{e(query.tag)}"></label>'
        f'<label>Namespace <select name="namespace" id="filter-namespace">'
        f'{_options(sorted(set(namespaces)), query.namespace, "all")}</select></label>'
        f'<label>Created after (UTC) <input type="datetime-local" name="after" id="filter-after" '
        f'value="{_time_input(query.after)}"></label>'
        f'<label>before <input type="datetime-local" name="before" id="filter-before" '
        f'value="{_time_input(query.before)}"></label>'
        + (f'<input type="hidden" name="limit" value="{query.limit}">' if query.limit != DEFAULT_LIMIT else "")
        + '<button type="submit" id="filter-apply">Filter</button> <a href="/" id="filter-clear">clear</a></form>')
    first, last = page.offset + 1, page.offset + len(page.items)
    shown = f"{first}–{last} of {page.total}" if page.items else f"0 of {page.total}"
    pager = ('<nav class="pager" id="pager">'
             + (f'<a href="{e(query.url("/", cursor=""))}" id="page-first">newest</a> ' if page.prev else "")
             + (f'<a href="{e(query.url("/", cursor=page.prev))}" id="page-prev">← newer</a> ' if page.prev else "")
             + f'<span id="runs-shown" data-testid="runs-shown">{e(shown)}</span>'
             + (f' <a href="{e(query.url("/", cursor=page.next))}" id="page-next">older →</a>' if page.next else "")
             + "</nav>")
    live = query.url("/api/runs")
    body = (f'<h1>Runs <span class="count" id="runs-total" data-testid="runs-total">{page.total}</span>'
            '<span id="live-status" class="live" title="updated every 2 s">live</span></h1>'
            + form + _cancel_matching(query, namespaces) + _errors(page.errors) + pager
            + runs_table(page.items, now, live_url=live))
    return layout("Runs", body, "runs", scope)


def _cancel_matching(query: RunQuery, namespaces: Iterable[str]) -> str:
    """A button that cancels every unfinished run the filter keeps, on every page, in one
    namespace (``kubetasks cancel --task T --tag G --phase P``). Only for a Task or a tag, as the
    CLI asks: one click never cancels a whole namespace."""
    names = sorted(set(namespaces))
    namespace = query.namespace or (names[0] if len(names) == 1 else "")
    if not namespace or not (query.task or query.tag) or query.phase == "finished" or query.phase in FINISHED:
        return ""
    fields = query.params(namespace=namespace, limit="", cursor="")
    what = filter_words(query.task, query.tag, query.phase)
    return (f'<form method="post" action="/actions/cancel-matching" data-action="cancel-matching" '
            f'id="cancel-matching-form" data-confirm="{e(f"Cancel every unfinished run {what} in {namespace}?")}">'
            + "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in fields.items())
            + f'<button type="submit" id="cancel-matching-button">Cancel every unfinished run {e(what)}</button></form>')


