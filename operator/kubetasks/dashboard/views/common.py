"""What every page of the dashboard shares: escaping, reading odd bodies, times, links,
phase badges, the runs table and the layout.

Everything shown is escaped (names, tags, payloads, messages and logs are user input). Odd data
(no status, a phase kubetasks does not know, unparseable times) is shown as it is, never raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from html import escape
from typing import Any
from urllib.parse import quote

from kubetasks.api.durations import format_duration
from kubetasks.api.taskrun import Phase
from kubetasks.api.times import api_time as when, format_time, human_age  # read and shown as the CLI does
from kubetasks.core.run_filter import FINISHED, phase_of


Body = dict[str, Any]
UTC = timezone.utc
PHASES = tuple(p.value for p in Phase)
FAILED = frozenset((Phase.FAILED.value, Phase.TIMED_OUT.value))
WAITING = frozenset((Phase.PENDING.value, Phase.DELAYED.value, Phase.QUEUED.value))
RECENT_RUNS = 100  # a Task's success rate is over its newest this many finished runs
CHART_RUNS = 30  # bars in a Task's chart of recent durations
NEXT_TICKS = 5


def e(value: Any) -> str:
    """Escaped text (None: empty)."""
    return "" if value is None else escape(str(value), quote=True)


def _api_time(moment: datetime) -> str:
    """The API's own time format, so creationTimestamps compare as strings (no parsing per run)."""
    return format_time(moment, "seconds")


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


SortKey = tuple[str, str, str]  # (creationTimestamp, namespace, name): newest first is descending


def sort_key(run: Body) -> SortKey:
    meta = _meta(run)
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("namespace") or ""), str(meta.get("name") or ""))


# HTML pieces ---------------------------------------------------------------------------------

def run_url(namespace: Any, name: Any) -> str:
    return f"/runs/{quote(str(namespace), safe='')}/{quote(str(name), safe='')}"


def task_url(namespace: Any, name: Any) -> str:
    return f"/tasks/{quote(str(namespace), safe='')}/{quote(str(name), safe='')}"


_PHASE_CLASS = {"Succeeded": "ok", "Failed": "bad", "TimedOut": "bad", "Cancelled": "warn", "Duplicate": "dim",
                "Superseded": "dim", "Skipped": "dim",
                "Running": "run", "Retrying": "warn", "Sleeping": "run", "Waiting": "run", "Pending": "wait", "Delayed": "wait",
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


def not_found_page(what: str) -> str:
    return layout("Not found", f'<h1>Not found</h1><p class="empty" data-testid="not-found">{e(what)}</p>')


