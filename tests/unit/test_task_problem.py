"""A Task whose payloadSchema cannot be used says so in its Ready condition (issue 11)."""

from datetime import datetime, timezone

import pytest

from kubetasks.api.task import Task
from kubetasks.core.task_status import Problem, task_problem, task_status

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def task(**spec) -> Task:
    return Task.model_validate({"metadata": {"name": "t", "generation": 2},
                                "spec": {"image": "img:1", "command": ["true"], **spec}})


@pytest.mark.parametrize("schema, words", [
    ({"$ref": "http://127.0.0.1:9/s.json"}, "is not local"),
    (42, "an object or a boolean"),
    ({"type": 42}, "not a valid JSON Schema"),
    ({"type": "string", "pattern": "(a)\\1"}, "RE2"),
])
def test_an_unusable_payload_schema_makes_the_task_not_ready(schema, words):
    problem = task_problem(task(payloadSchema=schema))
    assert problem is not None and problem.reason == "InvalidPayloadSchema" and words in problem.message
    ready = task_status(task(payloadSchema=schema), [], NOW, problem).conditions[0]
    assert (ready.type, ready.status, ready.reason) == ("Ready", "False", "InvalidPayloadSchema")
    assert ready.message == problem.message and ready.observed_generation == 2


def test_schedule_problems_keep_their_reason_and_a_valid_task_is_ready():
    assert task_problem(task(schedule="not cron")).reason == "InvalidSpec"
    assert task_problem(task(schedule="@daily", payloadSchema={"required": ["n"]}, payload={})).reason == "InvalidSpec"
    assert task_problem(task(payloadSchema={"type": "object"})) is None
    ready = task_status(task(), [], NOW, None).conditions[0]
    assert (ready.status, ready.reason) == ("True", "Ready")
    assert Problem("InvalidSpec", "x").message == "x"
