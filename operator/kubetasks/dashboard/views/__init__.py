"""The dashboard's pages, as pure functions: run and Task bodies (dicts, as the API holds them) in,
HTML out; one module per page, what they share in :mod:`.common`, values cut before formatting in
:mod:`.values`. The pages' hooks for tests and scripts are ``id`` and ``data-testid`` attributes
(see docs/dashboard.md).
"""

from kubetasks.dashboard.views.common import (
    Body, CHART_RUNS, FAILED, FINISHED, NEXT_TICKS, PHASES, RECENT_RUNS, RUN_HEADERS, SortKey, UTC,
    WAITING, condition, e, layout, not_found_page, phase_badge, phase_of, run_rows, run_seconds, run_url,
    runs_table, seconds_text, sort_key, task_url, time_cell)
from kubetasks.core.run_filter import PHASE_GROUPS
from kubetasks.dashboard.views.values import CUT, SHOWN_BYTES, SHOWN_DEPTH, clip, clip_text, cut_note, pretty_json
from kubetasks.dashboard.views.runs import (
    DEFAULT_LIMIT, MAX_LIMIT, RunPage, RunQuery, decode_cursor, encode_cursor, matches, parse_query,
    run_summary, runs_page, select_runs)
from kubetasks.dashboard.views.run import (AttemptLog, RunDetails, attempt_machine, run_page, waiting_reason,
                                          why_section)
from kubetasks.dashboard.views.tasks import TaskSummary, durations_chart, starts_at, task_page, task_summary, tasks_page

__all__ = [
    "DEFAULT_LIMIT", "MAX_LIMIT", "Body", "CHART_RUNS", "FAILED", "FINISHED", "NEXT_TICKS", "PHASES",
    "PHASE_GROUPS", "RECENT_RUNS", "RUN_HEADERS", "SortKey", "UTC", "WAITING", "condition", "e", "layout",
    "not_found_page", "phase_badge", "phase_of", "run_rows", "run_seconds", "run_url", "runs_table", "seconds_text",
    "sort_key", "task_url", "time_cell", "CUT", "SHOWN_BYTES", "SHOWN_DEPTH", "clip", "clip_text", "cut_note",
    "pretty_json", "RunPage", "RunQuery", "decode_cursor", "encode_cursor", "matches", "parse_query",
    "run_summary", "runs_page", "select_runs", "AttemptLog", "RunDetails", "attempt_machine",
    "run_page", "waiting_reason", "why_section", "TaskSummary", "durations_chart", "starts_at", "task_page", "task_summary",
    "tasks_page"]
