"""Durable steps and sleeps, with checkpoints in memory (a retry is a new Context on the same store)."""

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import BaseModel

from kubetasks.runtime import Context, MemoryStore
from kubetasks.runtime.checkpoints import RECORD_LIMIT, configmap_key, parse_checkpoints
from kubetasks.runtime.context import RESUMED
from kubetasks.runtime.durations import duration_string, seconds_of
from kubetasks.runtime.errors import CheckpointTooLarge, DuplicateStepKey, InvalidResult, InvalidStepKey, SleepRequested

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def attempt(store: MemoryStore, n: int, clock: Clock | None = None, run: str = "run-uid-1") -> Context:
    return Context.local({}, run_id=run, attempt=n, store=store, clock=clock or Clock())


def test_a_completed_step_is_skipped_on_retry():
    store, calls = MemoryStore(), []

    def charge(amount):
        calls.append(amount)
        return {"charged": amount}

    assert attempt(store, 1).step.run("charge", charge, 5) == {"charged": 5}
    assert attempt(store, 2).step.run("charge", charge, 5) == {"charged": 5}
    assert calls == [5]
    record = parse_checkpoints(store.data)["charge"]
    assert record.attempt == 1 and record.completed_at == T0 and record.duration_seconds is not None


def test_a_step_that_raised_runs_again():
    store = MemoryStore()

    def boom():
        raise ValueError("down")

    with pytest.raises(ValueError):
        attempt(store, 1).step.run("call", boom)
    assert store.data == {}
    ctx = attempt(store, 2)
    with pytest.raises(ValueError):
        ctx.step.run("call", boom)
    assert ctx.step.run("call", lambda: "ok") == "ok"  # a failed key may be tried again


def test_results_are_what_a_retry_would_read():
    store = MemoryStore()
    first = attempt(store, 1).step.run("t", lambda: (1, {2: "x"}))
    again = attempt(store, 2).step.run("t", lambda: None)
    assert first == again == [1, {"2": "x"}]


class User(BaseModel):
    id: int
    name: str


def test_pydantic_results_come_back_as_models():
    store = MemoryStore()

    def load() -> User:
        return User(id=1, name="ada")

    assert attempt(store, 1).step.run("load", load) == User(id=1, name="ada")
    assert attempt(store, 2).step.run("load", load) == User(id=1, name="ada")


def test_non_json_results_fail_the_step():
    with pytest.raises(InvalidResult, match="the result of step 'x' is not JSON-serialisable"):
        attempt(MemoryStore(), 1).step.run("x", object)


def test_nested_steps_scope_their_keys_five_deep():
    store, seen = MemoryStore(), {}

    def level(n):
        ctx = current["ctx"]
        seen[n] = (ctx.step.key, ctx.step.idempotency_key)
        if n == 5:
            return "leaf"
        return ctx.step.run(f"l{n + 1}", level, n + 1)

    current = {"ctx": attempt(store, 1)}
    assert current["ctx"].step.run("l1", level, 1) == "leaf"
    assert seen[5] == ("l1/l2/l3/l4/l5", "run-uid-1:l1/l2/l3/l4/l5")
    assert set(parse_checkpoints(store.data)) == {"l1", "l1/l2", "l1/l2/l3", "l1/l2/l3/l4", "l1/l2/l3/l4/l5"}
    assert configmap_key("l1/l2/l3/l4/l5") in store.data
    assert current["ctx"].step.key is None


def test_children_of_an_interrupted_parent_are_skipped_and_the_parent_finishes():
    store, calls = MemoryStore(), []

    def parent(crash):
        ctx = current["ctx"]
        a = ctx.step.run("a", lambda: calls.append("a") or 1)
        if crash:
            raise RuntimeError("crash")
        return a + ctx.step.run("b", lambda: calls.append("b") or 2)

    current = {"ctx": attempt(store, 1)}
    with pytest.raises(RuntimeError):
        current["ctx"].step.run("p", parent, True)
    current["ctx"] = attempt(store, 2)
    assert current["ctx"].step.run("p", parent, False) == 3
    assert calls == ["a", "b"]
    current["ctx"] = attempt(store, 3)
    assert current["ctx"].step.run("p", parent, False) == 3 and calls == ["a", "b"]


def test_idempotency_keys_are_stable_across_attempts_and_differ_across_runs():
    def key_of(ctx):
        return ctx.step.run("pay", lambda: ctx.step.idempotency_key)

    store = MemoryStore()
    first = key_of(attempt(store, 1))
    assert first == "run-uid-1:pay"
    # a crash before the checkpoint was written: the step runs again with the same key
    assert key_of(attempt(MemoryStore(), 2)) == first
    assert key_of(attempt(MemoryStore(), 1, run="run-uid-2")) != first
    with pytest.raises(RuntimeError, match="only defined inside a step"):
        attempt(store, 1).step.idempotency_key


