"""`kubetasks replay` on the real cluster: a run that failed in its third step is replayed; the
replay reuses the checkpoints of steps 1 and 2 (their side effects, counted outside the pod, are
not repeated), runs step 3 again, and the original is left as it was. Step 1's output is kept in
the object store: the replay reads the operator's copy of it, in its own prefix."""

from __future__ import annotations

import json
import re

import pytest

from kubetasks.core.naming import checkpoint_name
from kubetasks.protocol import configmap_key
from tests.conftest import apply, get, kubectl_run, wait_until
from tests.integration.test_cli import cli
from tests.integration.test_runtime import counter_with_access, sdk_task
from tests.integration.test_results import events
from tests.integration.test_taskruns import FINISHED, taskrun, wait_phase

pytestmark = pytest.mark.cluster


def test_a_replay_runs_only_the_step_that_failed_and_leaves_the_original_alone(namespace, operator):
    apply(counter_with_access(namespace), namespace)
    apply([sdk_task("replayed", "kubetasks_examples.replayed:replayed", retry={"maxAttempts": 1}),
           taskrun("orig", "replayed", payload={"counter": "counter", "pad": 100_000})], namespace)
    s = wait_phase(namespace, "orig", FINISHED, timeout=120)
    assert s["phase"] == "Failed" and "step 3 failed" in s["error"]["message"], s
    original = get("taskrun", "orig", namespace)
    records = get("configmap", checkpoint_name("orig", original["metadata"]["uid"]), namespace)["data"]

    done = cli("replay", "orig", "-n", namespace)
    assert done.returncode == 0, done.stderr
    found = re.match(r"taskrun/(orig-replay-\w+) created: replays orig", done.stdout)
    assert found, done.stdout
    replay = found.group(1)
    r = wait_phase(namespace, replay, FINISHED, timeout=120)
    assert r["phase"] == "Succeeded", r
    # steps 1 and 2 return their recorded counts; step 3 ran again (ctx.is_replay let it pass)
    assert r["result"] == {"counts": [1, 1, 2], "replay": True}
    assert get("configmap", "counter", namespace)["data"] == {"step-1": "1", "step-2": "1", "step-3": "2"}
    assert {st["name"]: st["attempt"] for st in r["steps"]} == {"step-1": 1, "step-2": 1, "step-3": 1}
    spec = get("taskrun", replay, namespace)["spec"]
    assert spec["replayOf"] == {"name": "orig", "uid": original["metadata"]["uid"], "fresh": False}
    assert spec["payload"] == {"counter": "counter", "pad": 100_000}
    # step 1's output: the original's blob copied into the replay's own prefix, the same bytes
    kept = json.loads(records[configmap_key("step-1")])["resultRef"]
    uid = get("taskrun", replay, namespace)["metadata"]["uid"]
    copied = json.loads(get("configmap", checkpoint_name(replay, uid), namespace)["data"][configmap_key("step-1")])
    assert f"/runs/{namespace}/{original['metadata']['uid']}/steps/attempt-1-" in kept["uri"], kept
    assert copied["resultRef"] == {**kept, "uri": copied["resultRef"]["uri"]}
    assert f"/runs/{namespace}/{uid}/steps/replayed-" in copied["resultRef"]["uri"], copied
    # the original is untouched: its phase and its checkpoints are what they were
    assert get("taskrun", "orig", namespace)["status"]["phase"] == "Failed"
    assert get("configmap", checkpoint_name("orig", original["metadata"]["uid"]), namespace)["data"] == records

    # the API server keeps replayOf as it was created
    changed = kubectl_run("patch", "taskrun", replay, "-n", namespace, "--type=merge", "-p",
                          json.dumps({"spec": {"replayOf": {"fresh": True}}}))
    assert changed.returncode and "replayOf is immutable" in changed.stderr, changed.stderr
    # a replay of a run that is not there (another uid) fails saying so, with no Job
    apply(taskrun("lost", "replayed", replayOf={"name": "orig", "uid": "not-its-uid"}), namespace)
    lost = wait_phase(namespace, "lost", FINISHED, timeout=60)
    assert lost["phase"] == "Failed" and lost["error"]["type"] == "ReplaySourceMissing" and not lost.get("attempts")
    wait_until("a ReplaySourceMissing Event", lambda: events(namespace, "lost", "ReplaySourceMissing"), timeout=30)
