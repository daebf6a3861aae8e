"""Cron ticks against a fake API server: a run that holds a tick's name stands for the tick only
when it is this Task's (its UID, the tick's labels and annotation, the Task's payload)."""

from __future__ import annotations

import asyncio
import copy
from datetime import datetime, timedelta, timezone
from typing import Any

from kubetasks.api.task import Task, TaskStatus
from kubetasks.controller.cache import Cache
from kubetasks.controller.cron import Scheduler, render_scheduled_run, scheduled_mismatch
from kubetasks.core.naming import scheduled_run_name
from tests.unit.fakeapi import FakeApi

NS = "ns"
TICK = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
NOW = TICK + timedelta(seconds=2)
PAYLOAD = {"report": "daily"}


class Queue:
    def __init__(self) -> None:
        self.added: list[Any] = []

    def add_after(self, key: Any, when: Any) -> None:
        self.added.append((key, when))


def task_body(name: str = "report", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task",
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": (TICK - timedelta(seconds=30)).isoformat()},
            "spec": {"image": "img:1", "command": ["true"], "schedule": "* * * * *", "payload": PAYLOAD, **spec}}


def forged(name: str, task: str = "report", payload: Any = None, **meta: Any) -> dict[str, Any]:
    """What a task pod (or anyone who may create TaskRuns) can make: the tick's name and labels."""
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
            "metadata": {"name": name, "namespace": NS,
                         "labels": {"kubetasks.io/task": task, "kubetasks.io/scheduled": "true"},
                         "annotations": {"kubetasks.io/scheduled-at": TICK.isoformat()}, **meta},
            "spec": {"taskRef": task, "payload": {"report": "forged"} if payload is None else payload}}


class Cron:
    def __init__(self, *objects: dict[str, Any], **spec: Any) -> None:
        self.api = FakeApi()
        self.cache = Cache()
        self.body = self.api.add(task_body(**spec))
        for obj in objects:
            self.api.add(obj)
        self.api.deliver(self.cache)
        self.scheduler = Scheduler(self.cache, Queue(), Queue(), api=self.api)  # type: ignore[arg-type]

    @property
    def task(self) -> Task:
        return Task.model_validate(self.cache.tasks.get((NS, "report")))

    @property
    def uid(self) -> str:
        return str(self.body["metadata"]["uid"])

    def tick(self, status: TaskStatus | None = None, now: datetime = NOW) -> TaskStatus:
        result = asyncio.run(self.scheduler(self.task, status or TaskStatus(), now))
        self.api.deliver(self.cache)
        return result

    def run(self, name: str) -> dict[str, Any]:
        return self.api.objects[("TaskRun", NS, name)]

    def warnings(self) -> list[tuple[str, str]]:
        return [(reason, message) for _, type_, reason, message in self.api.events if type_ == "Warning"]


PLAIN = scheduled_run_name("report", TICK)


def test_a_tick_run_is_controlled_by_its_task_and_carries_the_tick():
    c = Cron()
    status = c.tick()
    run = c.run(PLAIN)
    assert run["metadata"]["ownerReferences"] == [{"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task",
                                                   "name": "report", "uid": c.uid, "controller": True,
                                                   "blockOwnerDeletion": False}]
    assert run["metadata"]["labels"]["kubetasks.io/scheduled"] == "true"
    assert run["metadata"]["annotations"]["kubetasks.io/scheduled-at"] == TICK.isoformat()
    assert run["spec"] == {"taskRef": "report", "payload": PAYLOAD}
    assert status.last_schedule_time == TICK and status.active_runs == [PLAIN] and c.api.events == []


def test_the_tasks_own_run_found_again_is_the_tick_with_no_warning():
    # The operator made the run, then restarted before lastScheduleTime was written.
    c = Cron()
    c.tick()
    status = c.tick()  # the same status again: lastScheduleTime not recorded
    assert c.api.created("TaskRun") == [PLAIN]
    assert status.active_runs == [PLAIN] and c.warnings() == []


