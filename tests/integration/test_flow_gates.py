"""Debounce and overlap (issue 19, items 7 and 8) on the real cluster: Jobs are counted by a
watch (JobWatch), never by a final list, and each survivor proves which payload it ran with by
returning it (the payload file, copied into its termination message: its result)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from tests.conftest import JobWatch, apply, get, kubectl, wait_until
from tests.integration.test_taskruns import events, status, task, taskrun, ts, wait_phase

pytestmark = pytest.mark.cluster
ECHO = "import os; open('/dev/termination-log', 'w').write(open(os.environ['KUBETASKS_PAYLOAD_FILE']).read())"
LONG = "import time; time.sleep(600)"


def expected_survivor(namespace: str, names: list[str], mode: str) -> str:
    """The first (leading) or last (trailing) run by creationTimestamp, then uid: runs made within
    one second are told apart by uid, not by the order they were made in."""
    made = sorted((ts(m["creationTimestamp"]), m["uid"], m["name"])
                  for m in (get("taskrun", n, namespace)["metadata"] for n in names))
    return made[0][2] if mode == "leading" else made[-1][2]


@pytest.mark.parametrize("mode", ["leading", "trailing"])
def test_a_debounced_burst_runs_once_with_the_first_or_last_payload(namespace, operator, mode):
    apply(task("echo", ECHO), namespace)
    names = [f"d{i}" for i in range(5)]
    with JobWatch(namespace) as watch:
        for i, name in enumerate(names):  # 5 runs of one key, created 1 s apart (the spacing is what is tested)
            if i:
                time.sleep(1)  # after the previous create returned: a later second of creationTimestamp
            apply(taskrun(name, "echo", payload={"n": i},
                          debounce={"key": "k", "delay": "3s", "maxDelay": "30s", "mode": mode}), namespace)
        survivor = names[0] if mode == "leading" else names[-1]
        assert expected_survivor(namespace, names, mode) == survivor
        done = wait_phase(namespace, survivor, {"Succeeded", "Failed"}, timeout=180)
        jobs = watch.seen()
    assert done["phase"] == "Succeeded" and done["result"] == {"n": 0 if mode == "leading" else 4}, done
    run_uid = get("taskrun", survivor, namespace)["metadata"]["uid"]
    assert [(j.owner, j.attempt) for j in jobs] == [(run_uid, "1")], jobs  # exactly one Job was ever created
    for name in names:
        if name != survivor:
            s = wait_phase(namespace, name, "Superseded", timeout=30)
            assert not s.get("attempt"), s
            into, hops = s["supersededBy"], 0  # trailing: a chain (each superseded by a newer one) to the survivor
            while into != survivor and hops < len(names):
                into, hops = status(namespace, into)["supersededBy"], hops + 1
            assert into == survivor, (name, s["supersededBy"])
            if mode == "leading":
                assert s["supersededBy"] == survivor, s
    assert "Superseded" in events(namespace, names[1 if mode == "leading" else 0])
    # Delay after the last run, not after the first: the survivor started >= 3 s after d4 was made.
    last_made = ts(get("taskrun", names[-1], namespace)["metadata"]["creationTimestamp"])
    assert ts(done["startTime"]) - last_made >= timedelta(seconds=3), (done["startTime"], last_made)


@pytest.mark.parametrize("mode", ["leading", "trailing"])
def test_a_burst_made_while_the_operator_is_down_still_runs_once(namespace, operator, mode):
    # The operator is killed after the first run; the others are made while it is away, and it comes
    # back after the burst's quiet time is over: every run is decided at once, from its stores.
    apply(task("echo", ECHO), namespace)
    names = [f"d{i}" for i in range(5)]
    spec = {"debounce": {"key": "k", "delay": "3s", "maxDelay": "30s", "mode": mode}}
    with JobWatch(namespace) as watch:
        apply(taskrun(names[0], "echo", payload={"n": 0}, **spec), namespace)
        wait_phase(namespace, names[0], "Delayed", timeout=60)
        operator.kill()
        try:
            time.sleep(1)  # the others in a later second than d0 (creationTimestamp has 1 s resolution)
            for i, name in enumerate(names[1:], start=1):
                apply(taskrun(name, "echo", payload={"n": i}, **spec), namespace)
            time.sleep(3)  # the quiet time passes while the operator is away (what is tested)
        finally:
            operator.start()
        survivor = expected_survivor(namespace, names, mode)
        done = wait_phase(namespace, survivor, {"Succeeded", "Failed"}, timeout=180)
        for name in names:
            if name != survivor:
                wait_phase(namespace, name, "Superseded", timeout=60)
        jobs = watch.seen()
    assert done["phase"] == "Succeeded" and done["result"] == {"n": names.index(survivor)}, done
    assert [j.name for j in jobs] == [f"{survivor}-1"], jobs


def test_overlap_skip_ends_the_new_run_while_one_of_its_key_runs(namespace, operator):
    apply(task("single", LONG, overlap="skip"), namespace)
    apply(taskrun("first", "single", concurrencyKey="k"), namespace)
    wait_phase(namespace, "first", "Running", timeout=60)
    with JobWatch(namespace) as watch:
        apply(taskrun("second", "single", concurrencyKey="k"), namespace)
        apply(taskrun("other-key", "single", concurrencyKey="j"), namespace)
        s = wait_phase(namespace, "second", "Skipped", timeout=60)
        wait_phase(namespace, "other-key", "Running", timeout=60)
        jobs = watch.seen()
    assert "'first'" in next(c for c in s["conditions"] if c["type"] == "Succeeded")["message"], s
    assert [j.name for j in jobs] == ["other-key-1"], jobs  # none for the skipped run
    assert "Skipped" in events(namespace, "second")
    assert status(namespace, "first")["phase"] == "Running"


def test_overlap_cancel_running_cancels_the_older_run(namespace, operator):
    apply(task("latest", LONG, overlap="cancelRunning"), namespace)
    apply(taskrun("old", "latest", concurrencyKey="k"), namespace)
    wait_phase(namespace, "old", "Running", timeout=60)
    apply(taskrun("new", "latest", concurrencyKey="k"), namespace)
    wait_phase(namespace, "old", "Cancelled", timeout=60)
    assert get("taskrun", "old", namespace)["spec"]["cancel"] is True
    wait_phase(namespace, "new", "Running", timeout=60)
    wait_until("the old run's Job gone", lambda: "old-1" not in kubectl("get", "jobs", "-n", namespace, "-o", "name"),
               timeout=60)
    assert "OverlapCancelled" in events(namespace, "old")
