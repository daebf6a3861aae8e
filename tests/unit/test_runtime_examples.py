"""The example tasks (examples/python) run through the real entry point, checkpoints in memory."""

import hashlib
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kubetasks.runtime import MemoryStore
from kubetasks.runtime.checkpoints import parse_checkpoints
from kubetasks.runtime.entry import Invocation, run_task

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "python"))

T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)


def run(entrypoint, payload_json, attempt=1, store=None, now=T0):
    inv = Invocation(entrypoint=f"kubetasks_examples.{entrypoint}", payload=payload_json, run="ex-1", run_uid="u",
                     attempt=attempt)
    return run_task(inv, store if store is not None else MemoryStore(), lambda: now)


def test_hello_as_task_and_as_plain_function():
    assert run("hello:hello", '{"name": "Ada"}').report.result == {"greeting": "Hello, Ada!"}
    assert run("hello:run", "null").report.result == {"greeting": "Hello, world!"}


def test_flaky_fails_until_its_attempt_and_can_abort():
    assert run("flaky:flaky", '{"succeed_on": 2}', attempt=1).code == 1
    assert run("flaky:flaky", '{"succeed_on": 2}', attempt=2).report.result == {"attempt": 2}
    assert run("flaky:flaky", '{"abort": "no"}').code == 78


def test_memory_allocates_and_a_retry_resumes_after_prepare_with_the_smaller_size():
    store = MemoryStore()
    payload = '{"mb": 3, "retryMb": 1, "hold": 0}'
    first = run("memory:memory", payload, store=store)
    assert first.report.result == {"allocatedMiB": 3, "attempt": 1, "preparedOnAttempt": 1}
    retry = run("memory:memory", payload, attempt=2, store=store)
    assert retry.report.result == {"allocatedMiB": 1, "attempt": 2, "preparedOnAttempt": 1}


def test_steps_resume_after_a_crash_without_repeating_side_effects(capsys):
    store = MemoryStore()
    first = run("steps:steps", '{"crash": "raise"}', attempt=1, store=store)
    assert first.code == 1 and "between step 2 and step 3" in first.report.error_message
    second = run("steps:steps", '{"crash": "raise"}', attempt=2, store=store)
    assert second.report.result == {"counts": [1, 1, 1], "attempt": 2}
    effects = [line for line in capsys.readouterr().out.splitlines() if line.startswith("side effect")]
    assert [line.split()[2] for line in effects] == ["step-1", "step-2", "step-3"]
    assert "idempotency key u:step-3" in effects[-1]
    assert {k: r.attempt for k, r in parse_checkpoints(store.data).items()} == {"step-1": 1, "step-2": 1, "step-3": 2}


def test_replayed_fails_in_step_3_and_its_replay_runs_only_step_3(capsys):
    from kubetasks.core.replay import reused_records, seed_data
    from kubetasks.api.taskrun import ReplayOf

    store = MemoryStore()
    failed = run("replayed:replayed", "{}", store=store)
    assert failed.code == 1 and "step 3 failed" in failed.report.error_message
    seeded = MemoryStore(seed_data(reused_records(store.data, ReplayOf(name="ex-1", uid="u")), {}, None))
    inv = Invocation(entrypoint="kubetasks_examples.replayed:replayed", payload="{}", run="ex-2", run_uid="v",
                     replay_of="ex-1")
    again = run_task(inv, seeded, lambda: T0)
    assert again.report.result == {"counts": [1, 1, 1], "replay": True}
    effects = [line.split()[2] for line in capsys.readouterr().out.splitlines() if line.startswith("side effect")]
    assert effects == ["step-1", "step-2", "step-3", "step-3"]  # steps 1 and 2 once, step 3 in each run


def test_sleeper_sleeps_then_resumes():
    store = MemoryStore()
    first = run("sleeper:sleeper", '{"seconds": 5}', store=store)
    assert first.report.outcome == "sleeping" and first.report.wake_at == T0 + timedelta(seconds=5)
    done = run("sleeper:sleeper", '{"seconds": 5}', attempt=2, store=store, now=T0 + timedelta(seconds=6))
    assert done.report.outcome == "succeeded" and done.report.result["attempt"] == 2


def test_typed_validates_the_payload_and_returns_the_model_as_json():
    ok = run("typed:typed", '{"item": "book", "quantity": 2, "unitPriceCents": 1250}')
    assert ok.report.result == {"item": "book", "quantity": 2, "totalCents": 2500}
    bad = run("typed:typed", '{"item": "book", "quantity": 0, "unitPriceCents": 1}')
    assert (bad.code, bad.report.error_type) == (78, "InvalidPayload")


@pytest.mark.parametrize("name", ["hello", "flaky", "memory", "steps", "sleeper", "typed", "replayed"])
def test_examples_render_valid_task_manifests(name):
    import importlib

    from kubetasks.api.task import TaskSpec

    definition = getattr(importlib.import_module(f"kubetasks_examples.{name}"), name)
    manifest = definition.to_task_manifest("localhost/kubetasks/examples:dev")
    assert manifest["metadata"]["name"] == name
    assert TaskSpec.model_validate(manifest["spec"]).entrypoint == f"kubetasks_examples.{name}:{name}"


def test_digest_reports_what_arrived():
    blob = "é" * 1000
    assert run("digest:digest", json.dumps({"blob": blob})).report.result == {
        "sha256": hashlib.sha256(blob.encode()).hexdigest(), "bytes": 2000}
