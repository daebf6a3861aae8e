"""The TaskRun reconciler against a fake API server, through the races that lose or invent
attempts: stale views, a watch that lags behind writes, deleted and re-created objects, two
runs racing for one key or one slot, and a restart with nothing in memory."""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from kubetasks.controller.operator import Operator
from kubetasks.controller.queue import Requeue
from kubetasks.core.start_check import START_CHECK
from kubetasks.core.naming import LABEL_ATTEMPT, LABEL_MANAGED_BY, LABEL_RUN, MANAGER, checkpoint_name
from kubetasks.core.observe import JOB_UID_LABEL
from kubetasks.protocol import Checkpoint, configmap_key
from tests.unit.fakeapi import FakeApi

NS = "ns"


def task(name: str = "t", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": name, "namespace": NS},
            "spec": {"image": "img:1", "command": ["true"], **spec}}


def taskrun(name: str, task_ref: str = "t", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name, "namespace": NS},
            "spec": {"taskRef": task_ref, **spec}}


class World:
    """An operator on a fake API: the test drives reconciles and the watch by hand."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.api = FakeApi()
        self.op = Operator(api=self.api)
        for obj in objects:
            self.api.add(obj)
        self.api.deliver(self.op.cache)

    def reconcile(self, name: str, deliver: bool = True) -> Any:
        result = asyncio.run(self.op.runs.reconcile((NS, name)))
        if deliver:
            self.api.deliver(self.op.cache)
        return result

    def settle(self, *names: str, rounds: int = 4) -> None:
        for _ in range(rounds):
            for name in names:
                try:
                    self.reconcile(name)
                except Requeue:
                    self.api.deliver(self.op.cache)

    def status(self, name: str) -> dict[str, Any]:
        return self.api.objects[("TaskRun", NS, name)].get("status") or {}

    def restart(self) -> None:
        """A new operator process: nothing in memory, the stores listed afresh."""
        self.op = Operator(api=self.api)
        self.api.relist(self.op.cache)


def test_a_run_creates_its_job_before_its_status_says_running():
    w = World(task(), taskrun("r"))
    w.reconcile("r")
    order = [fn for fn, _ in w.api.calls if fn in ("create", "patch_status")]
    assert order[-2:] == ["create", "patch_status"]  # Job, then status
    assert w.api.created() == ["r-1"] and w.status("r")["phase"] == "Running"


def test_a_job_left_by_a_deleted_run_of_the_same_name_is_never_adopted():
    # `kubectl delete taskrun same --cascade=orphan`: the Job stays, without owner references.
    orphan = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": "same-1", "namespace": NS, "labels": {LABEL_RUN: "same", LABEL_ATTEMPT: "1",
                                                      LABEL_MANAGED_BY: MANAGER}}}
    w = World(task(), orphan, taskrun("same"))
    w.api.finish_job(NS, "same-1")
    w.api.deliver(w.op.cache)
    w.settle("same")
    s = w.status("same")
    assert s["phase"] == "Running" and s.get("attempt") == 1
    uid = w.api.objects[("TaskRun", NS, "same")]["metadata"]["uid"]
    assert w.api.created() == [f"same-{uid[:8]}-1"]  # its own Job, under a UID-qualified name
    w.api.finish_job(NS, f"same-{uid[:8]}-1", ok=False)
    w.api.deliver(w.op.cache)
    w.settle("same")
    assert w.status("same")["phase"] in ("Retrying", "Failed")  # its own outcome, not the orphan's


def test_a_job_deleted_while_running_is_a_lost_attempt_counted_and_retried():
    w = World(task(retry={"maxAttempts": 2, "minDelay": "1s"}), taskrun("r"))
    w.settle("r")
    w.api.remove(("Job", NS, "r-1"))  # kubectl delete job r-1
    w.api.deliver(w.op.cache)
    w.reconcile("r")
    s = w.status("r")
    assert s["phase"] == "Retrying" and s["attempts"][0]["reason"] == "JobLost"
    assert ("r", "Warning", "JobLost") in [e[:3] for e in w.api.events]
    assert w.api.created() == ["r-1"]  # not silently created again


def test_a_lost_job_with_no_attempts_left_fails_the_run():
    w = World(task(retry={"maxAttempts": 1}), taskrun("r"))
    w.settle("r")
    w.api.remove(("Job", NS, "r-1"))
    w.api.deliver(w.op.cache)
    w.settle("r")
    s = w.status("r")
    assert s["phase"] == "Failed" and s["error"]["type"] == "JobLost"
    assert next(c for c in s["conditions"] if c["type"] == "Succeeded")["reason"] == "JobLost"
    assert w.api.created() == ["r-1"]


def test_a_job_not_yet_seen_by_the_watch_is_expected_not_lost():
    w = World(task(), taskrun("r"))
    w.reconcile("r", deliver=False)  # Job created, status written; the watch lags
    runs = w.op.cache.runs
    runs.event("MODIFIED", runs.slim(w.api.objects[("TaskRun", NS, "r")]))  # only the run's event arrives
    w.reconcile("r", deliver=False)
    s = w.status("r")
    assert s["phase"] == "Running" and not any(a.get("reason") for a in s["attempts"])  # none lost
    assert w.api.created() == ["r-1"]


def test_a_restarted_operator_finds_a_running_run_without_its_job_lost_not_restarted():
    w = World(task(retry={"maxAttempts": 1}), taskrun("r"))
    w.settle("r")
    w.api.remove(("Job", NS, "r-1"))  # deleted while the operator was down
    w.restart()
    w.settle("r")
    assert w.status("r")["phase"] == "Failed" and w.status("r")["attempts"][0]["reason"] == "JobLost"
    assert w.api.created() == ["r-1"]


def test_a_job_removed_at_once_after_success_still_counts_as_success():
    # ttlSecondsAfterFinished: 0: the watch shows it Complete, then gone, before the run is reconciled.
    w = World(task(ttlSecondsAfterFinished=0), taskrun("r"))
    w.settle("r")
    w.api.finish_job(NS, "r-1")
    w.api.remove(("Job", NS, "r-1"))
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Succeeded" and w.api.created() == ["r-1"]


def test_a_durable_sleep_whose_pod_is_gone_before_it_is_read_sleeps_by_its_checkpoint():
    w = World(task(entrypoint="app:nap", command=None), taskrun("r"))
    w.settle("r")
    uid = w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    wake = datetime.now(timezone.utc) + timedelta(hours=1)
    nap = Checkpoint(key="nap", kind="sleep", attempt=1, wake_at=wake, started_at=datetime.now(timezone.utc))
    w.api.update("ConfigMap", NS, checkpoint_name("r", uid), data={configmap_key("nap"): nap.encode()})
    w.api.finish_job(NS, "r-1")  # exit 0; its pod is garbage-collected before the operator lists it
    w.api.deliver(w.op.cache)
    w.settle("r")
    status = w.status("r")
    assert status["phase"] == "Sleeping" and status["attempts"][0]["reason"] == "Sleeping", status
    assert abs(datetime.fromisoformat(status["wakeAt"]) - wake) < timedelta(milliseconds=1)
    assert [(s["name"], s["wakeAt"]) for s in status["steps"]] == [("nap", status["wakeAt"])]
    assert w.api.created() == ["r-1"]  # no second attempt before the wake time


def test_a_restart_between_job_creation_and_status_write_adopts_the_job():
    w = World(task(), taskrun("r"))
    w.reconcile("r", deliver=False)
    w.api.update("TaskRun", NS, "r", status={"phase": "Pending", "attempt": 0})  # the status write was lost
    w.restart()
    w.settle("r")
    assert w.status("r")["attempt"] == 1 and w.api.created() == ["r-1"]


def lose_the_next_status_write(w: World, name: str) -> None:
    """One reconcile whose status write is lost (the operator dies after its other writes)."""
    before = copy.deepcopy(w.status(name))
    w.reconcile(name, deliver=False)
    w.api.objects[("TaskRun", NS, name)]["status"] = before


def test_a_restart_between_a_retrys_job_and_its_status_write_adopts_the_job():
    # Found by SIGKILLing the operator as a waiting parent resumed: the status still said
    # Retrying (Waiting, Sleeping) for the attempt before, and the next attempt started again.
    w = World(task(retry={"maxAttempts": 3, "minDelay": "1s", "maxDelay": "1s"}), taskrun("r"))
    w.settle("r")
    w.api.finish_job(NS, "r-1", ok=False)
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Retrying"
    time.sleep(1.1)
    lose_the_next_status_write(w, "r")
    assert w.api.created() == ["r-1", "r-2"] and w.status("r")["phase"] == "Retrying"
    w.restart()
    w.settle("r")
    assert w.api.created() == ["r-1", "r-2"] and w.status("r")["phase"] == "Running"
    assert w.status("r")["attempt"] == 2


def test_cancel_deletes_every_job_before_writing_cancelled():
    w = World(task(), taskrun("r"))
    w.settle("r")
    w.api.update("TaskRun", NS, "r", spec={"cancel": True})
    w.api.deliver(w.op.cache)
    w.api.calls.clear()
    w.reconcile("r")
    order = [fn for fn, _ in w.api.calls if fn in ("delete_jobs", "patch_status")]
    assert order == ["delete_jobs", "patch_status"]
    assert w.status("r")["phase"] == "Cancelled" and not w.api.jobs()


ENDED = (datetime.now(timezone.utc) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_pod(w: World, job: str, phase: str, job_uid: str | None = None, message: str = "") -> dict[str, Any]:
    """A pod of ``job`` (of the Job of that name now, unless ``job_uid``), as the pod informer sees it."""
    uid = job_uid or w.api.objects[("Job", NS, job)]["metadata"]["uid"]
    state = {"terminated": {"exitCode": 0, "message": message, "finishedAt": ENDED}} if phase == "Succeeded" else {}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"{job}-{uid[:5]}", "namespace": NS, "uid": f"pod-{uid}", "resourceVersion": "1",
                        "labels": {"job-name": job, JOB_UID_LABEL: uid}},
           "spec": {"containers": [{"name": "task", "command": ["true"]}]},
           "status": {"phase": phase, "containerStatuses": [{"name": "task", "state": state}]}}
    w.op.cache.job_pods.event("ADDED", w.op.cache.job_pods.slim(pod))
    return pod


def test_a_run_succeeds_when_its_pod_does_before_its_job_says_so():
    """The Job controller writes Complete a second or more after the pod ends (it batches pod
    updates, then writes its status three times): the run's outcome is the pod's, at once, from
    the pod informer, and its Job, still without Complete, is not taken for a running one."""
    w = World(task(), taskrun("r"))
    w.settle("r")
    job_pod(w, "r-1", "Succeeded", job_uid="a-deleted-job-of-that-name")
    w.settle("r")
    assert w.status("r")["phase"] == "Running"  # another Job's pod ends nothing
    w.op.run_queue._queued.clear()
    job_pod(w, "r-1", "Succeeded", message="42")
    assert (NS, "r") in w.op.run_queue._queued  # woken by the pod's end
    w.reconcile("r")
    status = w.status("r")
    assert (status["phase"], status["result"], status["completionTime"]) == ("Succeeded", 42, ENDED)
    w.settle("r")
    assert [fn for fn, _ in w.api.calls if fn in ("delete_jobs", "list_pods")] == []  # its Job left to end on its own
    w.api.finish_job(NS, "r-1")
    w.restart()  # nothing in memory: its Job, Complete now, confirms the success (core.status_trust)
    w.settle("r")
    assert w.status("r")["phase"] == "Succeeded" and w.api.created() == ["r-1"]


def test_a_finished_run_that_still_owns_a_running_job_deletes_it():
    w = World(task(), taskrun("r"))
    w.settle("r")
    w.api.update("TaskRun", NS, "r", status={"phase": "Cancelled"})  # e.g. an older operator's write
    w.restart()  # (this one's own would be put back: core.status_trust)
    w.reconcile("r")
    assert not w.api.jobs()


@pytest.mark.parametrize("first", ["a", "b"])
def test_of_two_runs_with_one_key_the_first_created_runs_whatever_the_reconcile_order(first):
    w = World(task(), taskrun("a", idempotencyKey="k"), taskrun("b", idempotencyKey="k"))
    second = "b" if first == "a" else "a"
    for name in (first, second):  # neither has seen the other's status
        try:
            w.reconcile(name, deliver=False)
        except Requeue as wait:
            assert name == "b" and "waits for a" in str(wait)
    w.api.deliver(w.op.cache)
    w.settle("a", "b")
    assert w.api.created() == ["a-1"]
    loser = w.status("b")
    assert loser["phase"] == "Duplicate" and loser["duplicateOf"] == "a" and not loser.get("attempt")
    assert w.status("a")["phase"] == "Running"


def test_of_two_runs_with_one_key_that_do_not_see_each_other_exactly_one_runs():
    w = World(task(), taskrun("b", idempotencyKey="k"))  # "a", created first, not seen yet
    w.api.add(taskrun("a", idempotencyKey="k"))
    w.reconcile("b", deliver=False)
    w.api.deliver(w.op.cache)
    w.settle("a", "b")
    assert w.api.created() == ["b-1"]
    assert w.status("a")["phase"] == "Duplicate" and w.status("a")["duplicateOf"] == "b"


def test_a_claim_left_by_a_deleted_run_is_cleared_and_the_key_is_free_again():
    w = World(task(), taskrun("old", idempotencyKey="k"))
    w.settle("old")
    w.api.remove(("TaskRun", NS, "old"))  # the garbage collector has not removed its claim yet
    w.api.add(taskrun("new", idempotencyKey="k"))
    w.api.deliver(w.op.cache)
    w.settle("new")
    assert w.status("new")["phase"] == "Running" and "new-1" in w.api.created()


def test_concurrent_admissions_hand_out_one_slot_once():
    w = World(task(concurrency={"limit": 1}), *(taskrun(f"r{i}") for i in range(4)))

    async def all_at_once() -> None:
        await asyncio.gather(*(w.op.runs.reconcile((NS, f"r{i}")) for i in range(4)))

    asyncio.run(all_at_once())
    w.api.deliver(w.op.cache)
    assert len(w.api.created()) == 1
    assert sorted(w.status(f"r{i}")["phase"] for i in range(4)) == ["Queued", "Queued", "Queued", "Running"]


def test_a_run_deleted_while_the_operator_missed_it_frees_its_slot_on_relist():
    w = World(task(concurrency={"limit": 1}), taskrun("r1"))
    w.settle("r1")
    w.api.add(taskrun("r2"))
    w.api.deliver(w.op.cache)
    w.settle("r2")
    assert w.status("r2")["phase"] == "Queued"
    w.api.remove(("TaskRun", NS, "r1"))
    w.api.pending.clear()  # the DELETED event is lost (the watch broke; it resumes with 410)
    w.op.run_queue._queued.clear()
    w.api.relist(w.op.cache)
    assert (NS, "r2") in w.op.run_queue._queued  # woken by the synthesized delete
    w.settle("r2")
    assert w.status("r2")["phase"] == "Running"


def test_a_woken_run_deleted_before_it_takes_its_slot_wakes_the_next_at_once():
    w = World(task(concurrency={"limit": 1}), taskrun("r1"))
    w.settle("r1")
    w.api.add(taskrun("r2"))
    w.api.deliver(w.op.cache)
    w.api.add(taskrun("r3"))  # created a moment later: behind r2
    w.api.deliver(w.op.cache)
    w.settle("r2", "r3")
    assert w.status("r2")["phase"] == w.status("r3")["phase"] == "Queued"
    w.api.remove(("TaskRun", NS, "r1"))  # the slot frees: r2 is woken for it
    w.op.run_queue._queued.clear()
    w.api.deliver(w.op.cache)
    assert (NS, "r2") in w.op.run_queue._queued and (NS, "r3") not in w.op.run_queue._queued
    w.api.remove(("TaskRun", NS, "r2"))  # and leaves before its reconcile takes the slot
    w.op.run_queue._queued.clear()
    w.api.deliver(w.op.cache)
    assert (NS, "r3") in w.op.run_queue._queued  # not left for the resync
    w.settle("r3")
    assert w.status("r3")["phase"] == "Running"


def test_a_task_deleted_and_recreated_while_its_run_runs_does_not_disturb_it():
    w = World(task(), taskrun("r"))
    w.settle("r")
    w.api.remove(("Task", NS, "t"))
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Running"
    w.api.add(task())
    w.api.finish_job(NS, "r-1")
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Succeeded" and w.api.created() == ["r-1"]


def finished(name: str, ago: float, phase: str = "Succeeded", **spec: Any) -> dict[str, Any]:
    from datetime import datetime, timedelta, timezone

    done = (datetime.now(timezone.utc) - timedelta(seconds=ago)).isoformat()
    return {**taskrun(name, **spec), "status": {"phase": phase, "attempt": 1, "completionTime": done}}


def test_a_finished_run_is_deleted_when_its_ttl_is_up_and_not_before():
    w = World(task(retention={"ttlSecondsAfterFinished": 3600}), finished("old", 7200), finished("new", 60),
              finished("kept", 7200, ttlSecondsAfterFinished=0))
    for name in ("old", "new", "kept"):
        w.reconcile(name)
    assert ("TaskRun", NS, "old") not in w.api.objects
    assert ("TaskRun", NS, "new") in w.api.objects and ("TaskRun", NS, "kept") in w.api.objects
    assert w.reconcile("new") is not None  # looked at again when its time is up


def test_finished_runs_beyond_the_history_limit_are_deleted_oldest_first():
    w = World(task(retention={"historyLimit": 2}), *(finished(f"r{i}", 100 - i) for i in range(4)),
              finished("f1", 50, phase="Failed"), taskrun("live"))
    asyncio.run(w.op.tasks.reconcile((NS, "t")))
    left = sorted(k[2] for k in w.api.objects if k[0] == "TaskRun")
    assert left == ["f1", "live", "r2", "r3"]


def test_an_error_no_retry_can_mend_fails_the_run_with_its_reason():
    w = World(task(), taskrun("r", delay="99999999h"))  # past year 9999: datetime overflows
    assert w.reconcile("r") is None
    status = w.status("r")
    assert status["phase"] == "Failed" and w.api.created() == []
    assert status["conditions"][0]["reason"] == "ReconcileError" and "OverflowError" in status["conditions"][0]["message"]
    assert [(name, type_, reason) for name, type_, reason, _ in w.api.events] == [("r", "Warning", "ReconcileError")]


def test_a_busy_or_unreachable_api_server_is_retried_not_blamed_on_the_run():
    from kubernetes.client.exceptions import ApiException

    w = World(task(), taskrun("r"))
    real = w.api.create_or_get

    def busy(obj: dict[str, Any]) -> Any:
        raise ApiException(status=503, reason="Service Unavailable")

    w.api.create_or_get = busy  # type: ignore[method-assign]
    with pytest.raises(ApiException):
        w.reconcile("r")
    assert w.status("r") == {}
    w.api.create_or_get = real  # type: ignore[method-assign]
    w.reconcile("r")
    assert w.api.created() == ["r-1"] and w.status("r")["phase"] == "Running"


def waiting_pod(reason: str, message: str = "") -> dict[str, Any]:
    return {"status": {"phase": "Pending", "containerStatuses": [
        {"name": "task", "state": {"waiting": {"reason": reason, "message": message}}}]}}


def age_job(w: World, name: str, seconds: float) -> None:
    from datetime import timedelta

    created = (datetime.now(timezone.utc) - timedelta(seconds=seconds)).isoformat()
    w.api.update("Job", NS, name, metadata={"creationTimestamp": created}, status={"startTime": created})
    w.api.deliver(w.op.cache)


def test_a_pod_that_cannot_start_is_said_in_status_then_fails_its_attempt_at_the_deadline():
    w = World(task(retry={"maxAttempts": 2, "minDelay": "1s"}), taskrun("r"))
    w.op.runs.start_deadline = 60
    w.reconcile("r")  # starts attempt 1
    w.api.update("Job", NS, "r-1", status={"startTime": datetime.now(timezone.utc).isoformat()})  # pods made
    w.api.deliver(w.op.cache)
    again = w.reconcile("r")  # its Job seen, not ready: its pods are read START_CHECK seconds after they were made
    assert not any(fn == "list_pods" for fn, _ in w.api.calls) and w.status("r")["phase"] == "Running"
    assert isinstance(again, datetime) and 0 < (again - datetime.now(timezone.utc)).total_seconds() <= START_CHECK
    w.api.pods["r-1"] = [waiting_pod("ImagePullBackOff", 'Back-off pulling image "nope:1"')]
    age_job(w, "r-1", 20)
    w.reconcile("r")
    status = w.status("r")
    assert status["phase"] == "Running" and status["conditions"][0]["reason"] == "ImagePullBackOff"
    assert "nope:1" in status["conditions"][0]["message"] and "fails at" in status["conditions"][0]["message"]
    assert [e[2] for e in w.api.events] == ["ImagePullBackOff"]
    age_job(w, "r-1", 61)
    w.reconcile("r")
    status = w.status("r")
    assert ("Job", NS, "r-1") not in w.api.objects  # the attempt that never started is stopped
    assert status["phase"] == "Retrying" and status["attempts"][0]["reason"] == "ImagePullBackOff"
    assert "did not start" in status["attempts"][0]["message"]


def test_a_start_stopped_at_the_deadline_stays_a_failed_start_when_its_status_write_is_lost():
    """The operator deletes the Job of an attempt that never started, then writes why; if that
    write is lost (it dies, or meets a 409), the Job is gone when it decides again: the attempt
    is still the failed start the status showed, not JobLost, so a retry that shows the same
    problem fails at once (found in a CI run, under load)."""
    w = World(task(retry={"maxAttempts": 2, "minDelay": "1s"}), taskrun("r"))
    w.op.runs.start_deadline = 60
    w.reconcile("r")
    w.api.pods["r-1"] = [waiting_pod("ImagePullBackOff", 'Back-off pulling image "nope:1"')]
    age_job(w, "r-1", 20)
    w.reconcile("r")
    assert w.status("r")["conditions"][0]["reason"] == "ImagePullBackOff"
    age_job(w, "r-1", 61)
    lose_the_next_status_write(w, "r")
    assert ("Job", NS, "r-1") not in w.api.objects and w.status("r")["phase"] == "Running"
    w.api.deliver(w.op.cache)
    w.restart()
    w.settle("r")
    status = w.status("r")
    assert status["attempts"][0]["reason"] == "ImagePullBackOff", status["attempts"]
    assert "had not started when its Job was deleted" in status["attempts"][0]["message"]
    assert "JobLost" not in [e[2] for e in w.api.events]


def test_a_started_attempt_is_never_checked_for_its_start():
    w = World(task(), taskrun("r"))
    w.op.runs.start_deadline = 1
    w.reconcile("r")
    w.api.update("Job", NS, "r-1", status={"active": 1, "ready": 1})
    age_job(w, "r-1", 600)
    w.reconcile("r")
    assert not any(fn == "list_pods" for fn, _ in w.api.calls) and w.status("r")["phase"] == "Running"


def test_a_child_run_runs_only_when_its_parents_task_allows_its_task():
    w = World(task("parent", allowTrigger=["allowed"]), task("allowed"), task("other"), taskrun("p", "parent"),
              taskrun("ok", "allowed", parentRun="p"), taskrun("no", "other", parentRun="p"),
              taskrun("orphan", "allowed", parentRun="gone"))
    w.settle("ok", "no", "orphan")
    assert w.api.created() == ["ok-1"]
    for name in ("no", "orphan"):
        status = w.status(name)
        assert status["phase"] == "Failed" and status["conditions"][0]["reason"] == "TriggerNotAllowed", status
    assert "may not trigger Task 'other'" in w.status("no")["error"]["message"]


def test_what_kept_an_attempt_from_starting_stays_shown_while_its_job_ends():
    w = World(task(retry={"maxAttempts": 1}), taskrun("r"))
    w.op.runs.start_deadline = 600
    w.reconcile("r")
    w.api.pods["r-1"] = [waiting_pod("ImagePullBackOff")]  # may heal: the start deadline lasts
    age_job(w, "r-1", 30)
    w.reconcile("r")
    assert w.status("r")["conditions"][0]["reason"] == "ImagePullBackOff"
    w.api.pods["r-1"] = []  # the Job's deadline passed: its pod is deleted before the Job says Failed
    w.api.update("Job", NS, "r-1", status={"failed": 1, "conditions": [
        {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"}]})
    w.api.deliver(w.op.cache)
    w.reconcile("r")
    assert w.status("r")["conditions"][0]["reason"] == "ImagePullBackOff"


def test_a_container_still_on_its_way_at_the_deadline_fails_and_no_look_is_set_in_the_past():
    w = World(task(retry={"maxAttempts": 1}), taskrun("r"))
    w.op.runs.start_deadline = 60
    w.reconcile("r")
    w.api.deliver(w.op.cache)
    stale = w.api.update("Job", NS, "r-1", metadata={"creationTimestamp": "2020-01-01T00:00:00Z"})
    assert stale
    w.api.deliver(w.op.cache)
    again = w.reconcile("r")  # no startTime: the Job controller never got to it; nothing to blame yet
    assert isinstance(again, datetime) and again > datetime.now(timezone.utc)
    assert w.status("r")["phase"] == "Running"
    w.api.pods["r-1"] = [waiting_pod("ContainerCreating")]
    age_job(w, "r-1", 120)
    w.reconcile("r")
    status = w.status("r")
    assert status["phase"] == "Failed" and status["attempts"][0]["reason"] == "NotStarted", status


def test_the_first_jobs_post_is_timed_from_the_wake_up_of_its_run():
    from prometheus_client import REGISTRY

    from kubetasks.controller.queue import WOKEN_AT

    def observed() -> float:
        return REGISTRY.get_sample_value("kubetasks_job_start_latency_seconds_count", {"task": "timed"}) or 0.0

    w = World(task("timed"), taskrun("r", task_ref="timed"))
    w.reconcile("r")
    assert observed() == 0  # no wake-up of the queue's: nothing to time

    async def woken(name: str) -> None:
        WOKEN_AT.set(time.monotonic() - 0.2)
        await w.op.runs.reconcile((NS, name))

    w.api.add(taskrun("s", task_ref="timed"))
    w.api.deliver(w.op.cache)
    asyncio.run(woken("s"))
    w.api.deliver(w.op.cache)
    asyncio.run(woken("s"))  # Running already: no second first Job
    assert observed() == 1
    total = REGISTRY.get_sample_value("kubetasks_job_start_latency_seconds_sum", {"task": "timed"})
    assert total is not None and 0.2 <= total < 5


def test_a_job_refused_its_pod_for_a_missing_service_account_fails_the_run_at_its_first_look():
    w = World(task(retry={"maxAttempts": 3}), taskrun("r"))
    w.op.runs.start_deadline = 600
    w.reconcile("r")
    job_uid = w.api.objects[("Job", NS, "r-1")]["metadata"]["uid"]
    w.api.object_events.append({"type": "Warning", "reason": "FailedCreate", "involvedObject": {"uid": job_uid},
                                "message": 'Error creating: pods "r-1-" is forbidden: error looking up service '
                                           'account ns/robot: serviceaccount "robot" not found'})
    age_job(w, "r-1", 20)
    w.reconcile("r")
    assert ("list_by_fields", ("events", f"involvedObject.uid={job_uid}")) in w.api.calls
    status = w.status("r")
    assert status["phase"] == "Failed" and status["attempt"] == 1 and status["attempts"][0]["reason"] == "PodNotCreated"
    assert "ServiceAccount 'robot' does not exist" in status["error"]["message"]
    assert ("Job", NS, "r-1") not in w.api.objects


def test_a_missing_service_account_is_found_by_looking_when_the_job_controllers_event_is_late():
    w = World(task(retry={"maxAttempts": 3}, serviceAccountName="robot"), taskrun("r"))
    w.op.runs.start_deadline = 600
    w.reconcile("r")
    age_job(w, "r-1", 20)
    w.reconcile("r")
    assert ("get", ("serviceaccounts", "robot")) in w.api.calls
    status = w.status("r")
    assert status["phase"] == "Failed" and status["attempts"][0]["reason"] == "PodNotCreated"
    assert "ServiceAccount 'robot' does not exist" in status["error"]["message"]


def test_a_cancelled_runs_pods_are_deleted_once_more_a_moment_after_its_jobs():
    # A pod the Job controller was creating as the Job was deleted lands after the pods' delete:
    # it would stop only when the garbage collector got to it.
    w = World(task(), taskrun("r"))
    w.settle("r")
    w.api.update("TaskRun", NS, "r", spec={"cancel": True})
    w.api.deliver(w.op.cache)
    again = w.reconcile("r")
    assert w.status("r")["phase"] == "Cancelled" and again == 2.0
    assert [fn for fn, _ in w.api.calls].count("delete_pods") == 0
    w.reconcile("r")
    w.reconcile("r")
    assert [fn for fn, _ in w.api.calls].count("delete_pods") == 1  # once, not at every look


def test_a_cancelled_runs_pods_stop_within_the_grace_period_their_job_was_made_with():
    # The deletes give no grace period of their own (kube.delete_jobs/delete_pods take none): each
    # pod gets the one in its spec, from the version the run is locked to, whatever the Task says since.
    w = World(task(stopGracePeriod="40s"), taskrun("r"))
    w.settle("r")
    [job] = w.api.jobs()
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 40
    w.api.update("Task", NS, "t", spec={"image": "img:1", "command": ["true"], "stopGracePeriod": "2s"})
    w.api.update("TaskRun", NS, "r", spec={"cancel": True})
    w.api.deliver(w.op.cache)
    w.reconcile("r")
    w.reconcile("r")
    assert w.status("r")["phase"] == "Cancelled"
    assert [fn for fn, _ in w.api.calls if fn.startswith("delete_")] == ["delete_jobs", "delete_pods"]
