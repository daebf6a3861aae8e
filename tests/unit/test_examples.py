"""The example manifests are valid against the API models (and so against the CRDs)."""

from pathlib import Path

import pytest
import yaml

from kubetasks.api import Task, TaskRun
from kubetasks.api.flow import TaskQueue

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
MODELS = {"Task": Task, "TaskRun": TaskRun, "TaskQueue": TaskQueue}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_manifests_validate(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        MODELS[doc["kind"]].model_validate(doc)
