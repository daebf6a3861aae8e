"""``kubetasks runs --watch``: rows updated from watch events, and the list/watch loop that feeds them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

from kubetasks import kube
from kubetasks.cli import watch
from kubetasks.cli.tables import apply_event, relisted, run_filter, run_rows, runs_table


def run(name: str, phase: str = "Pending", task: str = "hello", ns: str = "ns", created: str = "2025-01-01T12:00:00Z",
        rv: str = "1") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": created, "resourceVersion": rv},
            "spec": {"taskRef": task}, "status": {"phase": phase}}


def names_and_phases(runs: dict) -> list[tuple[str, str]]:
    return [(row[0], row[2]) for row in run_rows(list(runs.values()))]


def test_events_add_update_in_place_and_remove_rows():
    runs = relisted([run("a", "Running", created="2025-01-01T12:00:00Z"),
                     run("b", "Pending", created="2025-01-01T12:00:05Z")])
    before = dict(runs)
    added = apply_event(runs, "ADDED", run("c", created="2025-01-01T12:00:09Z"))
    assert names_and_phases(added) == [("a", "Running"), ("b", "Pending"), ("c", "Pending")]
    assert runs == before  # the old rows are left as they were
    updated = apply_event(added, "MODIFIED", run("a", "Succeeded", created="2025-01-01T12:00:00Z"))
    assert names_and_phases(updated) == [("a", "Succeeded"), ("b", "Pending"), ("c", "Pending")]
    deleted = apply_event(updated, "DELETED", run("b"))
    assert names_and_phases(deleted) == [("a", "Succeeded"), ("c", "Pending")]
    assert apply_event(deleted, "BOOKMARK", {"metadata": {"resourceVersion": "9"}}) == deleted
    assert apply_event(deleted, "DELETED", run("never-seen")) == deleted


def test_runs_of_other_tasks_and_namespaces_stay_apart():
    hello = run_filter("hello")
    runs = relisted([run("a"), run("x", task="other")], hello)
    assert list(runs) == [("ns", "a")]
    runs = apply_event(runs, "ADDED", run("y", task="other"), hello)
    assert list(runs) == [("ns", "a")]
    both = apply_event(relisted([run("a")]), "ADDED", run("a", ns="ns2"))
    assert sorted(both) == [("ns", "a"), ("ns2", "a")]


def test_a_run_enters_and_leaves_a_phase_filtered_watch_as_its_phase_changes():
    """kubectl get -w with a field selector: a run shows while it is in the phase asked for."""
    failed = run_filter(phase="Failed")
    runs = relisted([run("a", "Running"), run("b", "Failed")], failed)
    assert list(runs) == [("ns", "b")]
    runs = apply_event(runs, "MODIFIED", run("a", "Failed"), failed)
    assert sorted(runs) == [("ns", "a"), ("ns", "b")]
    runs = apply_event(runs, "MODIFIED", run("b", "Retrying"), failed)  # replayed in place, say: no longer Failed
    assert list(runs) == [("ns", "a")]


def test_a_relist_replaces_every_row():
    runs = relisted([run("a"), run("b")])
    assert list(relisted([run("b", "Failed")])) == [("ns", "b")]  # a was deleted while the watch was down
    assert runs[("ns", "a")]["status"]["phase"] == "Pending"


def test_a_live_table_keeps_the_newest_rows_that_fit():
    rows = [(f"r{i}", "t", "Pending", "0", "1s", "-") for i in range(10)]
    table = runs_table(rows, max_rows=3)
    assert table.row_count == 3 and table.caption == "(7 older not shown)"
    assert list(table.columns[0].cells) == ["r7", "r8", "r9"]
    assert runs_table(rows).row_count == 10 and runs_table(rows).caption is None


class FakeApi:
    """kube.list_page and kube.watch, scripted: each watch call plays the next script."""

    def __init__(self, lists: list[tuple[list[dict], str]], watches: list[list[Any]]) -> None:
        self.lists, self.watches = lists, watches
        self.watched_from: list[str] = []
        self.listed = 0

    def list_page(self, resource: Any, namespace: str | None, continue_: str | None = None, **_: Any) -> dict:
        items, rv = self.lists[self.listed]
        self.listed += 1
        return {"items": items, "metadata": {"resourceVersion": rv}}

    def watch(self, resource: Any, namespace: str | None, selector: str, rv: str, timeout: int) -> Iterator[Any]:
        self.watched_from.append(rv)
        if not self.watches:
            raise KeyboardInterrupt  # the test is over
        for step in self.watches.pop(0):
            if isinstance(step, BaseException):
                raise step
            yield step


def test_the_watch_resumes_from_the_last_version_and_relists_after_410(monkeypatch):
    api = FakeApi(lists=[([run("a")], "10"), ([run("b", rv="30")], "30")],
                  watches=[[("ADDED", run("c", rv="11")), ("BOOKMARK", {"metadata": {"resourceVersion": "15"}})],
                           [("MODIFIED", run("c", "Running", rv="16")), kube.Gone("too old")],
                           [ProtocolError("connection reset")],
                           [("DELETED", run("b", rv="31"))]])
    monkeypatch.setattr(kube, "list_page", api.list_page)
    monkeypatch.setattr(kube, "watch", api.watch)
    pauses: list[float] = []
    events = []
    with pytest.raises(KeyboardInterrupt):
        for kind, obj in watch.list_and_watch("ns", sleep=pauses.append):
            events.append((kind, [r["metadata"]["name"] for r in obj] if kind == "LIST" else obj["metadata"]["name"]))
    assert events == [("LIST", ["a"]), ("ADDED", "c"), ("MODIFIED", "c"), ("LIST", ["b"]), ("DELETED", "b")]
    # Resumed after the bookmark's version; after 410 from a new list's; after a broken connection
    # from where it was, once a pause has passed.
    assert api.watched_from == ["10", "15", "30", "30", "31"]
    assert pauses == [watch.RETRY_SECONDS[0]]


def test_the_watch_raises_what_a_retry_cannot_mend(monkeypatch):
    api = FakeApi(lists=[([], "1")], watches=[[ApiException(status=403, reason="Forbidden")]])
    monkeypatch.setattr(kube, "list_page", api.list_page)
    monkeypatch.setattr(kube, "watch", api.watch)
    with pytest.raises(ApiException):
        list(watch.list_and_watch("ns", sleep=lambda s: pytest.fail("no retry expected")))
