"""The work queue: a reconciler's requeue time, Requeue for expected waits, progress for liveness."""

import asyncio

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
