"""core.debounce: which run of a debounce key survives, when it starts, and that the answer does
not depend on the order the runs are looked at in."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, strategies as st

from kubetasks.core.debounce import decide

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def run(name: str, at: float, mode: str = "leading", delay: str = "3s", max_delay: str = "30s", uid: str | None = None,
        **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid or f"uid-{name}",
                         "creationTimestamp": (T0 + timedelta(seconds=at)).isoformat()},
            "spec": {"taskRef": "t", "debounce": {"key": "k", "delay": delay, "maxDelay": max_delay, "mode": mode}},
            "status": status}


def verdicts(runs: list[dict[str, Any]], now: float, superseded: list[dict[str, Any]] = ()) -> dict[str, tuple]:
    into = lambda n: [b for b in superseded if b["status"].get("supersededBy") == n]  # noqa: E731
    out = {}
    for body in runs:
        v = decide(runs, into, body["metadata"]["name"], T0 + timedelta(seconds=now))
        out[body["metadata"]["name"]] = None if v is None else (v.action, v.survivor, v.start_at)
    return out


def test_leading_keeps_the_first_and_starts_delay_after_the_last():
    runs = [run(f"r{i}", i) for i in range(5)]
    got = verdicts(runs, 4.5)
    start = T0 + timedelta(seconds=7)
    assert got["r0"] == ("wait", "r0", start)
    assert all(got[f"r{i}"] == ("supersede", "r0", None) for i in range(1, 5))
    assert verdicts(runs, 7)["r0"] == ("go", "r0", start)


def test_trailing_keeps_the_last():
    runs = [run(f"r{i}", i, mode="trailing") for i in range(5)]
    got = verdicts(runs, 4.5)
    assert got["r4"] == ("wait", "r4", T0 + timedelta(seconds=7))
    assert all(got[f"r{i}"][:2] == ("supersede", "r4") for i in range(4))


def test_superseded_runs_still_count_for_the_start_and_max_delay():
    # r0 survives; r1..r3 were superseded into it already (finished, out of the unfinished index).
    gone = [run(f"r{i}", i * 10, phase="Superseded", supersededBy="r0") for i in (1, 2, 3)]
    survivor = run("r0", 0)
    assert verdicts([survivor], 29, gone)["r0"] == ("wait", "r0", T0 + timedelta(seconds=30))  # maxDelay bounds it
    assert verdicts([survivor], 30, gone)["r0"][0] == "go"


def test_trailing_chains_are_followed_to_the_oldest_member():
    # Trailing: r0 -> r1 -> r2 (each superseded by the next newest); r3 is the survivor now.
    gone = [run("r0", 0, "trailing", phase="Superseded", supersededBy="r1"),
            run("r1", 10, "trailing", phase="Superseded", supersededBy="r2"),
            run("r2", 20, "trailing", phase="Superseded", supersededBy="r3")]
    survivor = run("r3", 29, "trailing")
    assert verdicts([survivor], 29.5, gone)["r3"] == ("wait", "r3", T0 + timedelta(seconds=30))


def test_a_started_survivor_closes_its_group_but_keeps_runs_created_before_it_started():
    started = run("r0", 0, attempt=1, phase="Running", startTime=(T0 + timedelta(seconds=7)).isoformat())
    late = run("late", 4)  # created before r0 started, looked at only now
    new = run("new", 8)  # created after: a new group
    got = verdicts([started, late, new], 9)
    assert got["late"][:2] == ("supersede", "r0")
    assert got["new"] == ("wait", "new", T0 + timedelta(seconds=11))
    assert got["r0"] is None  # started: not debounced again


def test_idempotent_runs_join_only_once_decided():
    # "dup" will end Duplicate (its claim is another's): until decided it is nobody's survivor.
    first = run("first", 0, mode="trailing", phase="Delayed")
    dup = run("dup", 1, mode="trailing")
    dup["spec"]["idempotencyKey"] = "x"
    assert verdicts([first, dup], 2)["first"][:2] == ("wait", "first")
    assert verdicts([first, dup], 2)["dup"][:2] == ("wait", "dup")  # itself, once it holds its claim
    dup["status"] = {"phase": "Delayed"}
    assert verdicts([first, dup], 2)["first"][:2] == ("supersede", "dup")


def test_cancelled_or_deleted_runs_survive_nothing():
    runs = [run("r0", 0), run("r1", 1)]
    runs[0]["spec"]["cancel"] = True
    assert verdicts(runs, 2)["r1"][:2] == ("wait", "r1")
    runs[0]["spec"]["cancel"] = False
    runs[0]["metadata"]["deletionTimestamp"] = T0.isoformat()
    assert verdicts(runs, 2)["r1"][:2] == ("wait", "r1")


def test_creation_ties_go_by_uid_not_name():
    runs = [run("a", 0, uid="2"), run("b", 0, uid="1")]
    assert verdicts(runs, 1)["a"][:2] == ("supersede", "b")


@given(st.lists(st.tuples(st.integers(0, 40), st.uuids()), min_size=1, max_size=8, unique_by=lambda t: t[1]),
       st.sampled_from(["leading", "trailing"]), st.integers(0, 80), st.randoms())
def test_exactly_one_survivor_whatever_the_order(created, mode, now, rnd):
    runs = [run(f"r{i}", at, mode=mode, uid=str(uid)) for i, (at, uid) in enumerate(created)]
    shuffled = list(runs)
    rnd.shuffle(shuffled)
    got = verdicts(runs, now)
    assert got == verdicts(shuffled, now)  # the order looked at changes nothing
    survivors = {v[1] for v in got.values()}
    assert len(survivors) == 1
    (survivor,) = survivors
    assert sum(1 for v in got.values() if v[0] != "supersede") == 1
    oldest = min(runs, key=lambda b: (b["metadata"]["creationTimestamp"], b["metadata"]["uid"]))
    newest = max(runs, key=lambda b: (b["metadata"]["creationTimestamp"], b["metadata"]["uid"]))
    assert survivor == (oldest if mode == "leading" else newest)["metadata"]["name"]
    start = got[survivor][2]
    first, last = min(a for a, _ in created), max(a for a, _ in created)
    assert start == T0 + timedelta(seconds=min(last + 3, first + 30))  # never beyond maxDelay


def test_trailing_after_a_late_look_supersedes_only_runs_older_than_the_started_survivor():
    started = run("r4", 4, "trailing", attempt=1, phase="Running", startTime=(T0 + timedelta(seconds=7)).isoformat())
    older = run("r1", 1, "trailing")  # not yet superseded when r4 started (a restart)
    newer = run("r5", 6, "trailing")  # created before r4 started, but its payload is the last
    got = verdicts([started, older, newer], 8)
    assert got["r1"][:2] == ("supersede", "r4")
    assert got["r5"] == ("wait", "r5", T0 + timedelta(seconds=9))
