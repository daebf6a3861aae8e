"""ctx.step.wait_for_event with checkpoints in memory, and the operator's choice (EventWaits)
against a fake API server: the attempt ends until an event is chosen; the oldest matching event
since the step was first reached minus the lookback is chosen once, and replays return it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from kubetasks.api.taskrun import TaskRun
from kubetasks.controller.cache import Cache
from kubetasks.controller.event_waits import EventWaits
from kubetasks.core.event_waits import EventWait, candidates, entry, event_of, event_waits
from kubetasks.core.events import event_object_name
from kubetasks.core.naming import checkpoint_name
from kubetasks.core.waits import children_in, events_in
from kubetasks.protocol import parse_checkpoints, steps_from_configmap
from kubetasks.runtime import Context, EventTimeout, MemoryStore
from kubetasks.runtime.errors import WaitRequested
from tests.unit.fakeapi import FakeApi

NS, RUN, UID = "ns", "waiter", "0123456789abcdef"
T0 = datetime(2026, 12, 5, 12, 0, 0, 500000, tzinfo=timezone.utc)


def taskevent(id_: str, data: Any, created: datetime, event: str = "order.paid") -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskEvent",
            "metadata": {"name": event_object_name(event, id_), "namespace": NS,
                         "creationTimestamp": created.replace(microsecond=0).isoformat()},
            "spec": {"event": event, "id": id_, "data": data}}


def wait(store: MemoryStore, n: int, now: datetime, **kw: Any) -> Any:
    ctx = Context.local({}, run_id=UID, attempt=n, store=store, clock=lambda: now)
    return ctx.step.wait_for_event("paid", "order.paid", **kw)


def test_entries_are_not_children_and_name_their_event():
    e = entry("order.paid", "a/b")
    assert events_in([e, "child-1"]) == [e] and children_in([e, "child-1", "waitpoint:x"]) == ["child-1"]
    assert event_of(e) == "order.paid"


def test_lookback_is_taken_to_the_second_and_oldest_first():
    w = EventWait("paid", "order.paid", None, T0 - timedelta(milliseconds=200), None)
    before = taskevent("a", {}, T0 - timedelta(seconds=2))
    same_second = taskevent("b", {}, T0 - timedelta(milliseconds=200))  # 12:00:00 once truncated
    later = taskevent("c", {}, T0 + timedelta(seconds=3))
    other = taskevent("d", {}, T0, event="order.refunded")
    assert [b["spec"]["id"] for b in candidates([later, before, other, same_second], w)] == ["b", "c"]


class Operator:
    def __init__(self) -> None:
        self.api, self.cache = FakeApi(), Cache()
        self.store = MemoryStore()
        self.waits = EventWaits(self.cache, lambda fn, *a: asyncio.to_thread(getattr(self.api, fn), *a))
        self.run = TaskRun.model_validate({"metadata": {"name": RUN, "namespace": NS, "uid": UID},
                                           "spec": {"taskRef": "t"}})

    def send(self, body: dict[str, Any]) -> None:
        body["metadata"]["uid"] = "uid-" + body["spec"]["id"]
        self.api.objects[("TaskEvent", NS, body["metadata"]["name"])] = body
        self.cache.events.event("ADDED", self.cache.events.slim({**body, "metadata": {**body["metadata"],
                                                                                    "resourceVersion": "1"}}))

    def decide(self, attempt: int, now: datetime) -> tuple[list[str], datetime | None]:
        """The operator looks: the pod's checkpoints are the ConfigMap it reads and patches."""
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": checkpoint_name(RUN, UID), "namespace": NS},
              "data": dict(self.store.data)}
        self.api.objects[("ConfigMap", NS, cm["metadata"]["name"])] = cm
        waiting, check_at, _ = asyncio.run(self.waits.pending(self.run, UID, attempt, now, dict(cm["data"])))
        self.store.data = dict(self.api.objects[("ConfigMap", NS, cm["metadata"]["name"])]["data"])
        return waiting, check_at


