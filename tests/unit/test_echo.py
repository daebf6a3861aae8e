"""Echoed text is printable and bounded, wherever it goes: conditions, errors, attempts, Events."""

from datetime import datetime, timezone

from hypothesis import given, strategies as st

from kubetasks.api.task import Task
from kubetasks.api.taskrun import TaskRun
from kubetasks.core.conditions import condition
from kubetasks.core.echo import bounded, printable
from kubetasks.core.plan import Event, World, plan_run

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _unsafe(text):
    return [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f
            or c in "\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"]


def test_control_characters_are_written_as_escapes():
    assert printable("a\0b\x1b[2J\rc\u202ed") == "a\\x00b\\x1b[2J\\x0dc\\u202ed"
    assert printable("line one\n\tline two") == "line one\n\tline two"
    assert printable("naïve – ok ✓") == "naïve – ok ✓"


@given(st.text())
def test_printable_leaves_nothing_unsafe_and_changes_nothing_safe(text):
    out = printable(text)
    assert not _unsafe(out)
    if not _unsafe(text):
        assert out == text


@given(st.text(), st.integers(min_value=10, max_value=200), st.booleans())
def test_bounded_is_printable_and_within_its_limit(text, limit, keep_end):
    out = bounded(text, limit, keep_end)
    assert len(out) <= limit and not _unsafe(out)


def test_conditions_and_events_never_carry_a_nul():
    assert condition("Ready", "False", "InvalidSpec", "bad\0value", NOW, 1).message == "bad\\x00value"
    assert Event("Warning", "X", "a\0b").message == "a\\x00b"


def test_a_payload_key_with_control_characters_is_not_echoed_raw():
    task = Task.model_validate({"metadata": {"name": "t"}, "spec": {
        "image": "python:3", "command": ["true"],
        "payloadSchema": {"type": "object", "additionalProperties": {"type": "string"}}}})
    run = TaskRun.model_validate({"metadata": {"name": "r", "namespace": "ns", "uid": "u", "creationTimestamp":
                                               NOW.isoformat()},
                                  "spec": {"taskRef": "t", "payload": {"k\0\x1b[2J": 1}}})
    plan = plan_run(World(now=NOW, run=run, task=task))
    texts = [plan.status.error.message, *(c.message for c in plan.status.conditions), *(e.message for e in plan.events)]
    assert plan.status.error and "k\\x00\\x1b[2J" in plan.status.error.message
    assert all(not _unsafe(t) for t in texts), texts