def test_a_squatted_tick_name_is_not_adopted_and_the_tick_runs_under_the_task_uid():
    c = Cron(forged(PLAIN))
    status = c.tick()
    qualified = scheduled_run_name("report", TICK, c.uid)
    assert c.api.created("TaskRun") == [qualified]
    assert c.run(qualified)["spec"]["payload"] == PAYLOAD
    assert c.run(PLAIN)["spec"]["payload"] == {"report": "forged"}  # left as it was, not adopted
    assert status.active_runs == [qualified] and status.last_schedule_time == TICK
    [(reason, message)] = c.warnings()
    assert reason == "TickNameTaken" and PLAIN in message and qualified in message
    assert "not controlled by this Task" in message and "forged" not in message  # never quotes a payload


def test_a_second_look_at_a_squatted_tick_neither_warns_again_nor_cancels_its_run():
    # Replace cancels other active runs: the tick's own qualified run is not one of them.
    c = Cron(forged(PLAIN), concurrencyPolicy="Replace")
    c.tick()
    qualified = scheduled_run_name("report", TICK, c.uid)
    status = c.tick()  # a stale status: lastScheduleTime not seen yet
    assert c.api.created("TaskRun") == [qualified]
    assert not c.run(qualified)["spec"].get("cancel")
    assert ("patch_spec", (qualified,)) not in c.api.calls
    assert len(c.warnings()) == 1 and status.active_runs == [qualified]


def test_a_forged_run_with_the_tasks_owner_but_another_payload_is_not_adopted():
    c = Cron()
    owner = {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "name": "report", "uid": c.uid, "controller": True}
    c.api.add(forged(PLAIN, ownerReferences=[owner]))
    c.api.deliver(c.cache)
    c.tick()
    [(reason, message)] = c.warnings()
    assert reason == "TickNameTaken" and "spec is not the Task's" in message
    assert c.api.created("TaskRun") == [scheduled_run_name("report", TICK, c.uid)]


def test_both_names_squatted_skips_the_tick_with_a_warning():
    c = Cron()
    qualified = scheduled_run_name("report", TICK, c.uid)
    for name in (PLAIN, qualified):
        c.api.add(forged(name))
    c.api.deliver(c.cache)
    status = c.tick()
    assert c.api.created("TaskRun") == []
    assert status.last_schedule_time == TICK and status.active_runs == []  # skipped, not retried forever
    assert [reason for reason, _ in c.warnings()] == ["TickNameTaken", "SkippedTick"]
    assert PLAIN in c.warnings()[1][1] and qualified in c.warnings()[1][1]


def test_a_forged_scheduled_run_is_never_counted_cancelled_or_pruned():
    # Someone else's run with the scheduled label and the taskRef, still active, and some finished.
    old = forged("report-1")
    done = [forged(f"report-{i}") for i in (2, 3, 4, 5)]
    c = Cron(old, *done, concurrencyPolicy="Forbid", successfulRunsHistoryLimit=1)
    for run in done:
        c.api.update("TaskRun", NS, run["metadata"]["name"],
                     status={"phase": "Succeeded", "completionTime": TICK.isoformat()})
    c.api.deliver(c.cache)
    status = c.tick()
    assert c.api.created("TaskRun") == [PLAIN]  # Forbid did not wait for the forged active run
    assert status.active_runs == [PLAIN]
    assert not [call for call in c.api.calls if call[0] in ("patch_spec", "delete")]


def test_mismatch_ignores_defaults_and_cancel_but_not_overrides():
    task = Task.model_validate({**task_body(), "metadata": {**task_body()["metadata"], "uid": "u-1"}})
    wanted = render_scheduled_run(task, PLAIN, TICK)
    same = copy.deepcopy(wanted)
    same["spec"].update(cancel=True, tags=[])
    assert scheduled_mismatch(same, wanted) is None
    bigger = copy.deepcopy(wanted)
    bigger["spec"]["machine"] = {"preset": "large-2x"}
    assert scheduled_mismatch(bigger, wanted) == "its spec is not the Task's (taskRef, payload or an override differs)"
    other_tick = copy.deepcopy(wanted)
    other_tick["metadata"]["annotations"]["kubetasks.io/scheduled-at"] = (TICK + timedelta(minutes=1)).isoformat()
    assert scheduled_mismatch(other_tick, wanted) == "it is not scheduled at this tick"
    unlabelled = copy.deepcopy(wanted)
    del unlabelled["metadata"]["labels"]["kubetasks.io/scheduled"]
    assert scheduled_mismatch(unlabelled, wanted) == "it lacks the labels of this Task's scheduled runs"
