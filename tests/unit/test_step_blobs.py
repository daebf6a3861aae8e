"""Step outputs in the object store: slot naming, which step refs the operator grants, the grant it
renders, records with refs, and the runtime putting and reading outputs through its grant."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubetasks import protocol
from kubetasks.api.storage import BlobRef
from kubetasks.api.task import Task
from kubetasks.api.taskrun import TaskRun
from kubetasks.core.naming import checkpoint_name
from kubetasks.core.step_grants import (DEFAULT_SLOTS, GETS_KEY, MAX_SLOTS, PUTS_KEY, SLOTS_ENV, judge_step_ref,
                                        parse_gets, parse_puts, render_step_grant, slot_path, slots_from_env,
                                        step_refs)
from kubetasks.protocol import RECORD_LIMIT, Checkpoint, configmap_key
from kubetasks.runtime.checkpoints import Checkpoints, MemoryStore
from kubetasks.runtime.context import Context, Steps
from kubetasks.runtime.errors import CheckpointTooLarge, StepOutputUnavailable
from kubetasks.runtime.step_blobs import StepBlobs, read_step_grant
from tests.unit.test_reconcile_runs import NS, World, task, taskrun
from tests.unit.test_result_refs import signing_store

STORE = "s3://bucket/kt"
UID = "0123456789abcdef"
OTHER = "fedcba9876543210"


# -- naming and judging ------------------------------------------------------------------------------

def test_slots_are_per_attempt_paths_below_the_runs_steps_prefix():
    assert slot_path("ns", UID, 2, 0) == f"runs/ns/{UID}/steps/attempt-2-0"
    assert slot_path("ns", UID, 1, 31) != slot_path("ns", UID, 2, 31)  # attempts never share a slot
    assert slots_from_env({}) == DEFAULT_SLOTS == 8
    assert slots_from_env({SLOTS_ENV: "4"}) == 4
    assert slots_from_env({SLOTS_ENV: "100000"}) == MAX_SLOTS
    assert slots_from_env({SLOTS_ENV: "-3"}) == 0
    assert slots_from_env({SLOTS_ENV: "many"}) == DEFAULT_SLOTS


def test_a_step_ref_is_granted_only_when_it_names_a_step_slot_of_this_run_in_this_store():
    own = f"{STORE}/{slot_path('ns', UID, 1, 3)}"
    assert judge_step_ref(BlobRef.of(own, b"1").to_api(), "ns", UID, STORE).path == slot_path("ns", UID, 1, 3)
    for forged in (f"{STORE}/{slot_path('ns', OTHER, 1, 3)}",  # another run's output
                   f"{STORE}/{slot_path('other', UID, 1, 3)}",  # another namespace
                   f"s3://elsewhere/kt/{slot_path('ns', UID, 1, 3)}",  # another bucket
                   f"{STORE}/runs/ns/{UID}/attempt-1/result",  # its own run, but not a step output
                   f"{STORE}/runs/ns/{UID}/steps/attempt-1-3/../../../{OTHER}/steps/attempt-1-3",
                   f"{STORE}/runs/ns/{UID}/steps/attempt-1-3/x",
                   f"{STORE}/runs/ns/{UID}/steps/attempt-0-1"):
        judged = judge_step_ref(BlobRef.of(forged, b"1").to_api(), "ns", UID, STORE)
        assert judged.path is None and judged.refusal and "refused, not read" in judged.refusal, forged
    assert judge_step_ref({"uri": own}, "ns", UID, STORE).refusal == \
        "the record's resultRef is not a ref (uri, size, sha256)"
    assert judge_step_ref("nope", "ns", UID, STORE).uri == "?"


@given(st.text(alphabet="0123456789abcdef-", min_size=1, max_size=36), st.integers(1, 999), st.integers(0, 255))
def test_no_other_runs_slot_is_ever_granted(other: str, attempt: int, index: int):
    uri = f"{STORE}/{slot_path('ns', other, attempt, index)}"
    judged = judge_step_ref(BlobRef.of(uri, b"1").to_api(), "ns", UID, STORE)
    assert (judged.path is not None) == (other == UID)


def test_records_hold_a_ref_instead_of_the_value_and_the_operator_finds_them():
    ref = BlobRef.of(f"{STORE}/{slot_path('ns', UID, 1, 0)}", b"[1]").to_api()
    record = Checkpoint(key="a/b", result_ref=ref, attempt=1, completed_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    body = json.loads(record.encode())
    assert body["resultRef"] == ref and "result" not in body
    assert Checkpoint.decode(record.encode()) == record
    inline = Checkpoint(key="c", result=[1], attempt=1)
    assert json.loads(inline.encode())["result"] == [1] and Checkpoint.decode(inline.encode()) == inline
    data = {configmap_key("a/b"): record.encode(), configmap_key("c"): inline.encode(), "payload.json": "{}"}
    assert step_refs(data) == {"a/b": ref}


def test_the_grant_renders_and_parses_back_and_anything_else_parses_to_nothing():
    rendered = render_step_grant([("u0", "https://p0"), ("u1", "https://p1")],
                                 {"g": {"url": "https://g"}, "f": {"refused": "why"}})
    assert parse_puts(rendered[PUTS_KEY]) == [("u0", "https://p0"), ("u1", "https://p1")]
    assert parse_gets(rendered[GETS_KEY]) == {"g": {"url": "https://g"}, "f": {"refused": "why"}}
    assert parse_puts("{") == parse_puts("{}") == [] and parse_gets("[]") == parse_gets("x") == {}


# -- the operator's grant (fake API) -----------------------------------------------------------------

def test_an_attempts_grant_has_its_upload_slots_and_reads_of_its_runs_own_step_outputs_only(monkeypatch):
    monkeypatch.setenv(SLOTS_ENV, "3")
    w = World(task(entrypoint="app:run", command=None, maxDuration="10m"), taskrun("r"))
    w.op.runs.results = type(w.op.runs.results)(w.op.runs.results.call, signing_store(monkeypatch))
    w.reconcile("r")
    body = w.api.objects[("TaskRun", NS, "r")]
    uid = body["metadata"]["uid"]
    own = BlobRef.of(f"{STORE}/{slot_path(NS, uid, 1, 0)}", b'"big"').to_api()
    forged = BlobRef.of(f"{STORE}/{slot_path(NS, OTHER, 1, 0)}", b'"theirs"').to_api()
    cm = w.api.objects[("ConfigMap", NS, checkpoint_name("r", uid))]
    cm["data"] = {configmap_key("a"): Checkpoint(key="a", result_ref=own, attempt=1).encode(),
                  configmap_key("b"): Checkpoint(key="b", result_ref=forged, attempt=1).encode(),
                  configmap_key("c"): Checkpoint(key="c", result=1, attempt=1).encode()}
    run, t = TaskRun.model_validate(body), Task.model_validate(w.api.objects[("Task", NS, "t")])
    name = asyncio.run(w.op.runs.results.upload_grant(run, t, 2))
    data = w.api.objects[("Secret", NS, name)]["stringData"]
    puts = parse_puts(data[PUTS_KEY])
    assert [uri for uri, _ in puts] == [f"{STORE}/{slot_path(NS, uid, 2, i)}" for i in range(3)]
    assert all(f"/kt/runs/{NS}/{uid}/steps/attempt-2-{i}?" in url and "X-Amz-Expires=1200" in url
               for i, (_, url) in enumerate(puts))
    gets = parse_gets(data[GETS_KEY])
    assert set(gets) == {own["uri"], forged["uri"]}
    assert f"/kt/runs/{NS}/{uid}/steps/attempt-1-0?" in gets[own["uri"]]["url"]
    assert "url" not in gets[forged["uri"]] and "is not a step output of this run" in gets[forged["uri"]]["refused"]


def test_without_slots_the_grant_has_no_step_keys(monkeypatch):
    monkeypatch.setenv(SLOTS_ENV, "0")
    w = World(task(entrypoint="app:run", command=None), taskrun("r"))
    w.op.runs.results = type(w.op.runs.results)(w.op.runs.results.call, signing_store(monkeypatch))
    w.reconcile("r")
    secret = next(o for k, o in w.api.objects.items() if k[0] == "Secret")
    assert PUTS_KEY not in secret["stringData"] and "result-put-url" in secret["stringData"]


# -- the runtime --------------------------------------------------------------------------------------

class FakeStore:
    """Presigned URLs served from memory: url -> bytes."""

    def __init__(self, attempt: int, slots: int = 4) -> None:
        self.blobs: dict[str, bytes] = {}
        self.puts = [(f"{STORE}/{slot_path('ns', UID, attempt, i)}", f"https://put/{attempt}/{i}") for i in range(slots)]

    def put(self, url: str, data: bytes) -> None:
        self.blobs[url.replace("https://put/", "")] = data

    def get(self, url: str) -> bytes | None:
        return self.blobs.get(url.replace("https://get/", ""))

    def grant(self, data: dict[str, str], threshold: int = 1024) -> StepBlobs:
        """What the operator would grant attempt ``self``'s successor: reads of the refs in ``data``."""
        gets: dict[str, dict[str, str]] = {}
        for raw in step_refs(data).values():
            judged = judge_step_ref(raw, "ns", UID, STORE)
            gets[judged.uri] = ({"url": "https://get/" + judged.path.rsplit("attempt-", 1)[1].replace("-", "/", 1)}
                                if judged.path else {"refused": judged.refusal or ""})
        return StepBlobs(self.puts, gets, threshold, put=self.put, get=self.get)


