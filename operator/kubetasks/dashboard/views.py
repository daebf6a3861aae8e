"""The dashboard's pages, as pure functions: run and Task bodies (dicts, as the operator's stores
and the API hold them) in, HTML out; plus the runs list's query (filters, newest first, paging).

Everything shown is escaped (names, tags, payloads, messages and logs are user input). Odd data
(no status, a phase kubetasks does not know, unparseable times) is shown as it is, never raised.
The pages' hooks for tests and scripts are ``id`` and ``data-testid`` attributes (see docs/dashboard.md).
"""

from __future__ import annotations

import base64
import heapq
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from html import escape
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kubetasks.api.durations import format_duration
from kubetasks.api.taskrun import Phase
from kubetasks.core.times import api_time as when, human_age  # read and shown as the CLI does

Body = dict[str, Any]
UTC = timezone.utc
PHASES = tuple(p.value for p in Phase)
FINISHED = frozenset(p.value for p in Phase if p.finished)
FAILED = frozenset((Phase.FAILED.value, Phase.TIMED_OUT.value))
WAITING = frozenset((Phase.PENDING.value, Phase.DELAYED.value, Phase.QUEUED.value))
PHASE_GROUPS = ("active", "finished")  # phase filter values besides the phases themselves
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
RECENT_RUNS = 100  # a Task's success rate is over its newest this many finished runs
CHART_RUNS = 30  # bars in a Task's chart of recent durations
NEXT_TICKS = 5


def e(value: Any) -> str:
    """Escaped text (None: empty)."""
    return "" if value is None else escape(str(value), quote=True)


def _api_time(moment: datetime) -> str:
    """The API's own time format, so creationTimestamps compare as strings (no parsing per run)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(body: Body) -> Body:
    meta = body.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _spec(body: Body) -> Body:
    spec = body.get("spec")
    return spec if isinstance(spec, dict) else {}


def _status(body: Body) -> Body:
    status = body.get("status")
    return status if isinstance(status, dict) else {}


def _list(value: Any) -> list[Any]:
    """A list field as a list, whatever was written there."""
    return value if isinstance(value, list) else []


def phase_of(run: Body) -> str:
    return str(_status(run).get("phase") or Phase.PENDING.value)


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    return format_duration(timedelta(seconds=round(seconds)))


def run_seconds(run: Body, now: datetime) -> float | None:
    """Wall time from the run's first start to its completion (to now while it runs)."""
    status = _status(run)
    start = when(status.get("startTime"))
    if start is None:
        return None
    end = when(status.get("completionTime")) or (None if phase_of(run) in FINISHED else now)
    return None if end is None else max(0.0, (end - start).total_seconds())


def condition(body: Body, type_: str) -> Body | None:
    for c in _list(_status(body).get("conditions")):
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


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


