"""The SDK's idempotency keys: scoped to the triggering run inside a task, and a key its run
released (failed, or past its TTL) makes one new run, whoever triggers it and however many at once."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubetasks import protocol
from kubetasks.core.naming import idempotent_run_name, successor_run_name
from kubetasks.runtime.trigger import scoped_key

trigger_mod = importlib.import_module("kubetasks.runtime.trigger")  # the package exports a function of its name

IN_A_TASK = {protocol.ENV_RUN_UID: "u-parent", protocol.ENV_ATTEMPT: "2"}


def test_inside_a_task_a_key_is_the_runs_own_by_default():
    assert scoped_key("k", None, IN_A_TASK) == "u-parent/k"
    assert scoped_key("k", "attempt", IN_A_TASK) == "u-parent/2/k"
    assert scoped_key("k", "global", IN_A_TASK) == "k"
    assert scoped_key("k", None, {}) == "k"  # outside a task: global


def test_a_scope_that_cannot_be_kept_says_why():
    with pytest.raises(ValueError, match="needs a task run"):
        scoped_key("k", "run", {})
    with pytest.raises(ValueError, match="the limit is 256"):
        scoped_key("k" * 250, None, IN_A_TASK)
    with pytest.raises(ValueError, match="'run', 'attempt' or 'global'"):
        scoped_key("k", "tenant", IN_A_TASK)  # type: ignore[arg-type]


class Runs:
    """TaskRuns by name, as the API server keeps them: a create of a name taken is a 409."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.creates = 0

    def create_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, body: dict[str, Any]):
        self.creates += 1
        name = body["metadata"]["name"]
        if name in self.items:
            raise ApiException(status=409, reason="AlreadyExists")
        self.items[name] = {**body, "metadata": {**body["metadata"], "uid": f"uid-{name}"}, "status": {}}
        return self.items[name]

    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str):
        if name not in self.items:
            raise ApiException(status=404, reason="NotFound")
        return self.items[name]


@pytest.fixture
def runs(monkeypatch) -> Runs:
    api = Runs()
    monkeypatch.setattr(trigger_mod, "_custom", lambda: api)
    monkeypatch.delenv(protocol.ENV_RUN_UID, raising=False)
    monkeypatch.delenv(protocol.ENV_RUN, raising=False)
    return api


def test_a_key_held_returns_its_run_and_one_released_makes_one_successor(runs):
    first = trigger_mod.trigger("t", {"n": 1}, idempotency_key="k", namespace="ns")
    assert first.name == idempotent_run_name("t", "k")
    assert trigger_mod.trigger("t", {"n": 1}, idempotency_key="k", namespace="ns").name == first.name
    runs.items[first.name]["status"] = {"phase": "Failed"}
    second = trigger_mod.trigger("t", {"n": 1}, idempotency_key="k", namespace="ns")
    assert second.name == successor_run_name("t", "k", f"uid-{first.name}")
    # a racing trigger that found the failed run too gets the same successor, not a third run
    assert trigger_mod.trigger("t", {"n": 1}, idempotency_key="k", namespace="ns").name == second.name
    assert len(runs.items) == 2
    # past its TTL, a succeeded run's key runs again; a new payload is then no conflict
    runs.items[second.name]["status"] = {"phase": "Succeeded", "idempotencyKeyExpiresAt": "2000-01-01T00:00:00Z"}
    third = trigger_mod.trigger("t", {"n": 2}, idempotency_key="k", namespace="ns")
    assert third.name not in (first.name, second.name) and runs.items[third.name]["spec"]["payload"] == {"n": 2}


def test_a_durable_waits_child_that_failed_is_its_child_and_not_run_again(runs, monkeypatch):
    import kubetasks.runtime.kube

    monkeypatch.setattr(kubetasks.runtime.kube, "default_namespace", lambda: "ns")  # a child is in its parent's
    child = trigger_mod.trigger_child("t", {}, "u-parent:step")
    runs.items[child.name]["status"] = {"phase": "Failed"}
    assert trigger_mod.trigger_child("t", {}, "u-parent:step").name == child.name
    assert len(runs.items) == 1
