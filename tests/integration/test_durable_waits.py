"""Durable trigger-and-wait on the real cluster (examples/python/kubetasks_examples/fan_out.py):
the parent waits for its children with no pod running, resumes with their typed results, catches
a child's failure, and its steps before the wait ran once.

"No pod while it waits" is judged from watches in etcd revision order, never from a status read
beside a pod list: the operator creates the next attempt's Job before it writes the status that
ends the wait, so a read of Waiting followed by a list can see that Job's pod, rightly."""

from __future__ import annotations

import json
import pytest

from kubetasks.core.children import job_finished
from tests.conftest import apply, get, kubectl, wait_until
from tests.integration.test_faults import operator_restored
from tests.integration.test_flow_control import PodTimeline, RunTimeline, Seen, Timeline
from tests.integration.test_runtime import counter_with_access, sdk_task
from tests.integration.test_taskruns import FINISHED, status, taskrun

pytestmark = pytest.mark.cluster
FAN_OUT = "kubetasks_examples.fan_out"


def phase(e: Seen) -> str | None:
    return (e.obj.get("status") or {}).get("phase")


def waits_broken(parent: str, runs: list[Seen], jobs: list[Seen], pods: list[Seen]) -> list[str]:
    """What ran while ``parent`` waited: each wait lasts from the revision that first showed the
    run Waiting to the ADDED of its next Job; no pod of the run may be active in between, and every
    child it waited on must have finished before that Job."""
    uid = next(e.uid for e in runs if e.name == parent)
    starts = sorted(e.rv for e in {j.uid: j for j in reversed(jobs) if j.owner == uid}.values())
    finished = {}  # child name -> revision of its first finished event
    for e in sorted(runs, key=lambda e: e.rv):
        if e.name != parent and phase(e) in ("Succeeded", "Failed"):
            finished.setdefault(e.name, e.rv)
    broken, was_waiting = [], False
    for e in sorted((e for e in runs if e.uid == uid), key=lambda e: e.rv):
        if phase(e) == "Waiting" and not was_waiting:
            until = next((rv for rv in starts if rv > e.rv), None)
            if until is None:
                broken.append(f"no Job followed the wait at revision {e.rv}")
                continue
            broken += [f"pod {p.name} active at revision {p.rv}, inside the wait ({e.rv}, {until})"
                       for p in pods if p.active and e.rv < p.rv < until
                       and (p.obj["metadata"].get("labels") or {}).get("kubetasks.io/run") == parent]
            waited = [c for c in (e.obj.get("status") or {}).get("waitingOn") or [] if not c.startswith(("waitpoint:", "taskevent:"))]
            broken += [f"Job at revision {until} before child {c} finished ({finished.get(c)})"
                       for c in waited if finished.get(c, until) >= until]
        was_waiting = phase(e) == "Waiting"
    return broken


def test_a_parent_waits_for_its_children_with_no_pod_and_resumes_with_their_results(namespace, operator):
    apply(counter_with_access(namespace), namespace)
    apply([sdk_task("square", f"{FAN_OUT}:square", retry={"maxAttempts": 1}),
           sdk_task("fan-out", f"{FAN_OUT}:fan_out", allowTrigger=["square"], retry={"maxAttempts": 1})], namespace)
    with RunTimeline(namespace) as runs, Timeline(namespace) as jobs, PodTimeline(namespace) as pods:
        apply(taskrun("fan", "fan-out", payload={"numbers": [1, 2, 3], "seconds": 4, "counter": "counter"}),
              namespace)
        waiting = wait_until("the parent waits for its three children",
                             lambda: (s := status(namespace, "fan")).get("phase") == "Waiting"
                             and len(s.get("waitingOn") or []) >= 1 and s, timeout=180)
        final = wait_until("the parent finishes", lambda: (s := status(namespace, "fan")).get("phase") in FINISHED
                           and s, timeout=180)
        parent_uid = json.loads(kubectl("get", "taskrun", "fan", "-n", namespace, "-o", "json"))["metadata"]["uid"]
        parent_jobs = [j.name for j in jobs.owned_by(parent_uid)]
        # the watches may lag the reads above: wait until they hold the end of every parent pod
        wait_until("the watches saw the parent's end and each of its pods end", lambda: any(
            e.uid == parent_uid and phase(e) in FINISHED for e in runs.log()) and {
            p.owner for p in pods.log() if phase(p) in ("Succeeded", "Failed")} >= {
            j.uid for j in jobs.starts() if j.owner == parent_uid} and len(parent_jobs) <= len(
            [j for j in jobs.starts() if j.owner == parent_uid]), timeout=30)
        broken = waits_broken("fan", runs.log(), jobs.log(), pods.log())

    assert not broken, f"the parent ran while it waited: {broken}"
    waits = [e for e in runs.log() if e.uid == parent_uid and phase(e) == "Waiting"]
    assert len({e.obj["status"].get("attempt") for e in waits}) == 2, "both attempts that wait were seen waiting"
    assert len(waiting["waitingOn"]) == 3 and all(n.startswith("square-") for n in waiting["waitingOn"]), waiting
    assert final["phase"] == "Succeeded", final
    result = final["result"]
    assert result["squares"] == [1, 4, 9] and result["attempt"] == 3
    assert result["caught"]["phase"] == "Failed" and result["caught"]["error"] == "ValueError", result
    # Waiting is no failed attempt (maxAttempts 1), and the history shows each wait.
    assert [a["reason"] for a in final["attempts"]] == ["Waiting", "Waiting", "Succeeded"], final["attempts"]
    assert len(parent_jobs) == 3, f"one Job per attempt, none while waiting: {parent_jobs}"
    counter = json.loads(kubectl("get", "configmap", "counter", "-n", namespace, "-o", "json"))["data"]
    assert counter == {"before": "1"}, f"the step before the waits ran once: {counter}"
    children = json.loads(kubectl("get", "taskruns", "-n", namespace, "-l", "kubetasks.io/task=square", "-o", "json"))
    assert len(children["items"]) == 4 and all(c["spec"]["parentRun"] == "fan" for c in children["items"])