def parse_time_param(text: str) -> datetime:
    """A date, or a date and time (UTC unless it says otherwise), as typed in a filter."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_query(params: Mapping[str, str]) -> RunQuery:
    """The runs list's query from a request's parameters; what cannot be read is named in ``errors``."""
    errors: list[str] = []
    times: dict[str, datetime | None] = {"after": None, "before": None}
    for name in times:
        text = (params.get(name) or "").strip()
        if text:
            try:
                times[name] = parse_time_param(text)
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


SortKey = tuple[str, str, str]  # (creationTimestamp, namespace, name): newest first is descending


def sort_key(run: Body) -> SortKey:
    meta = _meta(run)
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("namespace") or ""), str(meta.get("name") or ""))



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
    after = _api_time(query.after) if query.after else None
    before = _api_time(query.before) if query.before else None
    phase = query.phase
    if not (query.namespace or query.task or phase or query.tag or after or before):
        return None

    def test(run: Body) -> bool:
        meta = _meta(run)
        if query.namespace and meta.get("namespace") != query.namespace:
            return False
        spec = _spec(run)
        if query.task and spec.get("taskRef") != query.task:
            return False
        if phase:
            current = phase_of(run)
            if phase == "active":
                if current in FINISHED:
                    return False
            elif phase == "finished":
                if current not in FINISHED:
                    return False
            elif current != phase:
                return False
        if query.tag and query.tag not in _list(spec.get("tags")):
            return False
        created = str(meta.get("creationTimestamp") or "")
        if after and created < after:
            return False
        if before and created >= before:
            return False
        return True
    return test


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


# HTML pieces ---------------------------------------------------------------------------------

def run_url(namespace: Any, name: Any) -> str:
    return f"/runs/{quote(str(namespace), safe='')}/{quote(str(name), safe='')}"


def task_url(namespace: Any, name: Any) -> str:
    return f"/tasks/{quote(str(namespace), safe='')}/{quote(str(name), safe='')}"


_PHASE_CLASS = {"Succeeded": "ok", "Failed": "bad", "TimedOut": "bad", "Cancelled": "warn", "Duplicate": "dim",
                "Running": "run", "Retrying": "warn", "Sleeping": "run", "Pending": "wait", "Delayed": "wait",
                "Queued": "wait"}


def phase_badge(phase: str) -> str:
    css = _PHASE_CLASS.get(phase, "unknown")
    return f'<span class="phase {css}" data-testid="phase" data-phase="{e(phase)}">{e(phase)}</span>'


def time_cell(value: Any, now: datetime) -> str:
    moment = when(value)
    if moment is None:
        return '<span class="dim">-</span>'
    return f'<time datetime="{e(value)}" title="{e(_api_time(moment))}">{e(human_age(moment, now))} ago</time>'


def _abs_time(value: Any) -> str:
    moment = when(value)
    return e(_api_time(moment).replace("T", " ").replace("Z", " UTC")) if moment else '<span class="dim">-</span>'


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


def _scalar_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value) + 2
    return len(json.dumps(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else 5


def _clip(value: Any, depth: int, max_depth: int, budget: _Budget) -> Any:
    line = 2 * depth + 2  # its line's indent and newline, and a comma
    if isinstance(value, (dict, list)):
        if depth >= max_depth:
            budget.cut = True
            budget.left -= line + 40
            return f"{CUT} nested deeper than {max_depth} levels"
        budget.left -= 2 * line  # the opening and closing lines
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for i, key in enumerate(sorted(value, key=str)):
                if budget.left <= 0:
                    budget.cut = True
                    out[CUT] = f"{len(value) - i} more keys"
                    break
                name = str(key)[:max(16, budget.left)]
                budget.left -= len(name) + 4
                out[name] = _clip(value[key], depth + 1, max_depth, budget)
            return out
        items: list[Any] = []
        for i, item in enumerate(value):
            if budget.left <= 0:
                budget.cut = True
                items.append(f"{CUT} {len(value) - i} more items")
                break
            items.append(_clip(item, depth + 1, max_depth, budget))
        return items
    if isinstance(value, str) and len(value) + line > budget.left:
        budget.cut = True
        kept = value[:max(0, budget.left - line)]
        budget.left -= len(kept) + line + 2
        return kept + CUT
    budget.left -= _scalar_bytes(value) + line
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


def run_rows(runs: Sequence[Body], now: datetime, show_task: bool = True) -> str:
    """The runs table's body (the live list replaces it)."""
    if not runs:
        cols = 8 if show_task else 7
        return f'<tr class="empty" data-testid="no-runs"><td colspan="{cols}">No runs.</td></tr>'
    out = []
    for run in runs:
        meta, spec, status = _meta(run), _spec(run), _status(run)
        ns, name = meta.get("namespace") or "", meta.get("name") or ""
        tags = "".join(f'<span class="tag">{e(t)}</span>' for t in _list(spec.get("tags")) if isinstance(t, str))
        task = spec.get("taskRef") or ""
        waiting = condition(run, "Succeeded")
        note = (waiting or {}).get("reason") if phase_of(run) not in FINISHED else ""
        cells = [f'<td><a href="{e(run_url(ns, name))}" data-testid="run-link">{e(name)}</a>'
                 f'<div class="sub">{e(ns)}</div></td>']
        if show_task:
            cells.append(f'<td><a href="{e(task_url(ns, task))}">{e(task)}</a></td>')
        cells += [f"<td>{phase_badge(phase_of(run))}"
                  + (f' <span class="sub" data-testid="run-reason">{e(note)}</span>' if note else "") + "</td>",
                  f'<td class="num">{e(status.get("attempt") or 0)}</td>', f"<td>{tags}</td>",
                  f"<td>{time_cell(meta.get('creationTimestamp'), now)}</td>",
                  f'<td class="num">{e(status.get("duration") or seconds_text(run_seconds(run, now)))}</td>']
        out.append(f'<tr data-testid="run-row" data-run="{e(ns)}/{e(name)}" data-phase="{e(phase_of(run))}">'
                   + "".join(cells) + "</tr>")
    return "\n".join(out)