def test_an_event_sent_just_before_the_wait_is_chosen_once_and_replayed():
    op = Operator()
    op.send(taskevent("early", {"order": "o-1"}, T0 - timedelta(milliseconds=200)))
    with pytest.raises(WaitRequested):
        wait(op.store, 1, T0, match='data.order == "o-1"', timeout="1h", lookback=0)
    assert [s.waiting_on for s in steps_from_configmap(op.store.data)] == [[entry("order.paid", "paid")]]
    pending, _ = op.decide(1, T0 + timedelta(seconds=1))
    assert pending == []
    op.send(taskevent("later", {"order": "o-1"}, T0 + timedelta(seconds=5)))
    got = wait(op.store, 2, T0 + timedelta(seconds=10), match='data.order == "o-1"', timeout="1h")
    assert (got.id, got.data) == ("early", {"order": "o-1"})
    assert op.decide(2, T0 + timedelta(seconds=11)) == ([], None)  # over: nothing chosen again
    again = wait(op.store, 3, T0 + timedelta(seconds=20), match='data.order == "o-1"', timeout="1h")
    assert again == got
    assert all(not k.startswith("taskevent:") for k in (s.name for s in steps_from_configmap(op.store.data)))


def test_a_wait_waits_for_a_matching_event_then_times_out():
    op = Operator()
    with pytest.raises(WaitRequested):
        wait(op.store, 1, T0, match='data.order == "o-2"', timeout="60s")
    op.send(taskevent("wrong", {"order": "o-9"}, T0 + timedelta(seconds=1)))
    op.send(taskevent("broken", {"no": "order"}, T0 + timedelta(seconds=2)))  # the match fails on it: no match
    pending, check_at = op.decide(1, T0 + timedelta(seconds=5))
    assert pending == [entry("order.paid", "paid")] and check_at == T0 + timedelta(seconds=60)
    reads = len([c for c in op.api.calls if c[0] == "get"])
    assert op.decide(1, T0 + timedelta(seconds=5))[0] == pending
    assert len([c for c in op.api.calls if c[0] == "get"]) == reads, "the events it refused are not read again"
    with pytest.raises(WaitRequested):  # woken before a choice: it waits on
        wait(op.store, 2, T0 + timedelta(seconds=6), match='data.order == "o-2"', timeout="60s")
    assert op.decide(2, T0 + timedelta(seconds=61)) == ([], None)
    with pytest.raises(EventTimeout):
        wait(op.store, 3, T0 + timedelta(seconds=62), match='data.order == "o-2"', timeout="60s")
    assert event_waits(parse_checkpoints(op.store.data), 3) == []


def test_a_match_that_does_not_compile_fails_the_step_at_once():
    with pytest.raises(ValueError, match="does not compile"):
        wait(MemoryStore(), 1, T0, match="data.order ==")


def test_wait_any_fires_on_an_event_and_replays_it():
    op = Operator()

    def first(n: int, now: datetime) -> Any:
        ctx = Context.local({}, run_id=UID, attempt=n, store=op.store, clock=lambda: now)
        return ctx.step.wait_any("either", events=[("order.refunded", None), ("order.paid", 'data.order == "o-3"')],
                                 timeout="1h", lookback="5s")

    with pytest.raises(WaitRequested):
        first(1, T0)
    [step] = steps_from_configmap(op.store.data)
    assert step.any_of and step.waiting_on == [entry("order.refunded", "either#event-0"),
                                               entry("order.paid", "either#event-1")]
    op.send(taskevent("p-3", {"order": "o-3"}, T0 - timedelta(seconds=3)))  # within the lookback
    pending, _ = op.decide(1, T0 + timedelta(seconds=1))
    assert pending == [entry("order.refunded", "either#event-0")]  # the wait_any is over: core.waits says so
    fired = first(2, T0 + timedelta(seconds=2))
    assert (fired.kind, fired.index, fired.value.id) == ("event", 1, "p-3")
    assert first(3, T0 + timedelta(seconds=3)) == fired
