"""``kubetasks describe``: one TaskRun, laid out for any terminal width.

Labels keep a fixed column and values wrap beside them; tables keep short cells on one line
(truncated with an ellipsis when the terminal is too narrow) and carry their long text (an
attempt's or a condition's message) as a note wrapped under its row, so nothing is ever
squeezed into a one-character column. Everything here is pure: ``render_describe`` gives the
text at a given width, for tests and for ``COLUMNS``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.json import JSON
from rich.padding import Padding
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from kubetasks.api.times import api_time, human_age
from kubetasks.cli.tables import phase_style

LABEL_WIDTH = 18  # the longest label, "Cancel requested:", and a space
NOTE_INDENT = 4
# Narrower than this, values go under their label rather than beside it.
MIN_VALUE_WIDTH = 20


def describe_lines(run: dict[str, Any], now: datetime | None = None) -> list[tuple[str, str]]:
    """The key/value part of ``describe``."""
    meta, spec, status = run.get("metadata") or {}, run.get("spec") or {}, run.get("status") or {}
    fields = [
        ("Name", meta.get("name")), ("Namespace", meta.get("namespace")), ("Task", spec.get("taskRef")),
        ("Phase", status.get("phase") or "Pending"), ("Attempt", status.get("attempt") or 0),
        ("Version", task_version(status.get("taskVersion"))),
        ("Created", f"{meta.get('creationTimestamp')} ({human_age(meta.get('creationTimestamp'), now)} ago)"
         if meta.get("creationTimestamp") else None),
        ("Started", status.get("startTime")), ("Completed", status.get("completionTime")),
        ("Duration", status.get("duration")), ("Next retry", status.get("nextRetryAt")),
        ("Wakes at", status.get("wakeAt")), ("Duplicate of", status.get("duplicateOf")),
        ("Superseded by", status.get("supersededBy")),
        ("Idempotency key", spec.get("idempotencyKey")),
        ("Key held until", status.get("idempotencyKeyExpiresAt")), ("Parent run", spec.get("parentRun")),
        ("Tags", ", ".join(str(t) for t in spec.get("tags") or []) or None),
        ("Replay of", replay_of(spec.get("replayOf"))),
        ("Cancel requested", "yes" if spec.get("cancel") else None),
        ("Payload", json.dumps(spec["payload"]) if spec.get("payload") is not None else None),
        ("Payload", stored_payload(spec.get("payloadRef"))),
    ]
    return [(k, str(v)) for k, v in fields if v is not None and v != ""]


def task_version(version: Any) -> str | None:
    """The Task version the run is locked to (status.taskVersion, core.version): image, spec hash, whence."""
    if not isinstance(version, dict):
        return None
    spec = version.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    origin = (f"its parent {version['inheritedFrom']}'s" if version.get("inheritedFrom")
              else f"Task generation {version['generation']}" if version.get("generation") is not None else None)
    return (f"{version.get('version')} ({spec.get('image')}, spec {version.get('specHash')}"
            + (f", {origin}" if origin else "") + ")")


def replay_of(source: Any) -> str | None:
    """A replay's original, and which of its step records it reused (spec.replayOf)."""
    if not isinstance(source, dict):
        return None
    reused = ("none (fresh)" if source.get("fresh") else f"those completed before step {source['fromStep']}"
              if source.get("fromStep") else "every completed step")
    return f"{source.get('name')} (uid {source.get('uid')}); steps reused: {reused}"


def stored_payload(ref: Any) -> str | None:
    """A payload kept in the object store (spec.payloadRef): its size, digest and place, never read."""
    if not isinstance(ref, dict):
        return None
    return f"{int(ref.get('size') or 0):,} bytes, sha256 {ref.get('sha256')}, kept in {ref.get('uri')}"


class Fields:
    """Labelled values: the label in a fixed column, the value wrapped beside it (or, on a very
    narrow terminal, under it)."""

    def __init__(self, fields: Sequence[tuple[str, Text]]) -> None:
        self.fields = fields

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if options.max_width < LABEL_WIDTH + MIN_VALUE_WIDTH:
            for label, value in self.fields:
                yield Text(f"{label}:", style="bold")
                yield Padding(value, (0, 0, 0, 2))
            return
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, width=LABEL_WIDTH - 1, style="bold")
        grid.add_column(overflow="fold")
        for label, value in self.fields:
            grid.add_row(f"{label}:", value)
        yield grid