RUN_HEADERS = ("Run", "Task", "Phase", "Attempt", "Tags", "Created", "Duration")


def runs_table(runs: Sequence[Body], now: datetime, show_task: bool = True, live_url: str = "") -> str:
    heads = [h for h in RUN_HEADERS if show_task or h != "Task"]
    live = f' data-live-url="{e(live_url)}"' if live_url else ""
    return (f'<table class="runs" id="runs-table"{live}><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in heads)
            + f'</tr></thead><tbody id="runs-body">{run_rows(runs, now, show_task)}</tbody></table>')


def layout(title: str, body: str, active: str = "", scope: str = "") -> str:
    """A page: the header (navigation, what the lists cover, an action's result) and ``body``."""
    nav = "".join(f'<a href="{href}" class="{"active" if active == key else ""}" data-testid="nav-{key}">{label}</a>'
                  for key, href, label in (("runs", "/", "Runs"), ("tasks", "/tasks", "Tasks")))
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)} · kubetasks</title><link rel=\"stylesheet\" href=\"/static/dashboard.css\">"
            "<script src=\"/static/dashboard.js\" defer></script></head><body>"
            f"<header><a class=\"brand\" href=\"/\">kubetasks</a><nav>{nav}</nav>"
            + (f'<span id="scope" class="scope" data-testid="scope">{e(scope)}</span>' if scope else "")
            + "<span id=\"action-result\" role=\"status\" hidden></span></header>"
            f"<main>{body}</main></body></html>")


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
            + form + _errors(page.errors) + pager + runs_table(page.items, now, live_url=live))
    return layout("Runs", body, "runs", scope)


# A run's page ----------------------------------------------------------------------------------

@dataclass
class AttemptLog:
    text: str | None  # None: no log to show
    source: str  # where it came from, or why there is none ("pod hello-1-x", "kept after the pod", ...)
    truncated: bool = False


@dataclass
class RunDetails:
    """What a run's page shows beyond the run itself (read by the server)."""

    task: Body | None = None
    events: list[Body] = field(default_factory=list)
    logs: dict[int, AttemptLog] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what could not be read


def attempt_machine(run: Body, task: Body | None, attempt: int) -> str:
    """CPU/memory of an attempt, as the operator chose it (the OOM machine after an OOMKilled attempt)."""
    from kubetasks.api.machines import resolve_machine
    from kubetasks.api.task import Task
    from kubetasks.api.taskrun import TaskRun
    from kubetasks.core.render import machine_for_attempt

    previous = next((a.get("reason") for a in _list(_status(run).get("attempts"))
                     if isinstance(a, dict) and a.get("attempt") == attempt - 1), None)
    try:  # the specs only: a status kubetasks would not write (an unknown phase) does not matter here
        model = TaskRun.model_validate({"spec": _spec(run)})
        task_model = Task.model_validate({"spec": _spec(task)}) if task else None
        machine = machine_for_attempt(model, task_model, previous) if task_model else model.spec.machine
        size = resolve_machine(machine, task_model.spec.machine if task_model else None)
    except Exception:  # odd data: the page still shows the rest
        return "?"
    return f"{size.cpu} CPU / {size.memory}"


