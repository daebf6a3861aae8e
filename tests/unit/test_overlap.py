"""core.overlap: the new run of a key, by creation order, whatever order runs are looked at in."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, strategies as st

from kubetasks.core.overlap import CRON_POLICY, decide, judge

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def run(name: str, at: int, uid: str | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid or f"uid-{name}",
                         "creationTimestamp": (T0 + timedelta(seconds=at)).isoformat()},
            "spec": {"taskRef": "t", "concurrencyKey": "k", **spec}, "status": {}}


def actions(policy: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for body in runs:
        v = decide(policy, runs, body["metadata"]["name"])  # type: ignore[arg-type]
        out[body["metadata"]["name"]] = None if v is None else (v.judgement.action, v.cancel)
    return out


def test_queue_decides_nothing():
    assert actions("queue", [run("a", 0), run("b", 1)]) == {"a": None, "b": None}


def test_skip_ends_the_newer_and_names_the_older():
    old, new = run("old", 0), run("new", 1)
    assert actions("skip", [old, new]) == {"old": None, "new": ("skip", ())}
    assert "'old'" in decide("skip", [old, new], "new").message  # type: ignore[union-attr]


def test_cancel_new_cancels_the_newer():
    assert actions("cancelNew", [run("old", 0), run("new", 1)]) == {"old": None, "new": ("cancel", ())}


def test_cancel_running_cancels_the_older_and_an_older_unstarted_run_cancels_itself():
    got = actions("cancelRunning", [run("old", 0), run("new", 1)])
    assert got == {"old": ("cancel", ()), "new": ("go", (("old", "uid-old"),))}


def test_runs_being_cancelled_or_deleted_overlap_nothing():
    old = run("old", 0, cancel=True)
    gone = run("gone", 0)
    gone["metadata"]["deletionTimestamp"] = T0.isoformat()
    assert actions("skip", [old, gone, run("new", 1)])["new"] is None


def test_cron_policies_are_overlap_policies():
    assert judge(CRON_POLICY["Forbid"], ["a"]).action == "skip"
    assert judge(CRON_POLICY["Replace"], ["a"]).cancel == ("a",)
    assert judge(CRON_POLICY["Allow"], ["a"]).action == "go"


@pytest.mark.parametrize("policy", ["skip", "cancelNew", "cancelRunning"])
def test_ties_of_creation_go_by_uid(policy):
    a, b = run("a", 0, uid="2"), run("b", 0, uid="1")  # b is older by uid
    got = actions(policy, [a, b])
    assert got["b"] is None or got["b"][0] == "cancel"  # cancelRunning: the older one goes
    assert got["a"] is not None


def test_a_started_run_is_older_than_any_unstarted_one_made_in_the_same_second():
    running, new = run("running", 0, uid="9"), run("new", 0, uid="1")  # new's uid sorts first
    running["status"] = {"attempt": 1, "phase": "Running"}
    assert actions("skip", [running, new]) == {"running": None, "new": ("skip", ())}
    got = actions("cancelRunning", [running, new])
    assert got["new"] == ("go", (("running", "9"),))  # (a started run is never judged again)


@given(st.lists(st.tuples(st.integers(0, 5), st.uuids()), min_size=1, max_size=6, unique_by=lambda t: t[1]),
       st.sampled_from(["skip", "cancelNew", "cancelRunning"]), st.randoms())
def test_one_run_of_a_key_goes_on_whatever_the_order(created, policy, rnd):
    runs = [run(f"r{i}", at, uid=str(uid)) for i, (at, uid) in enumerate(created)]
    shuffled = list(runs)
    rnd.shuffle(shuffled)
    got = actions(policy, runs)
    assert got == actions(policy, shuffled)
    going = [n for n, v in got.items() if v is None or v[0] == "go"]
    assert len(going) == 1
    order = sorted(runs, key=lambda b: (b["metadata"]["creationTimestamp"], b["metadata"]["uid"]))
    want = order[-1] if policy == "cancelRunning" else order[0]
    assert going == [want["metadata"]["name"]]
