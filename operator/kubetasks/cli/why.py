"""``kubetasks why RUN [-n NS] [--operator-url URL]``: why a run waits, live from the operator.

Per limit the run is under: its place in that limit's line, who holds the slots, a throttle's
next start, the limit's observed service rate, and an ETA. The operator is asked as you
(:mod:`kubetasks.operator_client`: through the API server's service proxy, or at
``--operator-url``/``KUBETASKS_OPERATOR_URL``); when it cannot answer, the run's own status
(``status.waitingFor``, its condition) is shown with a note saying the live answer was not
available. Rendering is pure: ``render_why`` gives the text at a given width.
"""

from __future__ import annotations

import argparse
import io
from datetime import datetime, timezone
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.text import Text

from kubetasks.cli.describe import Fields, NotedTable, _section
from kubetasks.cli.tables import phase_style
from kubetasks.core.why import Why, summary


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("why", help="why a TaskRun waits: its place per limit, who holds the slots, an ETA")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--operator-url", metavar="URL",
                   help="reach the operator here (default: $KUBETASKS_OPERATOR_URL, else through the API "
                        "server's proxy to the Service $KUBETASKS_OPERATOR_SERVICE)")
    return p


def why_view(run: dict[str, Any], why: Why) -> RenderableType:
    status = run.get("status") or {}
    phase = status.get("phase") or "Pending"
    fields = [("Run", Text(f"{run['metadata'].get('namespace')}/{run['metadata'].get('name')}")),
              ("Phase", Text(phase, style=phase_style(phase))),
              ("Why", Text(why.headline, style="bold" if why.live else "yellow"))]
    if why.note:
        fields.append(("Note", Text(why.note, style="" if why.live else "yellow")))
    parts: list[RenderableType] = [Fields(fields)]
    if why.limits:
        rows = [((line.limit, line.reason, line.position, line.holders, line.rate, line.eta),
                 f"next start allowed at {line.window}" if line.window != "-" else "") for line in why.limits]
        parts.append(_section("Limits:", NotedTable(("LIMIT", "REASON", "POSITION", "SLOTS HELD", "SERVED", "ETA"), rows,
                                                     drop=("SERVED", "REASON"))))
    return Group(*parts)


def render_why(run: dict[str, Any], answer: dict[str, Any] | None, problem: str | None, width: int,
               now: datetime | None = None) -> str:
    """``why``'s text at ``width`` columns, without colour."""
    console = Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False)
    console.print(why_view(run, summary(run, answer, problem, now or datetime.now(timezone.utc))))
    return console.file.getvalue()  # type: ignore[attr-defined]  # the StringIO given above


def cmd_why(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks import kube
    from kubetasks.cli.common import namespace_of
    from kubetasks.operator_client import ask_why

    ns = namespace_of(args)
    run = kube.get_custom("taskruns", ns, args.run)  # as you: a 403 or 404 here is the answer
    answer = ask_why(ns, args.run, getattr(args, "operator_url", None))
    out.print(why_view(run, summary(run, answer.body, answer.problem, datetime.now(timezone.utc))))
    return 0