def _timeline(run: Body, details: RunDetails, now: datetime) -> str:
    status = _status(run)
    attempts = [a for a in _list(status.get("attempts")) if isinstance(a, dict)]
    if not attempts:
        return '<p class="empty" data-testid="no-attempts">No attempts yet.</p>'
    starts = [when(a.get("startTime")) for a in attempts]
    ends = [when(a.get("completionTime")) for a in attempts]
    origin = min([t for t in starts if t] + [when(_meta(run).get("creationTimestamp")) or now])
    finish = max([t for t in ends if t] + [t for t in starts if t] + [origin]
                 + ([] if phase_of(run) in FINISHED else [now]))
    span = max((finish - origin).total_seconds(), 1e-3)
    bars, rows = [], []
    for a, start, end in zip(attempts, starts, ends):
        n = a.get("attempt")
        reason = a.get("reason") or ("running" if end is None else "")
        seconds = ((end or now) - start).total_seconds() if start else None
        left = ((start - origin).total_seconds() / span * 100) if start else 0
        width = max(0.5, (seconds or 0) / span * 100)
        css = "ok" if reason == "Succeeded" else "run" if end is None else "bad"
        bars.append(f'<div class="bar {css}" style="left:{left:.2f}%;width:{min(width, 100 - left):.2f}%" '
                    f'title="attempt {e(n)}: {e(reason)} {e(seconds_text(seconds))}">#{e(n)}</div>')
        exit_code = a.get("exitCode")
        rows.append(
            f'<tr data-testid="attempt-row" data-attempt="{e(n)}"><td class="num">#{e(n)}</td>'
            f'<td>{e(attempt_machine(run, details.task, int(n) if isinstance(n, int) else 0))}</td>'
            f'<td>{_abs_time(a.get("startTime"))}</td><td class="num">{e(seconds_text(seconds))}</td>'
            f'<td><span class="reason {css}">{e(reason)}</span></td>'
            f'<td class="num">{"" if exit_code is None else e(exit_code)}</td>'
            f'<td class="msg">{e(a.get("message") or "")}</td><td class="sub">{e(a.get("jobName") or "")}</td></tr>')
    return (f'<div class="timeline" id="attempts-timeline">{"".join(bars)}</div>'
            '<table id="attempts"><thead><tr><th>#</th><th>Machine</th><th>Started</th><th>Duration</th>'
            '<th>Exit reason</th><th>Exit code</th><th>Message</th><th>Job</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _steps(run: Body) -> str:
    steps = [s for s in _list(_status(run).get("steps")) if isinstance(s, dict)]
    if not steps:
        return '<p class="empty" data-testid="no-steps">No steps recorded.</p>'
    longest = max([s.get("durationSeconds") or 0 for s in steps if isinstance(s.get("durationSeconds"), (int, float))]
                  + [1e-3])
    rows = []
    for s in steps:
        secs = s.get("durationSeconds")
        width = (secs / longest * 100) if isinstance(secs, (int, float)) else 0
        rows.append(f'<tr data-testid="step-row" data-step="{e(s.get("name"))}"><td>{e(s.get("name"))}</td>'
                    f'<td class="num">{e(s.get("attempt"))}</td>'
                    f'<td class="num">{e(seconds_text(secs if isinstance(secs, (int, float)) else None))}</td>'
                    f'<td class="barcell"><div class="hbar" style="width:{width:.1f}%"></div></td>'
                    f'<td>{_abs_time(s.get("completedAt"))}</td></tr>')
    return ('<table id="steps"><thead><tr><th>Step</th><th>Attempt</th><th>Duration</th><th></th><th>Completed</th>'
            '</tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def waiting_reason(run: Body, now: datetime) -> str | None:
    """Why an unfinished run is not running now, in words; None when finished or running plainly."""
    phase, status, spec = phase_of(run), _status(run), _spec(run)
    if phase in FINISHED:
        return None
    parts = []
    cond = condition(run, "Succeeded")
    if cond and (cond.get("reason") or cond.get("message")):
        parts.append(f"{cond.get('reason') or ''}: {cond.get('message') or ''}".strip(": "))
    for key, label in (("nextRetryAt", "next attempt"), ("wakeAt", "wakes")):
        at = when(status.get(key))
        if at:
            parts.append(f"{label} at {_api_time(at)} (in {human_age(now, at)})" if at > now
                         else f"{label} at {_api_time(at)}")
    if spec.get("cancel"):
        parts.append("cancel requested")
    return "; ".join(parts) or None


def _events(events: Sequence[Body], now: datetime) -> str:
    if not events:
        return '<p class="empty" data-testid="no-events">No Events (they expire after an hour).</p>'
    ordered = sorted(events, key=lambda ev: str(ev.get("lastTimestamp") or ev.get("eventTime")
                                              or _meta(ev).get("creationTimestamp") or ""))
    rows = [f'<tr data-testid="event-row" class="{"bad" if ev.get("type") == "Warning" else ""}">'
            f'<td>{e(ev.get("type"))}</td><td>{e(ev.get("reason"))}</td><td class="msg">{e(ev.get("message"))}</td>'
            f'<td class="num">{e(ev.get("count") or 1)}</td>'
            f'<td>{time_cell(ev.get("lastTimestamp") or ev.get("eventTime"), now)}</td></tr>' for ev in ordered]
    return ('<table id="events"><thead><tr><th>Type</th><th>Reason</th><th>Message</th><th>Count</th><th>Last</th>'
            '</tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def _logs(run: Body, details: RunDetails) -> str:
    attempts = sorted(details.logs)
    if not attempts:
        return '<p class="empty" data-testid="no-logs">No logs: no attempt has run.</p>'
    meta = _meta(run)
    out = []
    for n in attempts:
        log = details.logs[n]
        url = f"{run_url(meta.get('namespace'), meta.get('name'))}/attempts/{n}/log"
        body = (f'<pre class="log">{e(log.text)}</pre>' if log.text else '<p class="empty">(empty)</p>'
                if log.text is not None else f'<p class="empty">{e(log.source)}</p>')
        note = f'{e(log.source)}{", truncated: the end is kept" if log.truncated else ""}'
        out.append(f'<details id="log-{n}" data-testid="attempt-log" data-attempt="{n}"'
                   f'{" open" if n == attempts[-1] else ""}><summary>Attempt #{n} <span class="sub">{note}</span> '
                   f'<a href="{e(url)}">raw</a></summary>{body}</details>')
    return "".join(out)


def run_page(run: Body, details: RunDetails, now: datetime) -> str:
    """``/runs/<ns>/<name>``."""
    meta, spec, status = _meta(run), _spec(run), _status(run)
    ns, name, task = meta.get("namespace") or "", meta.get("name") or "", spec.get("taskRef") or ""
    phase = phase_of(run)
    facts = [("Task", f'<a href="{e(task_url(ns, task))}" data-testid="run-task">{e(task)}</a>'),
             ("Namespace", e(ns)), ("Phase", phase_badge(phase)), ("Attempt", e(status.get("attempt") or 0)),
             ("Created", _abs_time(meta.get("creationTimestamp"))), ("Started", _abs_time(status.get("startTime"))),
             ("Completed", _abs_time(status.get("completionTime"))),
             ("Duration", e(status.get("duration") or seconds_text(run_seconds(run, now))))]
    if _list(spec.get("tags")):
        facts.append(("Tags", "".join(f'<span class="tag">{e(t)}</span>' for t in spec["tags"])))
    for key, label in (("idempotencyKey", "Idempotency key"), ("delay", "Delay"), ("notBefore", "Not before")):
        if spec.get(key):
            facts.append((label, e(spec[key])))
    for key, label, value in (("parentRun", "Parent run", spec.get("parentRun")),
                              ("duplicateOf", "Duplicate of", status.get("duplicateOf"))):
        if value:
            facts.append((label, f'<a href="{e(run_url(ns, value))}">{e(value)}</a>'))
    waiting = waiting_reason(run, now)
    cancel = ""
    if phase not in FINISHED and not spec.get("cancel"):
        cancel = ('<form method="post" action="/actions/cancel" data-action="cancel" id="cancel-form">'
                  f'<input type="hidden" name="namespace" value="{e(ns)}">'
                  f'<input type="hidden" name="name" value="{e(name)}">'
                  '<button type="submit" class="danger" id="cancel-button">Cancel run</button></form>')
    error = status.get("error") if isinstance(status.get("error"), dict) else None
    # While the run is not finished its page follows it: the script fetches the page again every
    # few seconds and swaps in the [data-live] parts (it reloads once the run has finished).
    live = f' data-live="{"finished" if phase in FINISHED else "unfinished"}"'
    parts = [f'<div id="run-head"{live}><h1><span id="run-name">{e(name)}</span> {phase_badge(phase)}</h1></div>',
             cancel, f'<div id="run-body"{live}>',
             (f'<p class="waiting" id="waiting-reason" data-testid="waiting-reason">{e(waiting)}</p>'
              if waiting else ""),
             '<dl class="facts" id="run-facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>",
             "<h2>Attempts</h2>", _timeline(run, details, now), "<h2>Steps</h2>", _steps(run)]
    parts.append('<div class="cols"><section id="payload"><h2>Payload</h2>'
                 + (pretty_json(spec["payload"], "The payload") if spec.get("payload") is not None
                    else '<p class="empty">No payload.</p>')
                 + '</section><section id="result"><h2>Result</h2>'
                 + (pretty_json(status["result"], "The result") if status.get("result") is not None
                    else '<p class="empty">No result.</p>') + "</section></div>")
    if error:
        parts.append(f'<section id="error" class="error"><h2>Error</h2><p><b>{e(error.get("type") or "")}</b> '
                     f'<span class="msg">{e(clip_text(str(error.get("message") or ""))[0])}</span></p>'
                     + (_text_block(error["traceback"], "The traceback") if error.get("traceback") else "")
                     + "</section>")
    parts += ['<h2>Logs</h2><div id="logs">', _logs(run, details), "</div>",
              '<h2>Events</h2>', _events(details.events, now)]
    if details.notes:
        parts.append('<div class="notes" id="read-notes">' + "".join(f"<p>{e(n)}</p>" for n in details.notes)
                     + "</div>")
    parts.append("</div>")
    return layout(f"{name}", "".join(parts), "runs")


def not_found_page(what: str) -> str:
    return layout("Not found", f'<h1>Not found</h1><p class="empty" data-testid="not-found">{e(what)}</p>')


# Tasks -------------------------------------------------------------------------------------

@dataclass
class TaskSummary:
    runs: int
    active: int
    last_run: Body | None
    success_rate: float | None  # of the newest RECENT_RUNS finished runs that succeeded or failed
    rated: int  # how many runs the rate is over
    next_ticks: list[datetime]
    schedule_error: str | None = None
    waiting: Body | None = None  # the run that waits longest to start (Pending, Delayed, Queued)


def task_summary(task: Body, runs: Sequence[Body], now: datetime, ticks: int = NEXT_TICKS) -> TaskSummary:
    from kubetasks.core.schedule import next_tick, validate_schedule

    spec = _spec(task)
    newest = sorted(runs, key=sort_key, reverse=True)
    finished = [phase_of(r) for r in newest if phase_of(r) in FINISHED][:RECENT_RUNS]
    decided = [p for p in finished if p == Phase.SUCCEEDED.value or p in FAILED]
    rate = sum(1 for p in decided if p == Phase.SUCCEEDED.value) / len(decided) if decided else None
    upcoming: list[datetime] = []
    error = None
    expr = spec.get("schedule")
    if isinstance(expr, str) and expr:
        zone = str(spec.get("timezone") or "UTC")
        error = validate_schedule(expr, zone)
        if not error and not spec.get("suspend"):
            moment = now
            for _ in range(ticks):
                try:
                    moment = next_tick(expr, zone, moment)
                except ValueError as exc:
                    error = str(exc)
                    break
                upcoming.append(moment)
    waiting = [r for r in newest if phase_of(r) in WAITING]
    return TaskSummary(runs=len(runs), active=sum(1 for r in runs if phase_of(r) not in FINISHED),
                       last_run=newest[0] if newest else None, success_rate=rate, rated=len(decided),
                       next_ticks=upcoming, schedule_error=error,
                       waiting=min(waiting, key=lambda r: str(starts_at(r) or ""), default=None))


def starts_at(run: Body) -> datetime | None:
    """When a waiting run may start: its notBefore, or its creation plus its delay (as the operator
    reads them, core.plan.not_before); None when it may start now."""
    from kubetasks.api.taskrun import TaskRun
    from kubetasks.core.plan import not_before

    try:
        return not_before(TaskRun.model_validate({"metadata": _meta(run), "spec": _spec(run)}))
    except Exception:  # odd data: shown as "now"
        return None


def _zone(name: Any) -> ZoneInfo | None:
    """The schedule's time zone, to show ticks on its wall clock too (None for UTC or unknown)."""
    if not isinstance(name, str) or name in ("", "UTC"):
        return None
    try:
        return ZoneInfo(name)
    except (ValueError, OSError, ZoneInfoNotFoundError):
        return None


def _rate(summary: TaskSummary) -> str:
    if summary.success_rate is None:
        return '<span class="dim">-</span>'
    return f'{summary.success_rate * 100:.0f}% <span class="sub">of {summary.rated}</span>'


def _machine(spec: Body) -> str:
    machine = spec.get("machine")
    if not isinstance(machine, dict):
        return "small-1x"
    return " ".join(f"{k} {v}" for k, v in machine.items() if isinstance(v, (str, int, float))) or "small-1x"


def tasks_page(tasks: Sequence[tuple[Body, TaskSummary]], now: datetime, scope: str = "") -> str:
    """``/tasks``."""
    if not tasks:
        body = '<h1>Tasks</h1><p class="empty" data-testid="no-tasks">No Tasks.</p>'
        return layout("Tasks", body, "tasks", scope)
    rows = []
    for task, s in sorted(tasks, key=lambda ts: (str(_meta(ts[0]).get("namespace")), str(_meta(ts[0]).get("name")))):
        meta, spec = _meta(task), _spec(task)
        ns, name = meta.get("namespace") or "", meta.get("name") or ""
        last = _meta(s.last_run).get("creationTimestamp") if s.last_run else None
        schedule = e(spec.get("schedule") or "")
        if spec.get("schedule") and spec.get("suspend"):
            schedule += ' <span class="sub">suspended</span>'
        ready = condition(task, "Ready")
        rows.append(
            f'<tr data-testid="task-row" data-task="{e(ns)}/{e(name)}">'
            f'<td><a href="{e(task_url(ns, name))}" data-testid="task-link">{e(name)}</a>'
            f'<div class="sub">{e(ns)}</div></td><td>{e(_machine(spec))}</td><td>{schedule}</td>'
            f'<td>{_abs_time(_api_time(s.next_ticks[0])) if s.next_ticks else "-"}</td>'
            f'<td>{time_cell(last, now)}</td><td class="num">{s.runs}</td><td class="num">{s.active}</td>'
            f'<td>{_rate(s)}</td>'
            f'<td>{e((ready or {}).get("reason") or "")}</td></tr>')
    body = ('<h1>Tasks <span class="count">' + str(len(tasks)) + '</span></h1><table id="tasks"><thead><tr>'
            "<th>Task</th><th>Machine</th><th>Schedule</th><th>Next tick</th><th>Last run</th><th>Runs</th>"
            "<th>Active</th><th>Success</th><th>Ready</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    return layout("Tasks", body, "tasks", scope)


def durations_chart(runs: Sequence[Body], now: datetime, count: int = CHART_RUNS) -> str:
    """An inline SVG bar chart of the durations of the newest ``count`` finished runs (oldest left)."""
    done = [r for r in sorted(runs, key=sort_key, reverse=True) if phase_of(r) in FINISHED]
    timed = [(r, run_seconds(r, now)) for r in done]
    bars = [(r, s) for r, s in timed if s is not None][:count][::-1]
    if not bars:
        return '<p class="empty" data-testid="no-durations">No finished runs with a duration yet.</p>'
    width, height, gap = 600, 120, 2
    longest = max(s for _, s in bars) or 1e-3
    step = min(width / len(bars), 40.0)  # a few runs make a few narrow bars, not a wall
    shapes = []
    for i, (r, s) in enumerate(bars):
        h = max(1.0, s / longest * (height - 14))
        css = _PHASE_CLASS.get(phase_of(r), "unknown")
        name = _meta(r).get("name")
        shapes.append(f'<rect class="{css}" x="{i * step + gap / 2:.1f}" y="{height - h:.1f}" '
                      f'width="{max(step - gap, 1):.1f}" height="{h:.1f}" data-testid="duration-bar">'
                      f'<title>{e(name)}: {e(phase_of(r))}, {e(seconds_text(s))}</title></rect>')
    return (f'<figure class="chart"><svg id="durations-chart" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="durations of the last {len(bars)} finished runs" preserveAspectRatio="xMinYMax meet">'
            f'{"".join(shapes)}</svg><figcaption class="sub">the last {len(bars)} finished runs, oldest left; '
            f'the tallest bar is {e(seconds_text(longest))}</figcaption></figure>')


def task_page(task: Body, runs: Sequence[Body], summary: TaskSummary, now: datetime) -> str:
    """``/tasks/<ns>/<name>``: schedule and next ticks, last and next run, success rate, durations,
    recent runs and the Trigger form."""
    meta, spec = _meta(task), _spec(task)
    ns, name = meta.get("namespace") or "", meta.get("name") or ""
    what = spec.get("entrypoint") or " ".join(str(x) for x in _list(spec.get("command")) + _list(spec.get("args")))
    retry: Body = spec["retry"] if isinstance(spec.get("retry"), dict) else {}
    facts = [("Namespace", e(ns)), ("Image", e(spec.get("image"))), ("Entrypoint" if spec.get("entrypoint") else "Command", e(what)),
             ("Machine", e(_machine(spec))), ("Retries", e(f"{retry.get('maxAttempts', 3)} attempts")),
             ("Max duration", e(spec.get("maxDuration") or "-")), ("Concurrency", e(spec.get("concurrency") or "-"))]
    last = summary.last_run
    last_html = (f'<a href="{e(run_url(ns, _meta(last).get("name")))}" id="last-run">{e(_meta(last).get("name"))}</a> '
                 f'{phase_badge(phase_of(last))} {time_cell(_meta(last).get("creationTimestamp"), now)}'
                 if last else '<span class="empty" id="last-run">none yet</span>')
    schedule_html = '<p class="empty" id="schedule">No schedule: runs start when triggered.</p>'
    if spec.get("schedule"):
        zone = _zone(spec.get("timezone"))
        ticks = "".join(f'<li data-testid="next-tick" data-time="{e(_api_time(t))}">{_abs_time(_api_time(t))} '
                        + (f'<span class="sub">{e(t.astimezone(zone).strftime("%a %H:%M %Z"))}</span> ' if zone else "")
                        + f'<span class="sub">in {e(human_age(now, t))}</span></li>' for t in summary.next_ticks)
        state = ""
        if summary.schedule_error:
            state = f'<p class="errors" data-testid="schedule-error">{e(summary.schedule_error)}</p>'
        elif spec.get("suspend"):
            state = '<p class="waiting" data-testid="suspended">Suspended: no ticks run.</p>'
        schedule_html = (f'<div id="schedule"><p><code id="schedule-expr">{e(spec["schedule"])}</code> '
                         f'<span class="sub">{e(spec.get("timezone") or "UTC")}</span>, '
                         f'concurrency policy {e(spec.get("concurrencyPolicy") or "Allow")}</p>{state}'
                         f'<ol id="next-ticks">{ticks}</ol></div>')
    next_run = '<span class="dim">-</span>'
    if summary.waiting is not None:  # a run already waiting starts before any later tick
        at = starts_at(summary.waiting)
        waiting_name = _meta(summary.waiting).get("name")
        next_run = (f'<a href="{e(run_url(ns, waiting_name))}">{e(waiting_name)}</a> '
                    f'{phase_badge(phase_of(summary.waiting))} '
                    + (f'at {_abs_time(_api_time(at))}' if at and at > now else "waiting to start"))
    elif summary.next_ticks:
        next_run = f"{_abs_time(_api_time(summary.next_ticks[0]))} (scheduled)"
    default_payload, cut = clip(spec.get("payload") if spec.get("payload") is not None else {})
    default_text = json.dumps(default_payload, indent=2, ensure_ascii=False)
    trigger = ('<form method="post" action="/actions/trigger" data-action="trigger" id="trigger-form">'
               f'<input type="hidden" name="namespace" value="{e(ns)}"><input type="hidden" name="task" value="{e(name)}">'
               f'<label>Payload (JSON)<textarea name="payload" id="trigger-payload" rows="5" spellcheck="false">'
               f'{e(default_text)}</textarea></label>' + (cut_note("The Task's default payload") if cut else "")
               + '<button type="submit" id="trigger-button">Trigger a run</button></form>')
    recent = sorted(runs, key=sort_key, reverse=True)[:20]
    body = (f'<h1 id="task-name">{e(name)}</h1>'
            '<dl class="facts" id="task-facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
            '<div class="cols"><section><h2>Schedule</h2>' + schedule_html + "</section>"
            '<section><h2>Runs</h2><dl class="facts">'
            f'<dt>Last run</dt><dd>{last_html}</dd><dt>Next run</dt><dd id="next-run">{next_run}</dd>'
            f'<dt>Success rate</dt><dd id="success-rate" data-testid="success-rate">{_rate(summary)}</dd>'
            f'<dt>Runs now</dt><dd>{summary.runs} ({summary.active} active)</dd></dl></section></div>'
            f"<h2>Recent durations</h2>{durations_chart(runs, now)}"
            f"<h2>Trigger</h2>{trigger}"
            f'<h2>Recent runs <a class="sub" href="{e(RunQuery(task=name, namespace=ns).url("/"))}">all</a></h2>'
            + runs_table(recent, now, show_task=False))
    return layout(name, body, "tasks")
