"""Replays (core.replay, controller.replay): which of the original's step records a replay starts
from, the blobs it copies into its own prefix, and a replay whose original is gone."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from kubetasks.api.storage import BlobRef, step_path
from kubetasks.api.taskrun import ReplayOf, TaskRun
from kubetasks.blobs import BlobStore, StorageConfig
from kubetasks.core.naming import checkpoint_name
from kubetasks.core.replay import INVALID_REPLAY, SOURCE_MISSING, blob_copies, replay_refusal, reused_records, seed_data
from kubetasks.core.step_grants import judge_step_ref, replayed_path, slot_path
from kubetasks.protocol import ENV_REPLAY_OF, Checkpoint, configmap_key, parse_checkpoints
from kubetasks.runtime.context import Context
from kubetasks.runtime.entry import invocation_from_env
from tests.unit.test_reconcile_runs import NS, World, task, taskrun

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
ORIG_UID, REPLAY_UID = "0rig-uid", "rep1-uid"


def record(key: str, second: int | None, result: Any = None, **more: Any) -> Checkpoint:
    done = T0 + timedelta(seconds=second) if second is not None else None
    return Checkpoint(key=key, result=result, attempt=1, completed_at=done, **more)


def data(*records: Checkpoint) -> dict[str, str]:
    return {"payload.json": "{}", "result.attempt-1": "1", **{configmap_key(r.key): r.encode() for r in records}}


ORIGINAL = data(record("one", 1, 1), record("two", 2, 2), record("two/inner", 2, 3), record("two-b", 3, 4),
                record("nap", None, kind="sleep", wake_at=T0 + timedelta(hours=1)))


def keys(replay: ReplayOf) -> list[str]:
    return [r.key for r in reused_records(ORIGINAL, replay)]


def test_by_default_every_completed_step_is_reused_and_a_sleep_not_over_is_not():
    assert keys(ReplayOf(name="o", uid=ORIG_UID)) == ["one", "two", "two-b", "two/inner"]


def test_from_step_reuses_what_completed_before_it_or_anything_nested_in_it():
    # "two/inner" completed at 2, before its parent "two": from "two", neither is reused.
    assert keys(ReplayOf(name="o", uid=ORIG_UID, from_step="two")) == ["one"]
    # "two-b" shares a prefix with "two" but is not nested in it: it completed after, so it runs again too.
    assert keys(ReplayOf(name="o", uid=ORIG_UID, from_step="two-b")) == ["one", "two", "two/inner"]
    assert keys(ReplayOf(name="o", uid=ORIG_UID, from_step="one")) == []
    # a step that never completed (the one that failed): all that did are reused, as by default
    assert keys(ReplayOf(name="o", uid=ORIG_UID, from_step="three")) == keys(ReplayOf(name="o", uid=ORIG_UID))


def test_fresh_reuses_nothing():
    assert keys(ReplayOf(name="o", uid=ORIG_UID, fresh=True)) == []


def run_of(spec: dict[str, Any], uid: str = REPLAY_UID) -> TaskRun:
    return TaskRun.model_validate({"metadata": {"name": "o-replay-x", "namespace": NS, "uid": uid}, "spec": spec})


def test_a_replay_is_refused_when_its_original_is_gone_another_run_or_of_another_task():
    replay = run_of({"taskRef": "t", "replayOf": {"name": "o", "uid": ORIG_UID}})
    original = {"metadata": {"name": "o", "uid": ORIG_UID}, "spec": {"taskRef": "t"}}
    assert replay_refusal(replay, original) is None
    gone = replay_refusal(replay, None)
    assert gone is not None and gone.reason == SOURCE_MISSING and "does not exist" in gone.message
    other = replay_refusal(replay, {**original, "metadata": {"name": "o", "uid": "new"}})
    assert other is not None and other.reason == SOURCE_MISSING and "another run now" in other.message
    wrong = replay_refusal(replay, {**original, "spec": {"taskRef": "u"}})
    assert wrong is not None and wrong.reason == INVALID_REPLAY
    fresh = run_of({"taskRef": "t", "replayOf": {"name": "o", "uid": ORIG_UID, "fresh": True}})
    assert replay_refusal(fresh, None) is None  # it needs nothing of the original
    assert replay_refusal(run_of({"taskRef": "t"}), None) is None


STORE = "s3://bucket/kt"


def test_only_the_originals_own_step_blobs_are_copied_and_the_copy_is_the_replays_own():
    own = f"{STORE}/{slot_path(NS, ORIG_UID, 1, 0)}"
    forged = f"{STORE}/{slot_path(NS, 'someone-else', 1, 0)}"  # a record the original's pod wrote to read another's
    records = [record("a", 1, result_ref=BlobRef.of(own, b"[1]").to_api()),
               record("b", 2, result_ref=BlobRef.of(forged, b"[2]").to_api()), record("c", 3, 3)]
    copies = blob_copies(records, NS, ORIG_UID, REPLAY_UID, STORE)
    assert copies == {own: (slot_path(NS, ORIG_UID, 1, 0), replayed_path(NS, REPLAY_UID, own))}
    seeded = parse_checkpoints(seed_data(records, copies, STORE))
    copied = seeded["a"].result_ref or {}
    assert copied["uri"] == f"{STORE}/{replayed_path(NS, REPLAY_UID, own)}"
    assert copied["sha256"] == records[0].result_ref["sha256"]  # type: ignore[index]
    assert judge_step_ref(copied, NS, REPLAY_UID, STORE).path == replayed_path(NS, REPLAY_UID, own)
    # the forged ref is left as written: the replay's grant refuses it, as the original's did
    assert seeded["b"].result_ref == records[1].result_ref
    assert judge_step_ref(seeded["b"].result_ref, NS, REPLAY_UID, STORE).refusal
    assert seeded["c"].result == 3 and blob_copies(records, NS, ORIG_UID, REPLAY_UID, None) == {}


def test_only_a_copy_named_as_the_operator_names_them_is_a_replays_own():
    copy = replayed_path(NS, REPLAY_UID, "s3://x")
    for forged in (step_path(NS, REPLAY_UID, "replayed-xyz"), copy + "/x", copy.replace(REPLAY_UID, ORIG_UID)):
        assert judge_step_ref(BlobRef.of(f"{STORE}/{forged}", b"1").to_api(), NS, REPLAY_UID, STORE).path is None
    assert judge_step_ref(BlobRef.of(f"{STORE}/{copy}", b"1").to_api(), NS, REPLAY_UID, STORE).path == copy


def test_copies_of_distinct_blobs_never_share_a_path():
    # a replay of a replay holds both kinds: its own slots and copies it was seeded with
    a = f"{STORE}/{slot_path(NS, ORIG_UID, 1, 0)}"
    b = f"{STORE}/{replayed_path(NS, ORIG_UID, 'x')}"
    assert replayed_path(NS, REPLAY_UID, a) != replayed_path(NS, REPLAY_UID, b)
    assert replayed_path(NS, REPLAY_UID, a).startswith(step_path(NS, REPLAY_UID, "replayed-"))


# -- the reconciler ---------------------------------------------------------------------------------

def sdk_task() -> dict[str, Any]:
    return task(entrypoint="m:f", command=None, retry={"maxAttempts": 1})


def with_original(*records: Checkpoint, phase: str = "Failed") -> tuple[World, str]:
    w = World(sdk_task(), {**taskrun("o"), "status": {"phase": phase, "attempt": 1}})
    uid = w.api.objects[("TaskRun", NS, "o")]["metadata"]["uid"]
    w.api.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": checkpoint_name("o", uid), "namespace": NS},
               "data": data(*records)})
    w.api.deliver(w.op.cache)
    return w, uid


def replay(uid: str, **replay_of: Any) -> dict[str, Any]:
    return taskrun("o-replay-1", payload={"x": 1}, replayOf={"name": "o", "uid": uid, **replay_of})


def test_a_replay_starts_from_copies_of_the_originals_records_and_never_writes_the_original():
    w, uid = with_original(record("one", 1, 1), record("two", 2, 2))
    before = json.dumps(w.api.objects[("ConfigMap", NS, checkpoint_name("o", uid))], sort_keys=True)
    original_run = json.dumps(w.api.objects[("TaskRun", NS, "o")], sort_keys=True)
    w.api.add(replay(uid, fromStep="two"))
    w.api.deliver(w.op.cache)
    w.reconcile("o-replay-1")
    assert w.status("o-replay-1")["phase"] == "Running"
    new_uid = w.api.objects[("TaskRun", NS, "o-replay-1")]["metadata"]["uid"]
    seeded = w.api.objects[("ConfigMap", NS, checkpoint_name("o-replay-1", new_uid))]["data"]
    assert set(parse_checkpoints(seeded)) == {"one"} and "payload.json" not in seeded
    env = {e["name"]: e.get("value") for e in
           w.api.objects[("Job", NS, "o-replay-1-1")]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[ENV_REPLAY_OF] == "o"
    assert json.dumps(w.api.objects[("ConfigMap", NS, checkpoint_name("o", uid))], sort_keys=True) == before
    assert json.dumps(w.api.objects[("TaskRun", NS, "o")], sort_keys=True) == original_run


@pytest.mark.parametrize("change", ["deleted", "recreated"])
def test_a_replay_whose_original_is_gone_fails_saying_so_and_starts_nothing(change):
    w, uid = with_original(record("one", 1, 1))
    w.api.remove(("TaskRun", NS, "o"))
    if change == "recreated":
        w.api.add({**taskrun("o"), "status": {"phase": "Failed"}})  # another run under its name
    w.api.add(replay(uid))
    w.api.deliver(w.op.cache)
    w.reconcile("o-replay-1")
    s = w.status("o-replay-1")
    assert s["phase"] == "Failed" and s["error"]["type"] == SOURCE_MISSING
    assert next(c for c in s["conditions"] if c["type"] == "Succeeded")["reason"] == SOURCE_MISSING
    assert ("o-replay-1", "Warning", SOURCE_MISSING) in [e[:3] for e in w.api.events]
    assert w.api.created() == []


def test_a_replay_whose_originals_records_vanished_before_its_first_attempt_fails_saying_so():
    w, uid = with_original(record("one", 1, 1))
    w.api.remove(("ConfigMap", NS, checkpoint_name("o", uid)))
    w.api.add(replay(uid))
    w.api.deliver(w.op.cache)
    w.reconcile("o-replay-1")
    s = w.status("o-replay-1")
    assert s["phase"] == "Failed" and s["error"]["type"] == SOURCE_MISSING and "are gone" in s["error"]["message"]
    assert w.api.created() == []


def test_a_reused_output_in_the_store_is_copied_into_the_replays_prefix(tmp_path):
    store = BlobStore(StorageConfig(url=f"file://{tmp_path}/store"))
    w, uid = with_original()
    ref = store.put(slot_path(NS, uid, 1, 0), b'{"big":1}')
    w.api.objects[("ConfigMap", NS, checkpoint_name("o", uid))]["data"] = data(
        record("one", 1, result_ref=ref.to_api()))
    w.op.runs.results.store = store
    w.api.add(replay(uid))
    w.api.deliver(w.op.cache)
    w.reconcile("o-replay-1")
    new_uid = w.api.objects[("TaskRun", NS, "o-replay-1")]["metadata"]["uid"]
    seeded = parse_checkpoints(w.api.objects[("ConfigMap", NS, checkpoint_name("o-replay-1", new_uid))]["data"])
    copied = BlobRef.model_validate(seeded["one"].result_ref)
    assert copied.uri == store.uri(replayed_path(NS, new_uid, ref.uri))
    assert store.get(copied) == b'{"big":1}' and store.get(ref) == b'{"big":1}'  # the original's stays


def test_a_replay_whose_reused_blob_is_missing_fails_saying_so(tmp_path):
    store = BlobStore(StorageConfig(url=f"file://{tmp_path}/store"))
    w, uid = with_original()
    ref = BlobRef.of(store.uri(slot_path(NS, uid, 1, 0)), b"1")  # never written
    w.api.objects[("ConfigMap", NS, checkpoint_name("o", uid))]["data"] = data(record("one", 1, result_ref=ref.to_api()))
    w.op.runs.results.store = store
    w.api.add(replay(uid))
    w.api.deliver(w.op.cache)
    w.reconcile("o-replay-1")
    s = w.status("o-replay-1")
    assert s["phase"] == "Failed" and s["error"]["type"] == SOURCE_MISSING and "missing" in s["error"]["message"]


# -- the runtime ------------------------------------------------------------------------------------

def test_ctx_is_replay_only_in_a_replay():
    assert invocation_from_env({ENV_REPLAY_OF: "o"}).replay_of == "o"
    assert invocation_from_env({}).replay_of is None
    assert Context.local(replay_of="o").is_replay and not Context.local().is_replay
