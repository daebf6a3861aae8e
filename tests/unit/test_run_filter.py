"""The one run filter of the CLI, the dashboard and the SDK (core.run_filter)."""

from datetime import datetime, timezone

from kubetasks.core.run_filter import filter_words, run_test


def run(name: str, phase: str | None = None, task: str = "t", tags: object = (), ns: str = "a",
        created: str = "2026-12-07T10:00:00Z") -> dict:
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": {"taskRef": task, "tags": list(tags) if isinstance(tags, tuple) else tags},
            "status": {"phase": phase} if phase else {}}


def kept(runs: list[dict], **filters) -> list[str]:
    test = run_test(**filters)
    assert test is not None
    return [r["metadata"]["name"] for r in runs if test(r)]


def test_nothing_to_filter_is_none_so_callers_skip_the_pass():
    assert run_test() is None and run_test(task="", tag="") is None


def test_each_filter_and_their_combination():
    runs = [run("new"), run("q", "Queued", tags=("eu",)), run("f", "Failed", task="u", tags=("eu",), ns="b"),
            run("ok", "Succeeded", created="2026-12-06T10:00:00Z")]
    assert kept(runs, phase="Pending") == ["new"]  # no status yet: Pending, as every table shows it
    assert kept(runs, phase="active") == ["new", "q"] and kept(runs, phase="finished") == ["f", "ok"]
    assert kept(runs, tag="eu") == ["q", "f"] and kept(runs, tag="eu", task="t") == ["q"]
    assert kept(runs, namespace="b") == ["f"]
    day = datetime(2026, 12, 7, tzinfo=timezone.utc)
    assert kept(runs, after=day) == ["new", "q", "f"] and kept(runs, before=day) == ["ok"]
    assert kept(runs, phase="finished", after=day) == ["f"]


def test_a_body_with_anything_where_a_field_belongs_only_fails_to_match():
    odd = [{"metadata": "x", "spec": ["y"], "status": 3}, {"spec": {"tags": "eu"}}, {}]
    for filters in ({"tag": "eu"}, {"task": "t"}, {"phase": "Failed"}, {"namespace": "a"},
                    {"after": datetime(2026, 1, 1, tzinfo=timezone.utc)}):
        test = run_test(**filters)
        assert test is not None and [test(r) for r in odd] == [False] * 3, filters
    active = run_test(phase="active")
    assert active is not None and all(active(r) for r in odd)  # no phase of its own: Pending


def test_a_filter_reads_as_a_sentence():
    assert filter_words("sync", "nightly", "Queued") == "of sync tagged nightly in phase Queued"
    assert filter_words(None, "eu") == "tagged eu" and filter_words("sync", None) == "of sync"
