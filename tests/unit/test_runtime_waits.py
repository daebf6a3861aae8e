"""ctx.step.trigger_and_wait and batch_trigger_and_wait, with checkpoints in memory and a fake
cluster of runs (a retry is a new Context on the same store): children are triggered once, the
attempt ends until they finish, and their outcomes are read once and then replayed."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from kubetasks.core.naming import idempotent_run_name
from kubetasks.protocol import Checkpoint, parse_checkpoints
from kubetasks.runtime import Context, MemoryStore
from kubetasks.runtime import waits
from kubetasks.runtime.errors import ChildFailed, DuplicateStepKey, RunFailed, WaitRequested
from kubetasks.runtime.trigger import RunHandle
from kubetasks.runtime.waits import child_keys


class Total(BaseModel):
    total: int


class Child:
    """What trigger_and_wait needs of a @task: an id and its models."""

    id = "child"
    payload_model = None
    result_model = Total


class Runs:
    """The runs a fake cluster holds: created by trigger, read by RunHandle.look."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.created: list[tuple[str, Any]] = []
        self.looks: list[str] = []
        self.outcomes: dict[str, tuple[bool, Any] | Exception] = {}
        self.order: list[str] = []  # "trigger" and "put", as they happened

        def trigger(task: Any, payload: Any, key: str, **options: Any) -> RunHandle:
            name = idempotent_run_name("child", key)
            if name not in [n for n, _ in self.created]:
                self.created.append((name, payload))
            self.order.append("trigger")
            return RunHandle(name, "ns")

        def look(handle: RunHandle) -> tuple[bool, Any, str]:
            self.looks.append(handle.name)
            found = self.outcomes.get(handle.name, (False, None))
            if isinstance(found, Exception):
                raise found
            return found[0], found[1], handle.name

        monkeypatch.setattr(waits, "trigger_child", trigger)
        monkeypatch.setattr(RunHandle, "look", look)
        monkeypatch.setattr(waits, "_namespace", lambda: "ns")

    def names(self) -> list[str]:
        return [n for n, _ in self.created]


class Recording(MemoryStore):
    def __init__(self, runs: Runs) -> None:
        super().__init__()
        self.runs = runs

    def save(self, key: str, value: str) -> None:
        self.runs.order.append("put")
        super().save(key, value)


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Runs:
    return Runs(monkeypatch)


def attempt(store: MemoryStore, n: int) -> Context:
    return Context.local({}, run_id="parent-uid", attempt=n, store=store)


def test_children_are_triggered_then_recorded_and_the_attempt_ends(runs: Runs):
    store, side_effects = Recording(runs), []

    def parent(ctx: Context) -> Any:
        ctx.step.run("before", lambda: side_effects.append("before") or 1)
        return ctx.step.trigger_and_wait("sum", Child(), {"n": 3})

    with pytest.raises(WaitRequested) as waited:
        parent(attempt(store, 1))
    [name] = runs.names()
    assert waited.value.runs == [name] and name == idempotent_run_name("child", "parent-uid:sum")
    assert runs.order == ["put", "trigger", "put"]  # the step, then the child, then the wait's record
    record = parse_checkpoints(store.data)["sum"]
    assert (record.kind, record.waiting_on, record.completed) == ("wait", (name,), False)

    runs.outcomes[name] = (True, {"total": 6})
    assert parent(attempt(store, 2)) == Total(total=6)  # typed by the child's result model
    assert parse_checkpoints(store.data)["sum"].completed and parse_checkpoints(store.data)["sum"].attempt == 2
    looks = len(runs.looks)
    assert parent(attempt(store, 3)) == Total(total=6)  # replayed from the record: not read again
    assert len(runs.looks) == looks and side_effects == ["before"] and len(runs.created) == 1


def test_a_failed_child_raises_child_failed_which_the_parent_can_catch(runs: Runs):
    store = MemoryStore()

    def parent(ctx: Context) -> str:
        try:
            ctx.step.trigger_and_wait("risky", "child", None)
        except ChildFailed as e:
            return f"{e.run} {e.phase} {e.error.get('type')}"
        return "ok"

    with pytest.raises(WaitRequested):
        parent(attempt(store, 1))
    [name] = runs.names()
    runs.outcomes[name] = RunFailed(name, "Failed", {"type": "ValueError", "message": "no"})
    assert parent(attempt(store, 2)) == f"{name} Failed ValueError"
    assert parent(attempt(store, 3)) == f"{name} Failed ValueError"  # the same outcome on replay
    assert issubclass(ChildFailed, RunFailed)


def test_a_batch_waits_for_all_and_returns_results_in_order(runs: Runs):
    store = MemoryStore()

    def parent(ctx: Context) -> list[Any]:
        return ctx.step.batch_trigger_and_wait("fan", "child", [{"i": i} for i in range(3)])

    with pytest.raises(WaitRequested) as waited:
        parent(attempt(store, 1))
    names = runs.names()
    assert names == [idempotent_run_name("child", k) for k in child_keys("parent-uid", "fan", 3)]
    assert waited.value.runs == names and [p for _, p in runs.created] == [{"i": 0}, {"i": 1}, {"i": 2}]
    runs.outcomes.update({names[0]: (True, 0), names[2]: (True, 2)})
    with pytest.raises(WaitRequested) as again:  # woken before the last one finished: waits on
        parent(attempt(store, 2))
    assert again.value.runs == [names[1]] and parse_checkpoints(store.data)["fan"].attempt == 2
    runs.outcomes[names[1]] = RunFailed(names[1], "Cancelled")
    with pytest.raises(ChildFailed) as failed:
        parent(attempt(store, 3))
    assert failed.value.run == names[1] and failed.value.results[0] == 0 and failed.value.results[2] == 2
    assert isinstance(failed.value.results[1], ChildFailed)
    assert len(runs.created) == 3  # never triggered again


def test_a_child_deleted_before_it_was_read_fails_not_found(runs: Runs, monkeypatch: pytest.MonkeyPatch):
    from kubernetes.client.exceptions import ApiException

    monkeypatch.setattr(waits.time, "sleep", lambda s: None)
    store = MemoryStore()
    with pytest.raises(WaitRequested):
        attempt(store, 1).step.trigger_and_wait("w", "child")
    runs.outcomes[runs.names()[0]] = ApiException(status=404, reason="Not Found")
    with pytest.raises(ChildFailed) as failed:
        attempt(store, 2).step.trigger_and_wait("w", "child")
    assert failed.value.phase == "NotFound" and len(runs.looks) == waits.READ_TRIES


def test_keys_are_checked(runs: Runs):
    store = MemoryStore()
    ctx = attempt(store, 1)
    with pytest.raises(TypeError, match="idempotency"):
        ctx.step.trigger_and_wait("k", "child", idempotency_key="mine")
    with pytest.raises(TypeError, match="namespace"):
        ctx.step.trigger_and_wait("k", "child", namespace="elsewhere")
    ctx.step.run("used", lambda: 1)
    with pytest.raises(DuplicateStepKey):
        attempt(store, 2).step.trigger_and_wait("used", "child")
    assert attempt(store, 3).step.batch_trigger_and_wait("none", "child", []) == [] and not runs.created


def test_a_wait_record_keeps_only_names_that_could_be_runs():
    text = Checkpoint(key="w", kind="wait", attempt=1, waiting_on=("a", "b")).encode()
    assert Checkpoint.decode(text).waiting_on == ("a", "b")
    forged = text.replace('["a","b"]', '["a", 5, "", null, "' + "x" * 300 + '"]')
    assert Checkpoint.decode(forged).waiting_on == ("a",)