def test_step_keys_are_unique_per_scope():
    ctx = attempt(MemoryStore(), 1)
    ctx.step.run("send", lambda: 1)
    with pytest.raises(DuplicateStepKey, match="'send' was already used"):
        ctx.step.run("send", lambda: 2)
    ctx.step.run("outer", lambda: ctx.step.run("send", lambda: 3))  # outer/send is another step
    for bad in ["", "a/b", None]:
        with pytest.raises(InvalidStepKey):
            ctx.step.run(bad, lambda: 0)


def test_a_too_large_step_result_fails_the_step_clearly():
    store = MemoryStore()
    ctx = attempt(store, 1)
    with pytest.raises(CheckpointTooLarge, match=r"step 'big': its checkpoint is \d+ bytes; the limit is 262144"):
        ctx.step.run("big", lambda: "x" * RECORD_LIMIT)
    assert store.data == {}


def test_checkpoints_stop_at_900_kib_in_all():
    ctx = attempt(MemoryStore(), 1)
    for i in range(3):
        ctx.step.run(f"chunk-{i}", lambda: "x" * 250_000)
    with pytest.raises(CheckpointTooLarge, match="the limit is 921600"):
        ctx.step.run("chunk-3", lambda: "x" * 250_000)


def test_async_steps_nest_and_run_concurrently_with_their_own_scopes():
    store = MemoryStore()

    async def child(name):
        await asyncio.sleep(0.01)
        return ctx.step.key

    async def parent(name):
        await asyncio.sleep(0)
        return await ctx.step.run_async("child", child, name)

    async def main():
        return await asyncio.gather(*(ctx.step.run_async(f"p{i}", parent, i) for i in range(3)))

    ctx = attempt(store, 1)
    assert asyncio.run(main()) == ["p0/child", "p1/child", "p2/child"]
    assert {"p0", "p0/child", "p2/child"} <= set(parse_checkpoints(store.data))
    ctx = attempt(store, 2)
    assert asyncio.run(main()) == ["p0/child", "p1/child", "p2/child"]  # replayed


def test_run_async_takes_sync_functions_and_run_takes_async_ones_outside_a_loop():
    ctx = attempt(MemoryStore(), 1)

    async def double(x):
        return 2 * x

    assert ctx.step.run("sync-side", double, 2) == 4
    assert asyncio.run(ctx.step.run_async("async-side", lambda: 5)) == 5

    async def wrong():
        return ctx.step.run("inside-loop", double, 1)

    with pytest.raises(TypeError, match="run_async"):
        asyncio.run(wrong())


def test_sleep_ends_the_attempt_then_resumes_once_the_time_has_passed():
    store, clock = MemoryStore(), Clock()
    with pytest.raises(SleepRequested) as slept:
        attempt(store, 1, clock).step.sleep("nap", "90s")
    wake = T0 + timedelta(seconds=90)
    assert slept.value.wake_at == wake
    record = parse_checkpoints(store.data)["nap"]
    assert record.kind == "sleep" and record.wake_at == wake and not record.completed

    clock.now = T0 + timedelta(seconds=30)  # woken early: sleep on, until the same time
    with pytest.raises(SleepRequested) as again:
        attempt(store, 2, clock).step.sleep("nap", "90s")
    assert again.value.wake_at == wake

    clock.now = T0 + timedelta(seconds=91)
    assert attempt(store, 3, clock).step.sleep("nap", "90s") is RESUMED
    record = parse_checkpoints(store.data)["nap"]
    assert record.completed and record.attempt == 3 and record.duration_seconds == 91

    writes = len(store.saves)
    clock.now = T0 + timedelta(hours=1)
    attempt(store, 4, clock).step.sleep("nap", "90s")
    assert len(store.saves) == writes


def test_sleep_is_awaitable_in_async_tasks_and_zero_does_not_stop():
    ctx = attempt(MemoryStore(), 1)

    async def main():
        await ctx.step.sleep("no-wait", 0)
        return "done"

    assert asyncio.run(main()) == "done"


def test_sleep_until_and_key_clashes_with_steps():
    store, clock = MemoryStore(), Clock()
    with pytest.raises(SleepRequested) as slept:
        attempt(store, 1, clock).step.sleep_until("until", datetime(2026, 3, 2))
    assert slept.value.wake_at == datetime(2026, 3, 2, tzinfo=timezone.utc)
    ctx = attempt(store, 1, clock)
    ctx.step.run("work", lambda: 1)
    with pytest.raises(DuplicateStepKey):
        attempt(store, 2, clock).step.sleep("work", 1)


@pytest.mark.parametrize("value, seconds", [(30, 30.0), (1.5, 1.5), (timedelta(minutes=2), 120.0),
                                            ("1h30m", 5400.0), ("250ms", 0.25)])
def test_durations_are_seconds_timedeltas_or_strings(value, seconds):
    assert seconds_of(value) == seconds


@pytest.mark.parametrize("value", [-1, "soon", "30", float("inf"), True, [1]])
def test_bad_durations_are_refused(value):
    with pytest.raises((ValueError, TypeError)):
        seconds_of(value)


def test_durations_for_the_api():
    assert duration_string(90) == "90s"
    assert duration_string(1.5) == "1500ms"
    assert duration_string(timedelta(hours=1)) == "3600s"
    assert duration_string("5m") == "5m"
