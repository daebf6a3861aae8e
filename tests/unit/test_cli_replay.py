"""``kubetasks replay``: the TaskRun it creates, what it refuses, and the paced bulk replay."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from kubetasks.api.taskrun import TaskRun
from kubetasks.cli import main as cli
from kubetasks.cli.replay import bulk_candidates, parse_rate
from kubetasks.cli.tables import run_filter
from kubetasks.core.naming import LABEL_INSTANCE, LABEL_TASK
from kubetasks.core.replay import NotReplayable, check_replayable, replay_name, replay_taskrun

NOW = datetime(2026, 1, 2, tzinfo=timezone.utc)


def original(name: str = "orders-abc", phase: str = "Failed", ago: float = 3600, **spec: Any) -> dict[str, Any]:
    done = (NOW - timedelta(seconds=ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": done,
                         "labels": {LABEL_TASK: "orders", LABEL_INSTANCE: "blue", "team": "x"}},
            "spec": {"taskRef": "orders", "payload": {"id": 7}, "tags": ["a"], "concurrencyKey": "tenant-1",
                     "machine": {"cpu": "1"}, "idempotencyKey": "k", "priority": 60, "delay": "5m",
                     "parentRun": "p", **spec},
            "status": {"phase": phase, "completionTime": done, "steps": [{"name": "one", "attempt": 1}]}}


def test_a_replay_keeps_payload_tags_key_and_machine_but_no_idempotency_key_delay_or_priority():
    body = replay_taskrun(original())
    spec = body["spec"]
    assert spec == {"taskRef": "orders", "payload": {"id": 7}, "tags": ["a"], "concurrencyKey": "tenant-1",
                    "machine": {"cpu": "1"}, "replayOf": {"name": "orders-abc", "uid": "uid-orders-abc"}}
    assert body["metadata"] == {"generateName": "orders-abc-replay-", "labels": {LABEL_TASK: "orders",
                                                                                 LABEL_INSTANCE: "blue"}}
    TaskRun.model_validate({**body, "metadata": {"name": "orders-abc-replay-x1"}})  # a valid TaskRun
    given = replay_taskrun(original(), payload={"id": 8}, from_step="one", spec={"priority": 5})["spec"]
    assert given["payload"] == {"id": 8} and given["priority"] == 5
    assert given["replayOf"] == {"name": "orders-abc", "uid": "uid-orders-abc", "fromStep": "one"}
    assert replay_taskrun(original(), fresh=True)["spec"]["replayOf"]["fresh"] is True


def test_a_payload_kept_in_the_store_is_named_again_not_copied():
    ref = {"uri": "s3://b/payloads/ns/ab", "size": 1, "sha256": "0" * 64}
    spec = replay_taskrun(original(payload=None, payloadRef=ref))["spec"]
    assert spec["payloadRef"] == ref and "payload" not in spec


def test_a_long_name_gives_a_valid_bounded_generate_name():
    name = "a" * 253
    generated = replay_name(name) + "x" * 5  # the API server's suffix
    assert len(generated) <= 253 and generated.endswith("-replay-xxxxx")
    assert replay_name("b" * 253) != replay_name(name)


def test_only_a_finished_run_and_a_step_it_completed_can_be_replayed():
    with pytest.raises(NotReplayable, match="is Running: only a finished run"):
        check_replayable(original(phase="Running"), None)
    with pytest.raises(NotReplayable, match="completed no step 'two' .*one"):
        check_replayable(original(), "two")
    check_replayable(original(), "one")
    check_replayable(original(), None)


def test_rates():
    assert parse_rate("5") == 5 and parse_rate("5/s") == 5 and parse_rate("30/m") == 0.5
    for bad in ("0", "x/s", "5/d", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_rate(bad)


def test_bulk_picks_the_tasks_runs_in_the_phase_and_window_each_once():
    runs = [original("old", ago=90_000), original("b", ago=60), original("a", ago=120),
            original("ok", phase="Succeeded"), original("other", taskRef="billing"),
            original("done", ago=30), original("done-replay-1", phase="Running", replayOf={"name": "done", "uid": "uid-done"})]
    chosen = bulk_candidates(runs, run_filter("orders", phase="Failed"), timedelta(hours=24), NOW)
    assert [r["metadata"]["name"] for r in chosen] == ["a", "b"]  # oldest first; "done" is replayed already


def test_bulk_picks_by_tag_of_any_task_or_of_one():
    runs = [original("a", ago=60, tags=["eu"]), original("b", ago=30), original("c", ago=20, taskRef="billing", tags=["eu"])]
    day = timedelta(hours=24)
    assert [r["metadata"]["name"] for r in bulk_candidates(runs, run_filter(tag="eu", phase="Failed"), day, NOW)] \
        == ["a", "c"]
    assert [r["metadata"]["name"] for r in bulk_candidates(runs, run_filter("orders", "eu", "Failed"), day, NOW)] == ["a"]


def test_bulk_replay_is_paced_and_prints_what_it_created(monkeypatch, capsys):
    from kubetasks import kube
    from kubetasks.cli import replay

    now = datetime.now(timezone.utc)
    runs = [original(n, ago=0) for n in ("r1", "r2", "r3")]
    for r in runs:
        r["status"]["completionTime"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    created: list[dict[str, Any]] = []
    monkeypatch.setattr(kube, "list_custom", lambda plural, ns: runs)
    monkeypatch.setattr(kube, "create_custom", lambda plural, ns, body: created.append(body) or
                        {"metadata": {"name": body["metadata"]["generateName"] + "x"}})
    slept: list[float] = []
    real = replay.cmd_replay
    monkeypatch.setattr(replay, "cmd_replay", lambda a, o, e: real(a, o, e, sleep=slept.append))
    monkeypatch.setitem(cli.COMMANDS, "replay", replay.cmd_replay)
    assert cli.main(["replay", "--task", "orders", "--rate", "10/s", "-n", "ns"]) == 0
    assert [b["spec"]["replayOf"]["name"] for b in created] == ["r1", "r2", "r3"]
    assert len(slept) == 2 and all(0 < s <= 0.2 for s in slept)  # one every 0.1 s, none before the first
    out = capsys.readouterr().out
    assert "taskrun/r2-replay-x created: replays r2" in out and "3 replays created" in out


def test_replay_of_one_run(monkeypatch, capsys):
    from kubetasks import kube

    created: list[dict[str, Any]] = []
    monkeypatch.setattr(kube, "get_custom", lambda plural, ns, name: original(name))
    monkeypatch.setattr(kube, "create_custom", lambda plural, ns, body: created.append(body) or
                        {"metadata": {"name": "orders-abc-replay-q"}})
    assert cli.main(["replay", "orders-abc", "--from-step", "one", "--priority", "9", "-n", "ns"]) == 0
    assert created[0]["spec"]["replayOf"]["fromStep"] == "one" and created[0]["spec"]["priority"] == 9
    assert capsys.readouterr().out.strip() == "taskrun/orders-abc-replay-q created: replays orders-abc, from step one"
    assert cli.main(["replay", "-n", "ns"]) == 1  # neither a run nor --task
    assert cli.main(["replay", "orders-abc", "--task", "orders", "-n", "ns"]) == 1
    assert cli.main(["replay", "orders-abc", "--tag", "eu", "-n", "ns"]) == 1
    assert "or give --task TASK or --tag TAG" in capsys.readouterr().err


def test_an_unfinished_run_is_refused_in_one_line(monkeypatch, capsys):
    from kubetasks import kube

    monkeypatch.setattr(kube, "get_custom", lambda plural, ns, name: original(name, phase="Running"))
    monkeypatch.setattr(kube, "create_custom", lambda plural, ns, body: pytest.fail("created a replay"))
    assert cli.main(["replay", "orders-abc", "-n", "ns"]) == 1
    assert "taskrun orders-abc is Running: only a finished run can be replayed" in capsys.readouterr().err


def test_describe_names_the_original_and_what_was_reused():
    from kubetasks.cli.describe import describe_lines

    body = replay_taskrun(original(), from_step="one")
    lines = dict(describe_lines({**body, "metadata": {"name": "orders-abc-replay-q"}}))
    assert lines["Replay of"] == "orders-abc (uid uid-orders-abc); steps reused: those completed before step one"
    assert "Replay of" not in dict(describe_lines(original()))
