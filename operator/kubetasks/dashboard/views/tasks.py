"""The Tasks list and a Task's page: schedule and next ticks, last and next run, success rate,
durations, recent runs and the Trigger form."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kubetasks.api.taskrun import Phase
from kubetasks.api.times import human_age  # read and shown as the CLI does
from kubetasks.dashboard.views.common import (
    Body, CHART_RUNS, FAILED, FINISHED, NEXT_TICKS, _PHASE_CLASS, RECENT_RUNS, WAITING, _abs_time, _api_time,
    condition, e, layout, _list, _meta, phase_badge, phase_of, run_seconds, run_url, runs_table, seconds_text,
    sort_key, _spec, task_url, time_cell)
from kubetasks.dashboard.views.values import clip, cut_note
from kubetasks.dashboard.views.runs import RunQuery


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
             ("Max duration", e(spec.get("maxDuration") or "-")), ("Concurrency", e((spec.get("concurrency") or {}).get("limit") or "-"))]
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
