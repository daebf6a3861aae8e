"""``kubetasks runs --watch``: the run table kept current from a watch on TaskRuns.

A list (page by page), then a watch from its resourceVersion, resumed from the last version
seen whenever the server ends it, and a fresh list (replacing every row) after 410 Gone. On a
terminal the table is redrawn in place (rich ``Live``); piped, it is printed once and then one
line per change, as ``kubectl get -w`` does. Ctrl-C ends it with exit code 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from kubetasks import kube
from kubetasks.cli.tables import RunFilter, RunKey, apply_event, every_run, relisted, run_rows, runs_table

# The server ends each watch after this long (it is then resumed): a proxy in between that
# drops quiet connections does no harm.
WATCH_SECONDS = 300
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0)

Event = tuple[str, Any]  # ("LIST", items) after each (re-)list, else (type, object)


def list_and_watch(namespace: str | None, sleep: Callable[[float], None] = time.sleep) -> Iterator[Event]:
    """("LIST", items) for each full list, then ("ADDED" | "MODIFIED" | "DELETED", run) per change.
    A watch the server ends resumes from the last version seen; an expired version (410) lists
    again; a connection that fails is retried with a growing pause, any other API error raised."""
    version: str | None = None
    failures = 0
    while True:
        try:
            if version is None:
                items, version = kube.list_all(kube.TASKRUNS, namespace)
                yield "LIST", items
            for kind, obj in kube.watch(kube.TASKRUNS, namespace, "", version, WATCH_SECONDS):
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                failures = 0
                if kind != "BOOKMARK":
                    yield kind, obj
        except kube.Gone:
            version = None
        except Exception as e:
            if not kube.is_transient(e):
                raise
            sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
            failures += 1


def watch_runs(namespace: str | None, out: Console, shows: RunFilter = every_run) -> int:
    every = namespace is None
    runs: dict[RunKey, dict[str, Any]] = {}
    try:
        if out.is_terminal:
            def view() -> Table:  # rebuilt at each refresh, so ages keep counting between events
                return runs_table(run_rows(list(runs.values()), with_namespace=every), every,
                                  max_rows=max(5, out.height - 4))

            with Live(console=out, get_renderable=view, refresh_per_second=2, vertical_overflow="crop") as live:
                for kind, obj in list_and_watch(namespace):
                    runs = relisted(obj, shows) if kind == "LIST" else apply_event(runs, kind, obj, shows)
                    live.refresh()
        else:
            printed = False
            for kind, obj in list_and_watch(namespace):
                old, runs = runs, relisted(obj, shows) if kind == "LIST" else apply_event(runs, kind, obj, shows)
                changed = [r for k, r in runs.items() if old.get(k) is not r]
                if not printed or changed:
                    table = runs_table(run_rows(list(runs.values()) if not printed else changed,
                                                with_namespace=every), every)
                    table.show_header = not printed
                    out.print(table)
                    out.file.flush()
                    printed = True
    except KeyboardInterrupt:
        pass
    return 0
