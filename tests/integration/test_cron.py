"""Cron Tasks on the real cluster, with a real every-minute schedule (no test-only clock).

One test drives four Tasks through the same ticks, so the suite waits for two minute
boundaries rather than eight: Allow, Forbid, Replace and a suspended Task, with an operator
crash across the second tick.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from tests.conftest import apply, get, kubectl, wait_until
from tests.integration.test_taskruns import task, ts

pytestmark = pytest.mark.cluster


def scheduled_runs(namespace: str, task_name: str) -> list[dict]:
    runs = json.loads(kubectl("get", "taskruns", "-n", namespace, "--field-selector", f"spec.taskRef={task_name}",
                              "-o", "json"))["items"]
    return sorted(runs, key=lambda r: r["metadata"]["name"])


def test_every_minute_allow_forbid_replace_suspend_and_a_restart_across_a_tick(namespace, operator):
    cron = {"schedule": "* * * * *", "startingDeadlineSeconds": 50}
    apply([task("every", "print('tick')", **cron),
           task("forbid", "import time; time.sleep(150)", concurrencyPolicy="Forbid", **cron),
           task("replace", "import time; time.sleep(150)", concurrencyPolicy="Replace", **cron),
           task("paused", "print('never')", suspend=True, **cron)], namespace)
    first = wait_until("the first tick", lambda: len(scheduled_runs(namespace, "every")) == 1
                       and scheduled_runs(namespace, "every"), timeout=90)[0]
    tick1 = ts(first["metadata"]["annotations"]["kubetasks.io/scheduled-at"])
    wait_until("forbid and replace ran at the first tick",
               lambda: len(scheduled_runs(namespace, "forbid")) == 1 == len(scheduled_runs(namespace, "replace")),
               timeout=30)

    # Crash the operator before the next tick and bring it back after it: the tick still runs, once.
    wait_until("second 45..55 of the minute before the next tick",
               lambda: 45 <= datetime.now(timezone.utc).second <= 55, timeout=61, interval=0.2)
    operator.kill()
    wait_until("the next tick to pass", lambda: 3 <= datetime.now(timezone.utc).second <= 20,
               timeout=40, interval=0.2)
    operator.start()

    runs = wait_until("the second tick", lambda: len(r := scheduled_runs(namespace, "every")) >= 2 and r,
                      timeout=90)
    assert len(runs) == 2, [r["metadata"]["name"] for r in runs]
    ticks = [ts(r["metadata"]["annotations"]["kubetasks.io/scheduled-at"]) for r in runs]
    assert ticks[0] == tick1 and (ticks[1] - ticks[0]).total_seconds() == 60
    assert [r["metadata"]["name"] for r in runs] == [f"every-{int(t.timestamp()) // 60}" for t in ticks]
    latencies = [(ts(r["metadata"]["creationTimestamp"]) - t).total_seconds() for r, t in zip(runs, ticks)]
    print(f"cron: run created {latencies} s after its tick (the second one across an operator restart)")

    # Forbid: the second tick was skipped while the first run is active, and an Event says so.
    wait_until("Replace to create its second run", lambda: len(scheduled_runs(namespace, "replace")) == 2, timeout=60)
    assert len(scheduled_runs(namespace, "forbid")) == 1
    reasons = wait_until("a SkippedTick event", lambda: [e["reason"] for e in json.loads(kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=forbid", "-o", "json"))["items"]
        if e["reason"] == "SkippedTick"], timeout=60)
    assert reasons
    # Replace: the first run was cancelled for the second.
    old, new = scheduled_runs(namespace, "replace")
    wait_until("the replaced run to be cancelled",
               lambda: (get("taskrun", old["metadata"]["name"], namespace).get("status") or {}).get("phase")
               == "Cancelled", timeout=60)
    # Suspended: nothing, ever.
    assert scheduled_runs(namespace, "paused") == []
    every = get("task", "every", namespace)["status"]
    assert every["lastScheduleTime"] and every["nextScheduleTime"]
