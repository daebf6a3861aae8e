"""The SDK's list_runs: the CLI's filters, a page at a time, oldest first, as RunHandles."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

import kubetasks
from kubetasks.runtime import runs as sdk_runs
from kubetasks.runtime.task import task

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def run(name: str, task_ref: str, phase: str | None, created: str, tags: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": f"2026-12-07T{created}Z"},
            "spec": {"taskRef": task_ref, "tags": list(tags)}, "status": {"phase": phase} if phase else {}}


class Paged:
    """A CustomObjectsApi that answers lists two runs a page, with continue tokens."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items, self.asked = items, []

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, *,
                                      limit: int, _continue: str | None) -> dict[str, Any]:
        self.asked.append((namespace, plural, limit, _continue))
        start = int(_continue or 0)
        more = start + 2 < len(self.items)
        return {"items": self.items[start:start + 2], "metadata": {"continue": str(start + 2) if more else None}}


@pytest.fixture
def api(monkeypatch) -> Paged:
    fake = Paged([run("r3", "sdk-list-report", "Failed", "11:30:00", ("eu",)), run("r1", "sdk-list-report", "Failed", "09:00:00"),
                  run("m1", "mail", "Failed", "11:00:00", ("eu",)), run("r2", "sdk-list-report", "Running", "11:10:00"),
                  run("r0", "sdk-list-report", None, "11:59:00")])
    monkeypatch.setattr(sdk_runs, "_custom", lambda: fake)
    monkeypatch.setattr(sdk_runs, "datetime", type("Clock", (), {"now": staticmethod(lambda tz=None: NOW)}))
    return fake


def names(handles) -> list[str]:
    return [h.name for h in handles]


def test_it_lists_every_page_and_filters_as_the_cli_does(api):
    assert names(kubetasks.list_runs(namespace="ns")) == ["r1", "m1", "r2", "r3", "r0"]  # oldest first
    assert [a[3] for a in api.asked] == [None, "2", "4"] and api.asked[0][:3] == ("ns", "taskruns", sdk_runs.PAGE)
    assert names(kubetasks.list_runs("sdk-list-report", phase="Failed", namespace="ns")) == ["r1", "r3"]
    assert names(kubetasks.list_runs(tag="eu", namespace="ns")) == ["m1", "r3"]
    assert names(kubetasks.list_runs("sdk-list-report", phase="active", namespace="ns")) == ["r2", "r0"]  # r0: no status yet
    assert names(kubetasks.list_runs(phase="Failed", since="1h", namespace="ns")) == ["m1", "r3"]  # at NOW


def test_a_task_function_names_its_task_and_its_handles_know_it(api):
    @task(id="sdk-list-report")
    def report(payload: dict) -> dict:
        return payload

    handles = kubetasks.list_runs(report, phase="Failed", namespace="ns")
    assert names(handles) == ["r1", "r3"] and all(h.task is report and h.namespace == "ns" for h in handles)


def test_a_bad_filter_raises_before_any_request(api):
    with pytest.raises(ValueError, match="phase: 'failed' is none of"):
        kubetasks.list_runs(phase="failed", namespace="ns")
    with pytest.raises(ValueError):
        kubetasks.list_runs(since="yesterday", namespace="ns")
    with pytest.raises(TypeError):
        kubetasks.list_runs(42, namespace="ns")  # type: ignore[arg-type]
    assert api.asked == []
