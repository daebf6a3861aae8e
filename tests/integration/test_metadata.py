"""ctx.metadata on the real cluster (examples/python/kubetasks_examples/fan_out.py): a run's
metadata is in its status while it runs (the pod's checkpoint, its label watched by the operator)
and when it ends, and each child's ctx.metadata.parent.increment shows on its parent, once."""

from __future__ import annotations

import json

import pytest

from tests.conftest import apply, kubectl, wait_until
from tests.integration.test_runtime import sdk_task
from tests.integration.test_taskruns import FINISHED, status, taskrun

pytestmark = pytest.mark.cluster
FAN_OUT = "kubetasks_examples.fan_out"


def test_a_run_reports_progress_while_it_runs_and_its_children_count_on_its_parent(namespace, operator):
    apply([sdk_task("square", f"{FAN_OUT}:square", retry={"maxAttempts": 1}),
           sdk_task("fan-out", f"{FAN_OUT}:fan_out", allowTrigger=["square"], retry={"maxAttempts": 1})], namespace)
    apply(taskrun("fan", "fan-out", payload={"numbers": [2, 3], "seconds": 3}), namespace)

    def a_child_running_with_progress() -> dict | None:
        children = [c for c in json.loads(kubectl("get", "taskruns", "-n", namespace, "-o", "json"))["items"]
                    if (c.get("spec") or {}).get("parentRun") == "fan"]
        return next((c for c in children if (c.get("status") or {}).get("phase") == "Running"
                     and (c["status"].get("metadata") or {}).get("progress") == 0), None)

    live = wait_until("a child shows its progress while it runs", a_child_running_with_progress, timeout=90)
    assert live["status"]["metadata"] == {"progress": 0}
    final = wait_until("the parent finishes", lambda: (s := status(namespace, "fan")).get("phase") in FINISHED
                       and s, timeout=120)
    assert final["phase"] == "Succeeded", final
    # its own metadata, and one increment from each child that squared (the doomed one failed first)
    assert final["metadata"] == {"numbers": 2, "squared": 2}, final
    done = status(namespace, live["metadata"]["name"])
    assert done["metadata"] == {"progress": 1} and done["ancestorMetadata"] == {"parent": {"squared": {"inc": 1}}}