def test_the_operator_killed_while_a_parent_waits_loses_nothing_and_it_resumes_once(namespace, operator):
    """SIGKILL while the parent waits, kept down until its children's Jobs have ended (no one
    sees them finish), then SIGKILL again as the attempt that resumes gets its Job: every child
    is seen to its end, the parent resumes once per wait, and nothing runs twice."""
    apply(counter_with_access(namespace), namespace)
    apply([sdk_task("square", f"{FAN_OUT}:square", retry={"maxAttempts": 1}),
           sdk_task("fan-out", f"{FAN_OUT}:fan_out", allowTrigger=["square"], retry={"maxAttempts": 1})], namespace)
    with RunTimeline(namespace) as runs, Timeline(namespace) as jobs, PodTimeline(namespace) as pods, \
            operator_restored(operator):
        apply(taskrun("fan", "fan-out", payload={"numbers": [1, 2, 3], "seconds": 4, "counter": "counter"}),
              namespace)
        wait_until("the parent waits", lambda: any(e.name == "fan" and phase(e) == "Waiting" for e in runs.log()),
                   timeout=180, interval=0.05)
        operator.kill()
        children = (get("taskrun", "fan", namespace).get("status") or {}).get("waitingOn") or []
        assert len(children) == 3, children

        def children_jobs_ended() -> bool:
            ended = {(j.obj["metadata"].get("labels") or {}).get("kubetasks.io/run") for j in jobs.log()
                     if job_finished(j.obj)}
            return set(children) <= ended
        wait_until("the children's Jobs ended, unseen by the operator", children_jobs_ended, timeout=120)
        assert all(phase(e) != "Succeeded" for e in runs.log() if e.name in children), "no one recorded them"
        operator.start()

        uid = next(e.uid for e in runs.log() if e.name == "fan")
        wait_until("the parent resumes", lambda: len([j for j in jobs.starts() if j.owner == uid]) >= 2,
                   timeout=120, interval=0.02)
        operator.restart()
        final = wait_until("the parent finishes", lambda: (s := status(namespace, "fan")).get("phase") in FINISHED
                           and s, timeout=180)
        wait_until("the watches saw the parent's end", lambda: any(
            e.uid == uid and phase(e) in FINISHED for e in runs.log()) and {
            p.owner for p in pods.log() if phase(p) in ("Succeeded", "Failed")} >= {
            j.uid for j in jobs.starts() if j.owner == uid}, timeout=30)
        broken = waits_broken("fan", runs.log(), jobs.log(), pods.log())
        parent_jobs = [j.name for j in jobs.starts() if j.owner == uid]
        child_runs = {e.name for e in runs.log() if e.name != "fan"}

    assert not broken, f"the parent ran while it waited: {broken}"
    assert final["phase"] == "Succeeded" and final["result"]["squares"] == [1, 4, 9], final
    assert sorted(parent_jobs) == ["fan-1", "fan-2", "fan-3"], f"one Job per attempt: {parent_jobs}, {final}"
    assert len(child_runs) == 4, f"each child triggered once: {child_runs}"
    counter = json.loads(kubectl("get", "configmap", "counter", "-n", namespace, "-o", "json"))["data"]
    assert counter == {"before": "1"}, f"the step before the waits ran once: {counter}"
