"""The CLI's run table: rows of TaskRuns, as ``kubetasks runs`` prints them and ``runs --watch``
keeps them current. Pure: plain dicts in, rows and rich renderables out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.table import Table

from kubetasks.api.times import human_age
from kubetasks.core.run_filter import oldest_first, run_test
from kubetasks.core.wakeups import unfinished

RUN_COLUMNS = ("NAME", "TASK", "PHASE", "ATTEMPT", "WAITING", "AGE", "DURATION")  # kubectl get taskruns' order
RunKey = tuple[str, str]  # (namespace, name)


def run_row(run: dict[str, Any], now: datetime | None = None) -> tuple[str, ...]:
    """One TaskRun as a row of RUN_COLUMNS. WAITING is the limit that holds a run that has not
    started (``status.waitingFor.reason``: TaskLimit, KeyLimit, QueueLimit, Throttled...), as
    ``kubectl get taskruns`` shows it."""
    meta, spec, status = run.get("metadata") or {}, run.get("spec") or {}, run.get("status") or {}
    return (
        str(meta.get("name", "")),
        str(spec.get("taskRef", "")),
        str(status.get("phase") or "Pending"),
        str(status.get("attempt") or 0),
        str((status.get("waitingFor") or {}).get("reason") or "-"),
        human_age(meta.get("creationTimestamp"), now),
        str(status.get("duration") or "-"),
    )


RunFilter = Callable[[dict[str, Any]], bool]


def run_filter(task: str | None = None, tag: str | None = None, phase: str | None = None,
               created_after: datetime | None = None) -> RunFilter:
    """Which runs are shown: of ``task``, with ``tag``, in ``phase`` (a phase, "active" or
    "finished"), created at or after ``created_after`` (each when given), as the dashboard's
    runs list and the SDK's ``list_runs`` filter them (:mod:`kubetasks.core.run_filter`)."""
    return run_test(task=task or "", tag=tag or "", phase=phase or "", after=created_after) or every_run


def every_run(run: dict[str, Any]) -> bool:
    return True


def cancel_candidates(runs: Iterable[dict[str, Any]], shows: RunFilter) -> list[str]:
    """The names of the unfinished runs that ``shows`` keeps and no one asked to cancel yet,
    oldest first: the same command twice requests each cancel once."""
    return [str(r["metadata"]["name"]) for r in oldest_first(runs)
            if shows(r) and unfinished(r) and not (r.get("spec") or {}).get("cancel")]


def cancels_requested(count: int) -> str:
    return f"{count} cancel{'' if count == 1 else 's'} requested"


def run_rows(runs: Sequence[dict[str, Any]], shows: RunFilter = every_run, now: datetime | None = None,
             with_namespace: bool = False) -> list[tuple[str, ...]]:
    """Rows of the runs that ``shows`` keeps, oldest first."""
    rows = []
    for r in oldest_first(r for r in runs if shows(r)):
        row = run_row(r, now)
        rows.append(((r.get("metadata") or {}).get("namespace", ""), *row) if with_namespace else row)
    return rows


def phase_style(phase: str) -> str:
    return {"Succeeded": "green", "Failed": "red", "TimedOut": "red", "Cancelled": "yellow",
            "Duplicate": "dim", "Superseded": "dim", "Skipped": "dim", "Running": "cyan", "Retrying": "yellow", "Error": "red",
            "OOMKilled": "red", "DeadlineExceeded": "red"}.get(phase, "")


def runs_table(rows: Sequence[tuple[str, ...]], with_namespace: bool = False, max_rows: int | None = None) -> Table:
    """The rows as a table; with ``max_rows``, the newest that many (a live view keeps what is new
    on screen) and a caption saying how many older ones are left out."""
    shown = rows[-max_rows:] if max_rows is not None and len(rows) > max_rows else rows
    hidden = len(rows) - len(shown)
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold",
                  caption=f"({hidden} older not shown)" if hidden else None, caption_justify="left")
    for column in (("NAMESPACE",) if with_namespace else ()) + RUN_COLUMNS:
        table.add_column(column, no_wrap=True)
    for row in shown:
        table.add_row(*row, style=phase_style(row[3 if with_namespace else 2]))
    return table


def run_key(run: Mapping[str, Any]) -> RunKey:
    meta = run.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def apply_event(runs: Mapping[RunKey, dict[str, Any]], kind: str, obj: dict[str, Any],
                shows: RunFilter = every_run) -> dict[RunKey, dict[str, Any]]:
    """The runs a watch shows after one event: ADDED and MODIFIED put the run in (or take it out
    when ``shows`` no longer keeps it: a run that left the phase asked for), DELETED takes it out;
    bookmarks and anything else change nothing. A returned dict is new; ``runs`` is left as it was."""
    new = dict(runs)
    key = run_key(obj)
    if kind in ("ADDED", "MODIFIED") and shows(obj):
        new[key] = obj
    elif kind in ("ADDED", "MODIFIED", "DELETED"):
        new.pop(key, None)
    return new


def relisted(items: Sequence[dict[str, Any]], shows: RunFilter = every_run) -> dict[RunKey, dict[str, Any]]:
    """The runs a watch shows after a (re-)list: exactly the listed ones, so what was deleted
    while the watch was broken goes away."""
    runs: dict[RunKey, dict[str, Any]] = {}
    for item in items:
        runs = apply_event(runs, "ADDED", item, shows)
    return runs
