"""Task hooks (issue 21, item 5) on the real cluster: a run that fails after its retries fires its
Task's onFailure once, and nothing else. TaskRuns are counted by a watch on the namespace
(RunTimeline), never by a final list, so a hook run made and deleted in between would count too."""

from __future__ import annotations

import time

import pytest

from kubetasks.core.naming import ANNOTATION_HOOK_OF, LABEL_HOOK, LABEL_INSTANCE, hook_run_name
from tests.conftest import INSTANCE, KWOK_PLACEMENT, apply, get, holds_until, wait_until
from tests.integration.test_flow_control import RunTimeline
from tests.integration.test_taskruns import has_event, status, task, taskrun, ts, wait_phase

pytestmark = pytest.mark.cluster


def test_a_run_failing_after_its_retries_fires_its_on_failure_task_once(namespace, operator):
    # The failing Task runs real pods (kwok's pods always succeed); the hook's Task stays on kwok.
    apply([task("notify", "pass", **KWOK_PLACEMENT),
           task("flaky", "import sys; sys.exit(3)", retry={"maxAttempts": 2, "minDelay": "1s"},
                onFailure="notify", onSuccess="notify")], namespace)
    with RunTimeline(namespace) as watch:
        apply(taskrun("r", "flaky"), namespace)
        done = wait_phase(namespace, "r", "Failed", timeout=120)
        hook = hook_run_name("r", get("taskrun", "r", namespace)["metadata"]["uid"], "onFailure")
        wait_until(f"the onFailure run {hook}", lambda: hook in [j.name for j in watch.seen()], timeout=30)
        # The finished run is reconciled again (its hook's record, the hook run's progress): no second hook run.
        wait_phase(namespace, hook, "Succeeded", timeout=60)
        holds_until(time.monotonic() + 5, lambda: _only(watch, ["r", hook], sync=False), interval=1.0)
        _only(watch, ["r", hook], sync=True)  # and one list more, for what the watch has not delivered
    assert done["attempt"] == 2, done
    run = get("taskrun", hook, namespace)
    meta = run["metadata"]
    assert meta["labels"][LABEL_HOOK] == "onFailure" and meta["annotations"][ANNOTATION_HOOK_OF] == "r", meta
    assert meta["labels"][LABEL_INSTANCE] == INSTANCE and not meta.get("ownerReferences"), meta
    payload = run["spec"]["payload"]
    assert {k: payload.get(k) for k in ("run", "task", "phase", "attempts")} == {
        "run": "r", "task": "flaky", "phase": "Failed", "attempts": 2}, payload
    assert payload["error"] == done["error"] and "parentRun" not in run["spec"], run["spec"]
    assert ts(meta["creationTimestamp"]) >= ts(done["completionTime"])  # after the last attempt, not the first
    wait_until("the hook recorded as fired", lambda: status(namespace, "r").get("hooks") == [
        {"kind": "onFailure", "task": "notify", "run": hook, "fired": True}], timeout=30)
    assert has_event(namespace, "r", "HookFired")


def _only(watch: RunTimeline, names: list[str], sync: bool) -> None:
    """The TaskRuns created since the watch began are exactly ``names``."""
    created = sorted(j.name for j in watch.seen(sync))
    assert created == sorted(names), created
