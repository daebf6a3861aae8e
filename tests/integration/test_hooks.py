"""Task hooks (issue 21, item 5) on the real cluster: a run that fails after its retries fires its
Task's onFailure once, and nothing else. TaskRuns are counted by a watch on the namespace
(RunTimeline), never by a final list, so a hook run made and deleted in between would count too."""

from __future__ import annotations

import time
import uuid

import pytest

from kubetasks.core.naming import ANNOTATION_HOOK_OF, LABEL_HOOK, LABEL_INSTANCE, hook_run_name
from tests.conftest import INSTANCE, KWOK_PLACEMENT, apply, get, holds_until, wait_until
from tests.integration.test_faults import operator_restored
from tests.integration.test_flow_control import RunTimeline, Timeline
from tests.integration.test_recreate import HOLD_LABEL, HoldingWebhook, registered, serving_tls
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


def test_on_failure_fires_once_when_the_operator_is_killed_as_the_run_fails(namespace, operator, tmp_path):
    """SIGKILL at three moments around a run's failure: as its Job fails; while the status write
    that says Failed (and records the hook due) is held in flight by a webhook, so the operator
    dies between deciding the outcome and creating the hook run; and as the hook run appears (its
    record not yet marked fired). Restarted each time, it fires each run's onFailure exactly once."""
    apply([task("notify", "pass", **KWOK_PLACEMENT),
           task("doomed", "import sys; sys.exit(3)", retry={"maxAttempts": 1}, onFailure="notify")], namespace)
    hold = uuid.uuid4().hex[:10]

    def job_failed(run: str) -> bool:
        return any((e.obj.get("status") or {}).get("failed") for e in jobs.log()
                   if (e.obj["metadata"].get("labels") or {}).get("kubetasks.io/run") == run)

    def hook_made(run: str) -> bool:
        return any(e.name.startswith(f"{run}-") for e in runs.log())

    with RunTimeline(namespace) as runs, Timeline(namespace) as jobs, operator_restored(operator), \
            registered(HoldingWebhook("Failed", serving_tls(tmp_path)), namespace, hold) as webhook:
        apply(taskrun("job-failed", "doomed"), namespace)
        wait_until("job-failed: its Job failed", lambda: job_failed("job-failed"), timeout=120, interval=0.02)
        operator.restart()

        held = taskrun("in-flight", "doomed")
        held["metadata"]["labels"] = {HOLD_LABEL: hold}
        apply(held, namespace)
        assert webhook.holding.wait(120), f"no Failed write reached the webhook: {webhook.seen}"
        operator.kill()
        assert not hook_made("in-flight"), "the hook run was made before its run's outcome was written"
        webhook.release()
        operator.start()

        apply(taskrun("hook-created", "doomed"), namespace)
        wait_until("hook-created: its hook run", lambda: hook_made("hook-created"), timeout=120, interval=0.02)
        operator.restart()

        names = ["job-failed", "in-flight", "hook-created"]
        hooks = {r: hook_run_name(r, get("taskrun", r, namespace)["metadata"]["uid"], "onFailure") for r in names}
        for run, hook in hooks.items():
            wait_phase(namespace, hook, "Succeeded", timeout=120)
            wait_until(f"{run}: its hook recorded as fired", lambda run=run: [h.get("fired") for h in
                       status(namespace, run).get("hooks") or []] == [True], timeout=60)
        _only(runs, [*names, *hooks.values()], sync=True)
    assert all(status(namespace, r)["phase"] == "Failed" for r in names)
