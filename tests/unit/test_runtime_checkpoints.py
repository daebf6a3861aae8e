"""The checkpoint format (shared with the operator), its keys and its size limits."""

import json
import re
from datetime import datetime, timezone

import pytest

from kubetasks.api.taskrun import StepRecord
from kubetasks.runtime.checkpoints import (
    RECORD_LIMIT, TOTAL_LIMIT, Checkpoint, Checkpoints, MemoryStore, check_fits, configmap_key, format_time,
    parse_checkpoints, steps_from_configmap,
)
from kubetasks.runtime.errors import CheckpointTooLarge

VALID_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def test_plain_keys_stay_readable():
    assert configmap_key("charge-card") == "step.charge-card"
    assert configmap_key("v1.2_x") == "step.v1.2_x"


@pytest.mark.parametrize("key", ["a/b", "a/b/c/d/e", "send mail", "ünïcode", "x" * 400, "a:b", "a" * 248 + "/b"])
def test_every_key_maps_to_a_valid_configmap_key(key):
    cm_key = configmap_key(key)
    assert VALID_KEY.match(cm_key) and len(cm_key) <= 253 and cm_key.startswith("step.")
    assert cm_key == configmap_key(key)  # stable


def test_changed_keys_carry_a_hash_so_they_never_collide():
    assert configmap_key("a/b").startswith("step.a.b-")
    assert len({configmap_key(k) for k in ["a/b", "a.b", "a_b", "a b", "a:b"]}) == 5
    assert configmap_key("x" * 300 + "1") != configmap_key("x" * 300 + "2")


def test_record_format_is_the_documented_one():
    record = Checkpoint(key="parent/child", result={"id": 7}, attempt=2, duration_seconds=0.41234, completed_at=T0)
    assert json.loads(record.encode()) == {
        "key": "parent/child", "result": {"id": 7}, "attempt": 2, "durationSeconds": 0.412,
        "completedAt": "2026-01-02T03:04:05.678Z",
    }
    assert Checkpoint.decode(record.encode()) == Checkpoint(key="parent/child", result={"id": 7}, attempt=2,
                                                            duration_seconds=0.412, completed_at=T0)


def test_sleep_records_carry_wake_and_start_times():
    record = Checkpoint(key="nap", kind="sleep", attempt=1, wake_at=T0, started_at=T0)
    body = json.loads(record.encode())
    assert body["kind"] == "sleep" and body["wakeAt"] == format_time(T0) and body["completedAt"] is None
    assert Checkpoint.decode(record.encode()) == record


def test_unreadable_values_and_foreign_keys_are_skipped():
    data = {"step.a": Checkpoint(key="a", result=1, attempt=1, completed_at=T0).encode(),
            "step.bad": "not json", "step.list": "[1]", "other": '{"key": "x"}'}
    assert list(parse_checkpoints(data)) == ["a"]


def test_steps_for_status_are_oldest_first_with_pending_sleeps_last():
    later = T0.replace(second=30)
    data = {
        configmap_key("b"): Checkpoint(key="b", result=None, attempt=2, duration_seconds=1.5, completed_at=later).encode(),
        configmap_key("a/x"): Checkpoint(key="a/x", result=None, attempt=1, duration_seconds=0.1, completed_at=T0).encode(),
        configmap_key("nap"): Checkpoint(key="nap", kind="sleep", attempt=2, wake_at=later, started_at=later).encode(),
        "unrelated": "x",
    }
    steps = steps_from_configmap(data)
    assert steps == [
        StepRecord(name="a/x", attempt=1, duration_seconds=0.1, completed_at=T0),
        StepRecord(name="b", attempt=2, duration_seconds=1.5, completed_at=later),
        StepRecord(name="nap", attempt=2, wake_at=later),
    ]
    assert steps_from_configmap(None) == [] and steps_from_configmap({}) == []


def test_status_keeps_the_most_recent_steps_when_there_are_too_many():
    data = {configmap_key(f"s{i:03}"): Checkpoint(key=f"s{i:03}", attempt=1,
                                                   completed_at=T0.replace(minute=i % 60, hour=i // 60)).encode()
            for i in range(250)}
    steps = steps_from_configmap(data)
    assert len(steps) == 200 and steps[0].name == "s050" and steps[-1].name == "s249"


def test_a_record_over_256_kib_is_refused():
    value = "x" * (RECORD_LIMIT + 1)
    with pytest.raises(CheckpointTooLarge, match=r"step 'big': its checkpoint is 262145 bytes; the limit is 262144"):
        check_fits({}, "step.big", value, "big")
    check_fits({}, "step.big", "x" * RECORD_LIMIT, "big")


def test_the_whole_configmap_stays_under_900_kib():
    data = {f"step.s{i}": "x" * 200_000 for i in range(4)}  # ~800 KB
    with pytest.raises(CheckpointTooLarge, match=r"would bring the run's checkpoints to \d+ bytes; the limit is 921600"):
        check_fits(data, "step.next", "y" * 150_000, "next")
    check_fits(data, "step.s0", "y" * 250_000, "s0")  # replacing a record counts it once
    assert TOTAL_LIMIT == 900 * 1024


def test_checkpoints_load_once_and_only_when_used():
    store = MemoryStore({"step.a": Checkpoint(key="a", result=1, attempt=1, completed_at=T0).encode()})
    checkpoints = Checkpoints(store)
    assert store.loads == 0
    assert checkpoints.get("a").result == 1
    checkpoints.put(Checkpoint(key="b", result=2, attempt=1, completed_at=T0))
    assert checkpoints.get("b").result == 2 and checkpoints.get("zzz") is None
    assert store.loads == 1 and store.saves == ["step.b"]


def test_a_refused_record_is_not_written():
    store = MemoryStore()
    with pytest.raises(CheckpointTooLarge):
        Checkpoints(store).put(Checkpoint(key="big", result="x" * RECORD_LIMIT, attempt=1, completed_at=T0))
    assert store.saves == [] and store.data == {}
