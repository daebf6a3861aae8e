"""The work queue: a reconciler's requeue time, Requeue for expected waits, progress for liveness."""

import asyncio
import time

import pytest

from kubetasks.controller.queue import Requeue, WorkQueue


def test_returned_times_and_requeues_bring_a_key_back_and_failures_back_off():
    seen: list[str] = []

    async def reconcile(key: str) -> float | None:
        seen.append(key)
        if key == "wait" and seen.count("wait") == 1:
            raise Requeue(0.05, "not yet")
        if key == "again" and seen.count("again") == 1:
            return 0.05
        return None

    async def main() -> WorkQueue[str]:
        q: WorkQueue[str] = WorkQueue("test", reconcile, workers=2)
        q.start()
        q.add("wait")
        q.add("again")
        q.add("once")
        await asyncio.sleep(0.3)
        await q.stop()
        return q

    q = asyncio.run(main())
    assert sorted(seen) == ["again", "again", "once", "wait", "wait"]
    assert not q.stalled(0.0)


def test_a_queue_whose_workers_all_hang_reports_itself_stalled():
    async def hang(key: str) -> None:
        await asyncio.Event().wait()

    async def main() -> bool:
        q: WorkQueue[str] = WorkQueue("test", hang, workers=1)
        q.start()
        q.add("a")
        q.add("b")  # waits behind the hung worker
        await asyncio.sleep(0.1)
        stalled = q.stalled(0.05)
        await q.stop()
        return stalled

    assert asyncio.run(main())


def test_the_stall_clock_starts_with_the_workers():
    """Keys queued while the informers list (before the workers exist) are no stall, however
    long the lists take or the standby waited; once started, the clock runs from the start."""
    async def hang(key: str) -> None:
        await asyncio.Event().wait()

    async def main() -> tuple[bool, bool, bool]:
        q: WorkQueue[str] = WorkQueue("test", hang, workers=1)  # made at import
        q.add("a")
        q.add("b")  # the stores fill before the workers start
        await asyncio.sleep(0.1)
        before_start = q.stalled(0.05)
        q.start()
        just_started = q.stalled(0.05)
        await asyncio.sleep(0.1)
        hung = q.stalled(0.05)  # "b" waits behind the hung worker
        await q.stop()
        return before_start, just_started, hung

    assert asyncio.run(main()) == (False, False, True)


@pytest.mark.timeout(10)
def test_a_key_that_comes_straight_back_never_keeps_the_event_loop_from_the_rest():
    """A reconcile that never awaits and asks to be run again at once: its worker must still
    give the loop back, or timers, I/O and signals stop for the whole process."""
    async def main() -> int:
        async def spin(key: str) -> float:
            return 0.0  # "again, now": it never suspends

        queue: WorkQueue[str] = WorkQueue("spin", spin, workers=1)
        queue.start()
        queue.add("hot")
        ticks = 0
        for _ in range(5):
            await asyncio.sleep(0.01)  # a timer: fires only if the loop gets its turn
            ticks += 1
        await queue.stop()
        return ticks

    began = time.monotonic()
    assert asyncio.run(main()) == 5
    assert time.monotonic() - began < 5  # without the yield: only when the timeout below interrupts


def test_a_reconcile_knows_when_its_key_was_woken_even_when_it_came_back_while_processing():
    from kubetasks.controller.queue import WOKEN_AT

    woken: list[float] = []
    release = asyncio.Event()

    async def reconcile(key: str) -> None:
        woken.append(WOKEN_AT.get())
        if len(woken) == 1:
            await release.wait()

    async def main() -> tuple[float, float, float]:
        q: WorkQueue[str] = WorkQueue("test", reconcile, workers=1)
        q.start()
        first = time.monotonic()
        q.add("k")
        await asyncio.sleep(0.05)  # being processed
        again = time.monotonic()
        q.add("k")  # comes back while processing: woken now, not when the first pass ends
        q.add("k")  # a second add changes nothing
        await asyncio.sleep(0.05)
        released = time.monotonic()
        release.set()
        await asyncio.sleep(0.05)
        await q.stop()
        return first, again, released

    first, again, released = asyncio.run(main())
    assert len(woken) == 2
    assert first <= woken[0] < again <= woken[1] < released


def test_first_keys_go_ahead_of_the_rest_and_each_key_is_still_reconciled_once():
    seen: list[str] = []

    async def reconcile(key: str) -> None:
        seen.append(key)

    async def main() -> None:
        q: WorkQueue[str] = WorkQueue("test", reconcile, workers=1)
        q.add("a")
        q.add("b")
        q.add("c", first=True)
        q.add("a", first=True)  # queued already: moves ahead, not twice
        q.add("c", first=True)
        q.start()
        await asyncio.sleep(0.05)
        assert len(q) == 0
        await q.stop()

    asyncio.run(main())
    assert seen == ["c", "a", "b"]


def test_a_key_queued_by_a_watch_event_was_woken_when_the_reflector_read_the_event():
    """The hand-off from the reflector's thread to the loop counts in the run's start latency."""
    from kubetasks.controller.queue import WOKEN_AT
    from kubetasks.informer import reflector

    woken: dict[str, float] = {}

    async def reconcile(key: str) -> None:
        woken[key] = WOKEN_AT.get()

    async def main() -> tuple[float, float]:
        q: WorkQueue[str] = WorkQueue("test", reconcile, workers=1)
        q.start()
        read = time.monotonic() - 0.25  # read off the wire a while before the loop applied it
        reflector._apply_event(lambda: q.add("by-event"), read)
        queued = time.monotonic()
        q.add("otherwise")  # no event being applied (a timer, a freed slot found later): now
        while len(woken) < 2:
            await asyncio.sleep(0.01)
        await q.stop()
        return read, queued

    read, queued = asyncio.run(main())
    assert woken["by-event"] == read
    assert queued <= woken["otherwise"] < queued + 1