def steps(cm: MemoryStore, blobs: StepBlobs | None, attempt: int) -> Steps:
    return Steps(Checkpoints(cm, blobs), UID, attempt)


def test_large_outputs_go_to_the_store_and_a_later_attempt_reads_them_back_without_rerunning():
    cm, first = MemoryStore(), FakeStore(1)
    runs: list[str] = []
    s1 = steps(cm, first.grant({}), 1)
    s1.run("one", lambda: (runs.append("one"), "a" * 5_000_000)[1])
    s1.run("small", lambda: (runs.append("small"), "tiny")[1])
    record = json.loads(cm.data[configmap_key("one")])
    assert "result" not in record and record["resultRef"]["size"] == 5_000_002
    assert record["resultRef"]["uri"] == f"{STORE}/{slot_path('ns', UID, 1, 0)}"
    assert json.loads(cm.data[configmap_key("small")])["result"] == "tiny"  # below the threshold: inline
    # attempt 2: the store's blobs, granted by the operator from the records at its start
    second = FakeStore(2)
    second.blobs = first.blobs
    s2 = steps(cm, second.grant(cm.data), 2)
    assert s2.run("one", lambda: runs.append("again")) == "a" * 5_000_000
    assert s2.run("small", lambda: runs.append("again")) == "tiny"
    assert runs == ["one", "small"]


