"""``kubetasks describe`` at any width: labels in their column, long text wrapped under its row."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kubetasks.cli.describe import LABEL_WIDTH, NotedTable, describe_lines, render_describe

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
ERROR_LINES = ["could not write the report", "while writing /data/out/report-2025-01-01.parquet to the volume "
               "mounted at /data by the operator's checkpoint step", "after 3 retries: disk full (ENOSPC)"]
TRACEBACK = ("Traceback (most recent call last):\n"
             '  File "/app/operator/kubetasks/runtime/entry.py", line 120, in run_task\n'
             "    result = fn(payload, ctx)\n"
             "kubetasks.runtime.errors.AbortTaskRun: could not write the report")
ATTEMPT_MESSAGE = "RuntimeError: attempt 1 fails on purpose (succeeds on attempt 3)\nand says so twice"


def failed_run() -> dict:
    return {
        "metadata": {"name": "report-x7k2p", "namespace": "team-a", "creationTimestamp": "2025-01-01T11:59:00Z"},
        "spec": {"taskRef": "report", "payload": {"day": "2025-01-01", "path": "/data/out/" + "p" * 150}},
        "status": {
            "phase": "Failed", "attempt": 2, "duration": "39s",
            "startTime": "2025-01-01T11:59:01Z", "completionTime": "2025-01-01T11:59:40Z",
            "error": {"type": "AbortTaskRun", "message": "\n".join(ERROR_LINES), "traceback": TRACEBACK},
            "attempts": [
                {"attempt": 1, "jobName": "report-x7k2p-1", "startTime": "2025-01-01T11:59:01Z",
                 "completionTime": "2025-01-01T11:59:10Z", "exitCode": 1, "reason": "Error",
                 "message": ATTEMPT_MESSAGE},
                {"attempt": 2, "jobName": "report-x7k2p-2", "startTime": "2025-01-01T11:59:20Z",
                 "completionTime": "2025-01-01T11:59:40Z", "exitCode": 78, "reason": "Error",
                 "message": "AbortTaskRun: could not write the report"}],
            "steps": [{"name": "download", "attempt": 1, "durationSeconds": 1.5,
                       "completedAt": "2025-01-01T11:59:05Z"}],
            "conditions": [{"type": "Succeeded", "status": "False", "reason": "Failed",
                            "lastTransitionTime": "2025-01-01T11:59:40Z",
                            "message": "attempt 2 of 5 failed permanently: AbortTaskRun: could not write the report"}],
        },
    }


def words(text: str) -> str:
    """The text without its whitespace: what is left of it however it was wrapped (rich may break
    a long word at a hyphen)."""
    return "".join(text.split())


@pytest.mark.parametrize("width", [40, 80, 200])
def test_describe_fits_the_width_with_labels_in_their_column(width):
    text = render_describe(failed_run(), width, NOW)
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines) <= width, text
    for label, value in describe_lines(failed_run(), NOW):
        row = next(line for line in lines if line.startswith(f"{label}:"))
        # The value starts in the value column, on the label's own line.
        assert row[:LABEL_WIDTH].rstrip() == f"{label}:" and row[LABEL_WIDTH] != " ", row
        assert words(row[LABEL_WIDTH:]) in words(value)
    error_row = next(i for i, line in enumerate(lines) if line.startswith("Error:"))
    # Wrapped lines of the error stay in the value column, under their label's row.
    error_block = []
    for line in lines[error_row + 1:]:
        if line[:LABEL_WIDTH].strip():
            break
        error_block.append(line[LABEL_WIDTH:])
    for error_line in ERROR_LINES:
        assert words(error_line) in words(lines[error_row][LABEL_WIDTH:] + " " + " ".join(error_block))
    for tb_line in TRACEBACK.splitlines():
        assert words(tb_line) in words(text)
    assert words(ATTEMPT_MESSAGE) in words(text)


def test_describe_at_80_columns_keeps_every_line_of_a_multiline_error_whole():
    text = render_describe(failed_run(), 80, NOW)
    lines = [line.rstrip() for line in text.splitlines()]
    first, *rest = ERROR_LINES
    assert f"{'Error:':<{LABEL_WIDTH}}AbortTaskRun: {first}" in lines, text
    assert " " * LABEL_WIDTH + ERROR_LINES[2] in lines  # short enough: one line, in the value column
    long = [line[LABEL_WIDTH:] for line in lines[lines.index(" " * LABEL_WIDTH + ERROR_LINES[2]) - 2:][:2]]
    assert words(" ".join(long)) == words(ERROR_LINES[1])  # longer than the column: wrapped in two
    for tb_line in TRACEBACK.splitlines():
        assert "  " + tb_line in lines  # the traceback under its heading, indented, whole
    # Not one character a line: the whole description takes a few dozen lines.
    assert len(lines) < 45, text


def test_attempt_messages_sit_under_their_row():
    lines = [line.rstrip() for line in render_describe(failed_run(), 80, NOW).splitlines()]
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["#", "REASON", "EXIT"])
    assert lines[header + 1].split() == ["1", "Error", "1", "2025-01-01T11:59:01Z", "9s", "report-x7k2p-1"]
    assert [line.strip() for line in lines[header + 2:header + 4]] == ATTEMPT_MESSAGE.splitlines()
    assert lines[header + 4].split()[:3] == ["2", "Error", "78"]
    condition = next(i for i, line in enumerate(lines) if line.split()[:2] == ["Succeeded", "False"])
    assert "attempt 2 of 5 failed permanently" in lines[condition + 1]


def test_narrow_tables_drop_columns_rather_than_squeeze_them():
    table = NotedTable(("#", "REASON", "STARTED", "JOB"), [(("1", "Error", "2025-01-01T11:59:01Z", "job-1"), "")],
                       drop=("STARTED", "JOB"))
    assert table.kept_columns(80) == [0, 1, 2, 3]
    assert table.kept_columns(20) == [0, 1, 3]  # 1 + 2 + 6 + 2 + 5 columns: fits without STARTED
    assert table.kept_columns(5) == [0, 1]
    lines = render_describe(failed_run(), 40, NOW).splitlines()
    header = next(line for line in lines if line.split()[:2] == ["#", "REASON"])
    assert "STARTED" not in header and "…" not in header


def test_very_narrow_terminals_put_values_under_their_labels():
    lines = render_describe(failed_run(), 30, NOW).splitlines()
    assert max(len(line) for line in lines) <= 30
    i = lines.index(next(line for line in lines if line.startswith("Task:")))
    assert lines[i].rstrip() == "Task:" and lines[i + 1].strip() == "report"


def test_a_result_kept_by_reference_shows_its_size_and_digest_and_its_value_when_read():
    digest = "ab" * 32
    run = {"metadata": {"name": "big", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"taskRef": "t"}, "status": {"phase": "Succeeded", "resultRef": {
               "uri": "configmap:big-01234567-steps/result.attempt-1", "size": 200023, "sha256": digest}}}
    text = render_describe(run, 120, NOW)
    assert "200,023 bytes" in text and digest in text and "configmap:big-01234567-steps/result.attempt-1" in text
    assert "trigger_and_wait" in text  # too large to show here: said where it is read
    assert '"small": 1' in render_describe(run, 120, NOW, kept={"small": 1})
    assert "is missing" in render_describe(run, 120, NOW, kept_problem="configmap:x is missing")