class NotedTable:
    """A table of short cells, each row on one line, its note (a message) wrapped under it.
    When the cells do not fit, the columns named in ``drop`` go first, in that order."""

    def __init__(self, columns: Sequence[str], rows: Sequence[tuple[Sequence[str], str]],
                 row_styles: Sequence[str] = (), drop: Sequence[str] = ()) -> None:
        self.columns, self.rows, self.row_styles, self.drop = columns, rows, row_styles, drop

    def kept_columns(self, width: int) -> list[int]:
        """Indexes of the columns shown at ``width``."""
        natural = [max(len(c), *(len(cells[i]) for cells, _ in self.rows)) for i, c in enumerate(self.columns)]
        kept = list(range(len(self.columns)))
        for name in self.drop:
            if sum(natural[i] for i in kept) + 2 * (len(kept) - 1) <= width:
                break
            kept.remove(self.columns.index(name))
        return kept

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        kept = self.kept_columns(options.max_width)
        table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
        for i in kept:
            table.add_column(self.columns[i], no_wrap=True, overflow="ellipsis")
        for n, (cells, _) in enumerate(self.rows):
            table.add_row(*(Text(cells[i]) for i in kept), style=self.row_styles[n] if n < len(self.row_styles) else "")
        lines = console.render_lines(table, options, pad=False)
        if len(lines) != 1 + len(self.rows):  # not one line per row after all: notes after the table
            yield table
            yield from (Padding(Text(note, overflow="fold"), (0, 0, 0, NOTE_INDENT)) for _, note in self.rows if note)
            return
        yield from [*lines[0], Segment.line()]
        for line, (_, note) in zip(lines[1:], self.rows):
            yield from [*line, Segment.line()]
            if note:
                yield Padding(Text(note.rstrip(), overflow="fold", style="dim"), (0, 0, 0, NOTE_INDENT))


def _section(title: str, body: RenderableType) -> Group:
    return Group(Text(""), Text(title, style="bold"), Padding(body, (0, 0, 0, 2)))


SHOW_LIMIT = 16 * 1024  # a result kept by reference is shown when at most this large (and readable)


def describe_view(run: dict[str, Any], now: datetime | None = None, kept: Any = None,
                  kept_problem: str | None = None) -> RenderableType:
    """All of ``describe`` as one renderable. ``kept``: the value of a result kept by reference,
    when it was read and verified (``kept_problem``: why it could not be)."""
    status = run.get("status") or {}
    fields = [(k, Text(v, style=phase_style(v) if k == "Phase" else "")) for k, v in describe_lines(run, now)]
    error = status.get("error") or {}
    if error:
        kind = f"{error['type']}: " if error.get("type") else ""
        fields.append(("Error", Text(kind + str(error.get("message") or ""), style="red")))
    parts: list[RenderableType] = [Fields(fields)]
    if error.get("traceback"):
        parts.append(_section("Traceback:", Text(str(error["traceback"]).rstrip(), overflow="fold")))
    if status.get("result") is not None:
        parts.append(_section("Result:", JSON(json.dumps(status["result"]))))
    ref = status.get("resultRef") or {}
    if ref:
        where = Fields([("Size", Text(f"{ref.get('size', 0):,} bytes")), ("sha256", Text(str(ref.get("sha256")))),
                        ("Kept in", Text(str(ref.get("uri")), overflow="fold"))])
        shown: list[RenderableType] = [where]
        if kept_problem:
            shown.append(Text(kept_problem, style="red"))
        elif kept is not None:
            shown.append(JSON(json.dumps(kept)))
        else:
            shown.append(Text("(not shown here: trigger_and_wait, or the RunHandle's wait(), returns it)", style="dim"))
        parts.append(_section("Result:", Group(*shown)))
    if status.get("metadata"):  # ctx.metadata, its descendants' additions folded in
        parts.append(_section("Metadata:", JSON(json.dumps(status["metadata"]))))
    rows: list[tuple[Sequence[str], str]]
    attempts = status.get("attempts") or []
    if attempts:
        rows = [((str(a.get("attempt", "")), a.get("reason") or "-",
                  "-" if a.get("exitCode") is None else str(a["exitCode"]), a.get("startTime") or "-",
                  human_age(a.get("startTime"), api_time(a.get("completionTime"))) if a.get("completionTime") else "-",
                  a.get("jobName") or ""), a.get("message") or "") for a in attempts]
        parts.append(_section("Attempts:", NotedTable(("#", "REASON", "EXIT", "STARTED", "DURATION", "JOB"), rows,
                                                       [phase_style(a.get("reason") or "") for a in attempts],
                                                       drop=("STARTED", "JOB", "DURATION"))))
    steps = status.get("steps") or []
    if steps:
        rows = [((s.get("name", ""), str(s.get("attempt", "")),
                  "-" if s.get("durationSeconds") is None else f"{s['durationSeconds']:.2f}s",
                  s.get("completedAt") or "-"), "") for s in steps]
        parts.append(_section("Steps:", NotedTable(("NAME", "ATTEMPT", "DURATION", "COMPLETED"), rows,
                                                    drop=("COMPLETED", "ATTEMPT"))))
    conditions = status.get("conditions") or []
    if conditions:
        rows = [((c.get("type", ""), c.get("status", ""), c.get("reason") or "-", c.get("lastTransitionTime") or "-"),
                 c.get("message") or "") for c in conditions]
        parts.append(_section("Conditions:", NotedTable(("TYPE", "STATUS", "REASON", "SINCE"), rows,
                                                         drop=("SINCE",))))
    return Group(*parts)


def render_describe(run: dict[str, Any], width: int, now: datetime | None = None, kept: Any = None,
                    kept_problem: str | None = None) -> str:
    """``describe``'s text at ``width`` columns, without colour."""
    console = Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False)
    console.print(describe_view(run, now, kept, kept_problem))
    return console.file.getvalue()  # type: ignore[attr-defined]  # the StringIO given above