def test_a_20_mb_value_is_returned_intact_on_replay():
    cm, first = MemoryStore(), FakeStore(1)
    value = {"blob": "x" * 20_000_000, "n": [1, 2, 3]}
    steps(cm, first.grant({}), 1).run("big", lambda: value)
    second = FakeStore(2)
    second.blobs = first.blobs
    assert steps(cm, second.grant(cm.data), 2).run("big", lambda: None) == value


def test_a_missing_changed_refused_or_ungranted_output_fails_with_why_never_a_wrong_value():
    cm, first = MemoryStore(), FakeStore(1)
    steps(cm, first.grant({}), 1).run("big", lambda: "b" * 4096)
    blob = "1/0"
    cases = {"missing": (lambda b: b.pop(blob), "is missing"),
             "changed": (lambda b: b.__setitem__(blob, b'"' + b"c" * 4096 + b'"'), "is not the blob that was written")}
    for name, (spoil, said) in cases.items():
        store = FakeStore(2)
        store.blobs = dict(first.blobs)
        spoil(store.blobs)
        with pytest.raises(StepOutputUnavailable, match=said):
            steps(MemoryStore(cm.data), store.grant(cm.data), 2).run("big", lambda: "re-run")
    with pytest.raises(StepOutputUnavailable, match="was granted no read of it"):
        steps(MemoryStore(cm.data), StepBlobs([], {}, 1024), 2).run("big", lambda: "re-run")
    with pytest.raises(StepOutputUnavailable, match="no grant to read it"):
        steps(MemoryStore(cm.data), None, 2).run("big", lambda: "re-run")
    forged = dict(cm.data)
    forged[configmap_key("big")] = Checkpoint(key="big", attempt=1, completed_at=datetime.now(timezone.utc),
                                              result_ref=BlobRef.of(f"{STORE}/{slot_path('ns', OTHER, 1, 0)}",
                                                                    b'"theirs"').to_api()).encode()
    with pytest.raises(StepOutputUnavailable, match="refused to grant its output: .*is not a step output of this run"):
        steps(MemoryStore(forged), FakeStore(2).grant(forged), 2).run("big", lambda: "re-run")


def test_beyond_its_slots_an_output_that_fits_stays_inline_and_one_that_does_not_names_the_chart_value():
    cm, store = MemoryStore(), FakeStore(1, slots=1)
    s = steps(cm, store.grant({}), 1)
    s.run("first", lambda: "a" * 2000)  # the one slot
    s.run("second", lambda: "b" * 2000)  # above the threshold, fits the ConfigMap
    assert "result" in json.loads(cm.data[configmap_key("second")])
    with pytest.raises(CheckpointTooLarge, match=r"used all 1 of its object-store slots .*storage\.stepSlots"):
        s.run("third", lambda: "c" * (RECORD_LIMIT + 1))


