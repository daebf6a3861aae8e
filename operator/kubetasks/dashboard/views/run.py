"""A run's page: attempts, steps, metadata, payload and result, error, logs, Events, why it waits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from kubetasks.api.times import api_time as when, human_age  # read and shown as the CLI does
from kubetasks.core.replay import REPLAYABLE_PHASES
from kubetasks.core.tracing import ANNOTATION_TRACEPARENT, run_trace
from kubetasks.core.why import Why
from kubetasks.dashboard.views.common import (
    Body, FINISHED, _abs_time, _api_time, condition, e, layout, _list, _meta, phase_badge, phase_of, run_seconds,
    run_url, seconds_text, _spec, _status, task_url, time_cell)
from kubetasks.dashboard.views.values import clip_text, pretty_json, _text_block


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
    why: Why | None = None  # why a waiting run waits: the operator's live answer, or its status
    trace_url: str = ""  # a template with {traceId} (--trace-url, KUBETASKS_TRACE_URL): the trace's page


def attempt_machine(run: Body, task: Body | None, attempt: int) -> str:
    """CPU/memory of an attempt, as the operator chose it (the OOM machine after an OOMKilled attempt)."""
    from kubetasks.api.machines import resolve_machine
    from kubetasks.api.task import Task
    from kubetasks.api.taskrun import TaskRun
    from kubetasks.core.render import machine_for_attempt

    before = [a.get("reason") for a in _list(_status(run).get("attempts"))
              if isinstance(a, dict) and isinstance(a.get("attempt"), int) and a["attempt"] < attempt]
    try:  # the specs only: a status kubetasks would not write (an unknown phase) does not matter here
        model = TaskRun.model_validate({"spec": _spec(run)})
        task_model = Task.model_validate({"spec": _spec(task)}) if task else None
        machine = machine_for_attempt(model, task_model, before) if task_model else model.spec.machine
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


def why_section(why: Why) -> str:
    """The operator's answer (as ``kubetasks why`` shows it): per limit, the run's place in line,
    who holds the slots, a throttle's next start and an ETA; or the status, and why not live."""
    rows = "".join(f'<tr data-limit="{e(line.limit)}"><td>{e(line.limit)}</td><td>{e(line.reason)}</td>'
                   f'<td class="num" data-testid="why-position">{e(line.position)}</td><td>{e(line.holders)}</td>'
                   f'<td>{e(line.window)}</td><td>{e(line.rate)}</td><td data-testid="why-eta">{e(line.eta)}</td></tr>'
                   for line in why.limits)
    table = ('<table id="why-limits"><thead><tr><th>Limit</th><th>Reason</th><th>Position</th><th>Slots held</th>'
             '<th>Next start</th><th>Served</th><th>ETA</th></tr></thead><tbody>' + rows + "</tbody></table>"
             if rows else "")
    note = f'<p class="note" data-testid="why-note">{e(why.note)}</p>' if why.note else ""
    return (f'<section id="why" class="waiting" data-live="{"true" if why.live else "false"}" data-testid="why">'
            f'<h2>Why it waits</h2><p data-testid="why-headline">{e(why.headline)}</p>{note}{table}</section>')


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
    trace = _trace(meta, details.trace_url)
    if trace:
        facts.append(("Trace", trace))
    waiting = waiting_reason(run, now)
    action = ""
    if phase not in FINISHED and not spec.get("cancel"):
        action = _run_action("cancel", ns, name, "Cancel run", ' class="danger"')
    elif phase in REPLAYABLE_PHASES:  # as `kubetasks replay` allows (core.replay.check_replayable)
        action = _run_action("replay", ns, name, "Replay", ' title="A new run of this one: the steps it completed '
                             'return their recorded results, the rest run again (kubetasks replay)"')
    error = status.get("error") if isinstance(status.get("error"), dict) else None
    # While the run is not finished its page follows it: the script fetches the page again every
    # few seconds and swaps in the [data-live] parts (it reloads once the run has finished).
    live = f' data-live="{"finished" if phase in FINISHED else "unfinished"}"'
    parts = [f'<div id="run-head"{live}><h1><span id="run-name">{e(name)}</span> {phase_badge(phase)}</h1></div>',
             action, f'<div id="run-body"{live}>',
             (f'<p class="waiting" id="waiting-reason" data-testid="waiting-reason">{e(waiting)}</p>'
              if waiting else ""),
             why_section(details.why) if details.why is not None else "",
             '<dl class="facts" id="run-facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>",
             "<h2>Attempts</h2>", _timeline(run, details, now), "<h2>Steps</h2>", _steps(run)]
    if isinstance(status.get("metadata"), dict) and status["metadata"]:  # ctx.metadata: live with the page
        parts.append('<section id="metadata" data-testid="metadata"><h2>Metadata</h2>'
                     + pretty_json(status["metadata"], "The metadata") + "</section>")
    parts.append('<div class="cols"><section id="payload"><h2>Payload</h2>'
                 + (pretty_json(spec["payload"], "The payload") if spec.get("payload") is not None
                    else _kept_payload(spec["payloadRef"]) if isinstance(spec.get("payloadRef"), dict)
                    else '<p class="empty">No payload.</p>')
                 + '</section><section id="result"><h2>Result</h2>'
                 + (pretty_json(status["result"], "The result") if status.get("result") is not None
                    else _kept_result(status["resultRef"]) if status.get("resultRef")
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


def _trace(meta: Body, template: str) -> str:
    """The run's trace id (core.tracing: its caller's, or its own when none traced it), linked
    through ``template`` when there is one. A run no caller traced, with no trace page to link,
    shows none: its own id names spans only where the operator exports them, which the page
    cannot tell (with ``--trace-url`` the user says it does)."""
    if not meta.get("uid") or not (template or (meta.get("annotations") or {}).get(ANNOTATION_TRACEPARENT)):
        return ""
    trace_id = f"{run_trace(meta).trace_id:032x}"
    if not template:
        return f'<code data-testid="trace-id">{e(trace_id)}</code>'
    url = template.replace("{traceId}", trace_id)
    return f'<a href="{e(url)}" data-testid="trace-id" rel="noopener" target="_blank"><code>{e(trace_id)}</code></a>'


def _run_action(action: str, ns: str, name: str, label: str, attributes: str = "") -> str:
    """A button that posts the run's namespace and name to ``/actions/<action>`` (the page's script
    sends it; the server acts as the user)."""
    return (f'<form method="post" action="/actions/{action}" data-action="{action}" id="{action}-form">'
            f'<input type="hidden" name="namespace" value="{e(ns)}">'
            f'<input type="hidden" name="name" value="{e(name)}">'
            f'<button type="submit"{attributes} id="{action}-button">{label}</button></form>')


def _kept_payload(ref: Body) -> str:
    """A payload kept in the object store (spec.payloadRef): its size and digest, never its bytes."""
    return (f'<p class="kept-payload" data-testid="payload-ref">{int(ref.get("size") or 0):,} bytes, sha256 '
            f'<code>{e(str(ref.get("sha256") or ""))}</code>, kept in <code>{e(str(ref.get("uri") or ""))}</code></p>')


def _kept_result(ref: Body) -> str:
    """A result kept by reference (the run's ConfigMap or the object store): its size and digest."""
    return (f'<p class="kept-result" data-testid="result-ref">{int(ref.get("size") or 0):,} bytes, sha256 '
            f'<code>{e(str(ref.get("sha256") or ""))}</code>, kept in <code>{e(str(ref.get("uri") or ""))}</code> '
            "(trigger_and_wait returns it)</p>")
