"""The example manifests are valid against the API models (and so against the CRDs), and every
kind of object the CRDs define has an example."""

from pathlib import Path

import pytest
import yaml

from kubetasks.api import Task, TaskRun
from kubetasks.api.flow import TaskQueue
from kubetasks.api.taskevent import TaskEvent

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
MODELS = {"Task": Task, "TaskRun": TaskRun, "TaskQueue": TaskQueue, "TaskEvent": TaskEvent}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_manifests_validate(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        MODELS[doc["kind"]].model_validate(doc)


def test_the_flow_control_example_shows_each_limit():
    """examples/flow-control.yaml (README: Flow control): a shared queue, limits in all and per key,
    a held lock, a throttle, and runs with keys and priorities; each Task's queue exists."""
    docs = [d for d in yaml.safe_load_all((EXAMPLES[0].parent / "flow-control.yaml").read_text()) if d]
    queues = {d["metadata"]["name"] for d in docs if d["kind"] == "TaskQueue"}
    tasks = [Task.model_validate(d) for d in docs if d["kind"] == "Task"]
    runs = [TaskRun.model_validate(d) for d in docs if d["kind"] == "TaskRun"]
    assert queues and all(t.spec.queue in queues for t in tasks if t.spec.queue)
    assert len({t.spec.queue for t in tasks if t.spec.queue}) < len([t for t in tasks if t.spec.queue])  # shared
    assert any(t.spec.concurrency and t.spec.concurrency.limit and t.spec.concurrency.per_key for t in tasks)
    assert any(t.spec.concurrency and t.spec.concurrency.hold_across_waits for t in tasks)
    assert any(t.spec.throttle and t.spec.throttle.per_key for t in tasks)
    assert {r.spec.task_ref for r in runs} <= {t.metadata["name"] for t in tasks}
    assert any(r.spec.concurrency_key for r in runs) and {r.spec.priority > 0 for r in runs} == {True, False}