def test_an_expired_grant_keeps_nothing():
    store = FakeStore(1)
    blobs = store.grant({})
    blobs.expires = datetime.now(timezone.utc) - timedelta(seconds=1)
    with pytest.raises(CheckpointTooLarge, match="upload grant expired"):
        steps(MemoryStore(), blobs, 1).run("big", lambda: "a" * 5000)


def test_without_a_store_the_configmap_limits_hold_and_say_a_store_lifts_them():
    ctx = Context.local()
    with pytest.raises(CheckpointTooLarge, match=r"the limit is 262144 .*configure an object store"):
        ctx.step.run("big", lambda: "a" * (RECORD_LIMIT + 1))
    with pytest.raises(CheckpointTooLarge, match=r"900 KiB\) per run.*configure an object store"):
        for i in range(5):
            ctx.step.run(f"s{i}", lambda: "a" * 200_000)


def test_the_step_grant_is_read_from_its_mounted_files(tmp_path: Path):
    assert read_step_grant(str(tmp_path)) is None
    (tmp_path / PUTS_KEY).write_text(json.dumps([{"uri": "u", "url": "https://p"}]))
    (tmp_path / GETS_KEY).write_text(json.dumps({"g": {"url": "https://g"}}))
    (tmp_path / protocol.GRANT_THRESHOLD).write_text("65536")
    (tmp_path / protocol.GRANT_EXPIRES).write_text("2026-05-01T08:20:00Z")
    blobs = read_step_grant(str(tmp_path))
    assert blobs is not None and blobs.puts == [("u", "https://p")] and blobs.gets == {"g": {"url": "https://g"}}
    assert blobs.threshold == 65536 and blobs.expires == datetime(2026, 5, 1, 8, 20, tzinfo=timezone.utc)


def test_a_small_output_goes_to_the_store_when_the_runs_checkpoints_are_full():
    cm, store = MemoryStore({"payload.json": "x" * (900 * 1024 - 500)}), FakeStore(1)
    s = steps(cm, store.grant({}), 1)
    assert s.run("small", lambda: "a" * 600) == "a" * 600  # below the threshold, but no room in the ConfigMap
    assert "resultRef" in json.loads(cm.data[configmap_key("small")])


def test_the_examples_the_cluster_test_runs_keep_their_outputs_in_the_store_across_attempts(monkeypatch):
    """kubetasks_examples.big_steps through the real entry point, the store in memory: the pipeline
    crashes after step 2 in attempt 1, and attempt 2 runs step 3 only; a kept output comes back
    after a durable sleep."""
    import os
    import sys

    from kubetasks.runtime import entry
    from kubetasks.runtime.entry import Invocation, run_task

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "python"))
    from kubetasks_examples.big import blob, digest_of

    def crash(code: int) -> None:
        raise SystemExit(code)
    monkeypatch.setattr(os, "_exit", crash)

    def attempt(entrypoint: str, payload: dict[str, Any], n: int, cm: MemoryStore, grant: StepBlobs,
                now: datetime) -> Any:
        monkeypatch.setattr(entry, "read_step_grant", lambda directory: grant)
        invocation = Invocation(entrypoint=f"kubetasks_examples.big_steps:{entrypoint}", payload=json.dumps(payload),
                                run="p", run_uid=UID, attempt=n)
        return run_task(invocation, cm, lambda: now)

    size, t0 = 5_000_000, datetime(2026, 6, 1, tzinfo=timezone.utc)
    cm, first = MemoryStore(), FakeStore(1)
    assert attempt("pipeline", {"bytes": size}, 1, cm, first.grant({}, 65536), t0).code == 1
    second = FakeStore(2)
    second.blobs = first.blobs
    report = attempt("pipeline", {"bytes": size}, 2, cm, second.grant(cm.data, 65536), t0).report
    assert report.outcome == "succeeded", report
    assert report.result["ran_in"] == {"one": 1, "two": 1, "three": 2}
    assert report.result["one"] == digest_of(blob(size)) and len(first.blobs) == 2

    cm, first = MemoryStore(), FakeStore(1)
    payload = {"bytes": 300_000, "pause": 5}
    assert attempt("kept_then_paused", payload, 1, cm, first.grant({}, 65536), t0).report.outcome == "sleeping"
    second = FakeStore(2)
    second.blobs = first.blobs
    report = attempt("kept_then_paused", payload, 2, cm, second.grant(cm.data, 65536), t0 + timedelta(seconds=6)).report
    assert report.result == {"made_in": 1, "read_in": 2, "data": digest_of(blob(300_000))}
