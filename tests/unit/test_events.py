"""Events (TaskEvent): names, CEL filters, and the dispatcher against a fake API server: an event
starts one run of each subscribed Task whose filter matches, and a resend or a restarted operator
creates nothing twice."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

from kubetasks.api.task import Task
from kubetasks.controller.cache import Cache
from kubetasks.controller.events import EventReconciler
from kubetasks.core.events import (
    LABEL_EVENT, LABEL_EVENT_ID, evaluate, event_object_name, event_run_name, expires_at, filter_error, subscribers,
)
from kubetasks.core.task_status import task_problem
from tests.unit.fakeapi import FakeApi

NS = "ns"


def task_body(name: str, *on: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": name, "namespace": NS},
            "spec": {"image": "img:1", "command": ["true"], "on": list(on)}}


def event_body(event: str = "user.created", id_: str = "u1", data: Any = None) -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskEvent",
            "metadata": {"name": event_object_name(event, id_), "namespace": NS},
            "spec": {"event": event, "id": id_, "data": {"plan": "pro"} if data is None else data}}


def test_names_are_deterministic_and_distinct():
    assert event_object_name("user.created", "a") == event_object_name("user.created", "a")
    assert event_object_name("user.created", "a") != event_object_name("user.created", "b")
    assert event_object_name("user.created", "a").startswith("user.created-")
    assert event_run_name("t", "user.created", "a") != event_run_name("u", "user.created", "a")
    assert len(event_run_name("x" * 253, "e", "i")) <= 253


def test_filters_compile_match_and_fail_to_no_match():
    assert filter_error('data.plan == "pro"') is None
    assert "syntax error" in (filter_error("data.plan ==") or "")
    assert evaluate('data.plan == "pro"', {"plan": "pro"}, "e", "i").matched
    assert not evaluate('data.plan == "pro"', {"plan": "free"}, "e", "i").matched
    missing = evaluate('data.plan == "pro"', {}, "e", "i")
    assert not missing.matched and missing.error
    assert not evaluate("data.n", {"n": 1}, "e", "i").matched  # not a bool
    assert evaluate('event == "e" && id == "i"', None, "e", "i").matched


def test_a_filter_that_does_not_compile_makes_the_task_not_ready_and_is_skipped():
    task = Task.model_validate(task_body("bad", {"event": "user.created", "filter": "data.plan =="}))
    problem = task_problem(task)
    assert problem is not None and problem.reason == "InvalidFilter"
    assert "spec.on[0] (user.created)" in problem.message and "syntax error" in problem.message
    assert subscribers([task], "user.created", "u1", {"plan": "pro"}) == []


def test_subscribers_are_those_whose_filter_matches():
    tasks = [Task.model_validate(b) for b in (
        task_body("welcome", {"event": "user.created"}),
        task_body("pro", {"event": "user.created", "filter": 'data.plan == "pro"'}),
        task_body("free", {"event": "user.created", "filter": 'data.plan == "free"'}),
        task_body("other", {"event": "user.deleted"}),
        task_body("missing", {"event": "user.created", "filter": "data.nope == 1"}))]
    chosen = subscribers(tasks, "user.created", "u1", {"plan": "pro"})
    assert [(s.task.name, s.error is None) for s in chosen] == [("missing", False), ("pro", True), ("welcome", True)]


def test_expiry_is_retention_after_creation():
    created = datetime(2026, 12, 1, tzinfo=timezone.utc)
    body = {"metadata": {"creationTimestamp": created.isoformat()}}
    assert expires_at(body, timedelta(hours=24)) == created + timedelta(hours=24)
    assert expires_at(body, timedelta(0)) is None


class World:
    def __init__(self) -> None:
        self.api = FakeApi()
        self.cache = Cache()
        for body in (task_body("welcome", {"event": "user.created"}),
                     task_body("pro", {"event": "user.created", "filter": 'data.plan == "pro"'}),
                     task_body("free", {"event": "user.created", "filter": 'data.plan == "free"'})):
            self.api.add(body)
        self.api.deliver(self.cache)
        self.events = EventReconciler(self.cache, self.api)

    def send(self, **kw: Any) -> tuple[str, str]:
        body = event_body(**kw)
        created, _ = self.api.create_or_get(body)
        self.api.deliver(self.cache)
        return NS, body["metadata"]["name"]

    def reconcile(self, key: tuple[str, str]) -> Any:
        result = asyncio.run(self.events.reconcile(key))
        self.api.deliver(self.cache)
        return result

    def runs(self) -> list[dict[str, Any]]:
        return [o for k, o in self.api.objects.items() if k[0] == "TaskRun"]


def test_an_event_starts_one_run_of_each_matching_subscriber():
    world = World()
    key = world.send()
    world.reconcile(key)
    runs = world.runs()
    assert sorted(r["spec"]["taskRef"] for r in runs) == ["pro", "welcome"]
    assert all(r["spec"]["payload"] == {"plan": "pro"} for r in runs)
    assert all(r["metadata"]["labels"][LABEL_EVENT] == "user.created" and r["metadata"]["labels"][LABEL_EVENT_ID] == "u1"
               for r in runs)
    status = world.api.objects[("TaskEvent", *key)]["status"]
    assert sorted(status["runs"]) == sorted(r["metadata"]["name"] for r in runs) and status["dispatchedAt"]
    assert "data" not in world.cache.events.get(key)["spec"]  # dispatched: its data is not held


def test_a_resend_or_a_restart_creates_nothing_twice():
    world = World()
    key = world.send()
    # The operator died after creating the runs, before writing the status: the next one (a
    # fresh cache, as after a restart) finds the names taken by this event's runs.
    asyncio.run(world.events._start(world.cache.events.get(key), Task.model_validate(world.cache.tasks.get((NS, "welcome")))))
    world.api.deliver(world.cache)
    restarted = World.__new__(World)
    restarted.api, restarted.cache = world.api, Cache()
    world.api.relist(restarted.cache)
    restarted.events = EventReconciler(restarted.cache, world.api)
    restarted.reconcile(key)
    assert sorted(world.api.created("TaskRun")) == sorted([event_run_name("welcome", "user.created", "u1"),
                                                           event_run_name("pro", "user.created", "u1")])
    assert len(world.api.objects[("TaskEvent", *key)]["status"]["runs"]) == 2
    # A resend: the same (event, id) is the same TaskEvent, a 409.
    created, _ = world.api.create_or_get(event_body())
    assert not created
    restarted.reconcile(key)
    assert len(world.runs()) == 2


def test_a_run_name_held_by_another_run_is_not_taken_for_the_events():
    world = World()
    name = event_run_name("welcome", "user.created", "u1")
    world.api.add({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name, "namespace": NS},
                   "spec": {"taskRef": "welcome"}})
    key = world.send()
    world.reconcile(key)
    assert world.api.objects[("TaskEvent", *key)]["status"]["runs"] == [event_run_name("pro", "user.created", "u1")]
    assert any(reason == "RunNameTaken" for _, _, reason, _ in world.api.events)


def test_a_filter_failing_on_the_data_warns_and_starts_nothing():
    world = World()
    world.api.add(task_body("nested", {"event": "user.created", "filter": "data.profile.age > 18"}))
    key = world.send()
    world.reconcile(key)
    assert "nested" not in [r["spec"]["taskRef"] for r in world.runs()]
    assert any(reason == "FilterFailed" and "nested" in message for _, _, reason, message in world.api.events)


def test_an_expired_event_is_deleted():
    world = World()
    key = world.send()
    world.api.update("TaskEvent", *key, metadata={
        "creationTimestamp": (datetime.now(timezone.utc) - timedelta(hours=25)).isoformat()})
    world.api.deliver(world.cache)
    world.reconcile(key)
    assert ("TaskEvent", *key) not in world.api.objects
    fresh = world.send(id_="u2")
    assert isinstance(world.reconcile(fresh), datetime)  # looked at again when it expires


def test_the_examples_taskevent_has_the_name_kubetasks_send_gives_it():
    from pathlib import Path

    import yaml

    docs = yaml.safe_load_all((Path(__file__).resolve().parents[2] / "examples" / "events.yaml").read_text())
    [event] = [d for d in docs if d and d["kind"] == "TaskEvent"]
    assert event["metadata"]["name"] == event_object_name(event["spec"]["event"], event["spec"]["id"])


def test_a_bad_filter_does_not_stop_the_tasks_cron_ticks():
    body = task_body("nightly", {"event": "user.created", "filter": "data.plan =="})
    body["spec"]["schedule"] = "0 3 * * *"
    problem = task_problem(Task.model_validate(body))
    assert problem is not None and problem.reason == "InvalidFilter" and not problem.stops_schedule
    body["spec"]["schedule"] = "61 3 * * *"
    assert task_problem(Task.model_validate(body)).stops_schedule  # a bad schedule is said first, and stops it


def test_a_run_refused_for_good_is_skipped_with_a_warning_and_the_others_run(monkeypatch):
    from kubetasks import kube

    world = World()
    create = world.api.create_or_get

    def refuse_pro(obj):
        if obj["spec"].get("taskRef") == "pro":
            raise kube.ApiException(status=403, reason="Forbidden")
        return create(obj)

    monkeypatch.setattr(world.api, "create_or_get", refuse_pro)
    key = world.send()
    world.reconcile(key)
    assert [r["spec"]["taskRef"] for r in world.runs()] == ["welcome"]
    assert any(reason == "RunNotCreated" and "pro" in message for _, _, reason, message in world.api.events)
