"""Step outputs past the checkpoint ConfigMap, through the local cluster's SeaweedFS (issue 20).

- A durable pipeline passes 5 MB between three steps and crashes (the process exits) after the
  second in its first attempt; attempt 2 gets both outputs from the store and runs only the third
  step (each step's output says which attempt ran it). The checkpoint ConfigMap holds refs.
- A 20 MB step output is returned intact on replay (in the attempt after a durable sleep).
- A record rewritten to name another run's blob is refused (the operator grants no read of it),
  and a blob deleted behind the operator's back fails the attempt with a clear reason.

The task pods run the image (TASK_IMAGE), so these need it built from a checkout with this change.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from kubetasks.core.naming import checkpoint_name
from kubetasks.core.step_grants import slot_path
from kubetasks.protocol import configmap_key
from tests.conftest import INSTANCE, apply, cluster_store_env, get, kubectl, wait_until
from tests.integration.test_large_results import delete_blob, expected, finished, start_operator, task, taskrun

pytestmark = pytest.mark.cluster
EXAMPLES = "kubetasks_examples.big_steps"
RETRIED = {"retry": {"maxAttempts": 2, "minDelay": "1s"}}


@pytest.fixture
def instance(crds: None) -> str:
    """This test's operator instance (its own store prefix)."""
    return f"{INSTANCE}-{uuid.uuid4().hex[:6]}"


def records(namespace: str, name: str) -> dict[str, dict[str, Any]]:
    run = get("taskrun", name, namespace)
    cm = get("configmap", checkpoint_name(name, run["metadata"]["uid"]), namespace)
    return {key: json.loads(text) for key, text in (cm.get("data") or {}).items() if key.startswith("step.")}


def kept(namespace: str, name: str) -> dict[str, Any]:
    """The record of step ``big`` once it is written (the run then sleeps)."""
    def found() -> dict[str, Any] | None:
        return records(namespace, name).get(configmap_key("big"), {}).get("resultRef") and \
            records(namespace, name)[configmap_key("big")]
    return wait_until(f"{name}'s step big kept by reference", found, timeout=180, interval=1)


def test_a_durable_pipeline_passes_5_mb_between_steps_and_its_second_attempt_reads_them(namespace, instance,
                                                                                        tmp_path: Path):
    op = start_operator(tmp_path, namespace, instance, store=True)
    size = 5_000_000
    try:
        apply([task("pipeline", f"{EXAMPLES}:pipeline", **RETRIED), taskrun("p", "pipeline", {"bytes": size})],
              namespace, instance)
        status = finished(namespace, "p", timeout=400)
        assert status["phase"] == "Succeeded", status
        assert [a.get("reason") for a in status["attempts"]][:1] != ["Succeeded"] and len(status["attempts"]) == 2
        result = status.get("result")
        assert result["ran_in"] == {"one": 1, "two": 1, "three": 2}, result  # steps 1 and 2 not run again
        want = expected(size)
        assert result["one"] == want and result["two"]["size"] == want["size"]
        uid = get("taskrun", "p", namespace)["metadata"]["uid"]
        url = cluster_store_env(instance)["KUBETASKS_STORAGE_URL"]
        held = records(namespace, "p")
        for step, index in (("one", 0), ("two", 1)):
            ref = held[configmap_key(step)]["resultRef"]
            assert ref["uri"] == f"{url}/{slot_path(namespace, uid, 1, index)}" and ref["size"] > size, ref
            assert "result" not in held[configmap_key(step)]
        assert held[configmap_key("three")]["result"]["attempt"] == 2  # small: kept inline
        cm_bytes = sum(len(json.dumps(r)) for r in held.values())
        print(f"\ncheckpoint records of the 5 MB pipeline: {cm_bytes} bytes in etcd")
        assert cm_bytes < 4096
    finally:
        op.stop()


def test_a_20_mb_step_output_is_returned_intact_on_replay(namespace, instance, tmp_path: Path):
    op = start_operator(tmp_path, namespace, instance, store=True)
    size = 20_000_000
    try:
        apply([task("paused", f"{EXAMPLES}:kept_then_paused", **RETRIED),
               taskrun("p20", "paused", {"bytes": size, "pause": 1})], namespace, instance)
        status = finished(namespace, "p20", timeout=400)
        assert status["phase"] == "Succeeded", status
        assert status["result"] == {"made_in": 1, "read_in": 2, "data": expected(size)}, status["result"]
    finally:
        op.stop()


def test_a_forged_record_and_a_deleted_blob_fail_the_attempt_saying_why(namespace, instance, tmp_path: Path):
    op = start_operator(tmp_path, namespace, instance, store=True)
    url = cluster_store_env(instance)["KUBETASKS_STORAGE_URL"]
    try:
        apply([task("paused", f"{EXAMPLES}:kept_then_paused", **RETRIED),
               taskrun("victim", "paused", {"bytes": 200_000, "pause": 1}),
               taskrun("forger", "paused", {"bytes": 200_000, "pause": 20}),
               taskrun("robbed", "paused", {"bytes": 200_000, "pause": 20})], namespace, instance)
        assert finished(namespace, "victim")["phase"] == "Succeeded"
        theirs = records(namespace, "victim")[configmap_key("big")]["resultRef"]

        forged = kept(namespace, "forger")
        forged["resultRef"] = theirs  # what a pod of the run (it may patch its ConfigMap) could write
        cm = checkpoint_name("forger", get("taskrun", "forger", namespace)["metadata"]["uid"])
        kubectl("patch", "configmap", cm, "-n", namespace, "--type=merge",
                "-p", json.dumps({"data": {configmap_key("big"): json.dumps(forged)}}))

        ref = kept(namespace, "robbed")["resultRef"]
        delete_blob(ref["uri"], url)

        status = finished(namespace, "forger", timeout=240)
        assert status["phase"] == "Failed" and status["error"]["type"] == "StepOutputUnavailable", status
        message = status["error"]["message"]
        assert "refused to grant its output" in message and theirs["uri"] in message, message
        assert "is not a step output of this run" in message

        status = finished(namespace, "robbed", timeout=240)
        assert status["phase"] == "Failed" and status["error"]["type"] == "StepOutputUnavailable", status
        assert f"{ref['uri']} is missing" in status["error"]["message"], status["error"]
    finally:
        op.stop()
