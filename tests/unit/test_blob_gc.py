"""The sweep's decision: which runs' blobs go (core.blob_gc)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, strategies as st

from kubetasks.core.blob_gc import RunBlobs, by_run, to_delete, usage

NOW = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
GRACE = timedelta(minutes=10)
OLD = NOW - timedelta(hours=1)


def test_objects_are_summed_per_run_and_other_paths_left_alone():
    listing = [("runs/a/u1/payload", 10, OLD), ("runs/a/u1/attempt-1/log", 5, NOW),
               ("runs/b/u2/attempt-1/result", 7, OLD),
               ("elsewhere/x", 99, OLD), ("runs/a/", 1, OLD), ("runs/a/u3", 1, OLD), ("runs//u4/x", 1, OLD)]
    assert by_run(listing) == [RunBlobs("a", "u1", 2, 15, NOW), RunBlobs("b", "u2", 1, 7, OLD)]
    assert by_run(listing)[0].prefix == "runs/a/u1/"


def test_a_run_gone_loses_its_blobs_once_nothing_was_written_for_the_grace():
    gone, recent, known = RunBlobs("a", "gone", 1, 1, OLD), RunBlobs("a", "new", 1, 1, NOW - GRACE / 2), \
        RunBlobs("a", "known", 1, 1, OLD)
    assert to_delete([gone, recent, known], {("a", "known")}, NOW, GRACE) == [gone]
    # At exactly the grace it goes.
    edge = RunBlobs("a", "edge", 1, 1, NOW - GRACE)
    assert to_delete([edge], set(), NOW, GRACE) == [edge]


def test_a_run_is_known_by_namespace_and_uid():
    elsewhere = RunBlobs("b", "u1", 1, 1, OLD)
    assert to_delete([elsewhere], {("a", "u1")}, NOW, GRACE) == [elsewhere]


def test_only_the_watched_namespaces_are_swept():
    a, b = RunBlobs("a", "u1", 1, 1, OLD), RunBlobs("b", "u2", 1, 1, OLD)
    assert to_delete([a, b], set(), NOW, GRACE, namespaces=["b"]) == [b]
    assert to_delete([a, b], set(), NOW, GRACE) == [a, b]


def test_usage_counts_what_stays_per_namespace():
    a1, a2, b = RunBlobs("a", "u1", 2, 10, OLD), RunBlobs("a", "u2", 1, 5, OLD), RunBlobs("b", "u3", 1, 1, OLD)
    assert usage([a1, a2, b]) == {"a": (3, 15), "b": (1, 1)}
    assert usage([a1, a2, b], deleted=[a1, b]) == {"a": (1, 5)}


names = st.sampled_from(["a", "b", "c"])
uids = st.sampled_from(["u1", "u2", "u3", "u4"])
ages = st.integers(min_value=0, max_value=7200).map(lambda s: NOW - timedelta(seconds=s))
listings = st.lists(st.tuples(names, uids, st.sampled_from(["payload", "attempt-1/log", "steps/k"]),
                              st.integers(0, 10**9), ages)).map(
    lambda rows: [(f"runs/{ns}/{uid}/{rest}", size, at) for ns, uid, rest, size, at in rows])


@given(listings, st.sets(st.tuples(names, uids)))
def test_never_a_known_run_nor_a_recent_write_and_the_totals_add_up(listing, known):
    runs = by_run(listing)
    deleted = to_delete(runs, known, NOW, GRACE)
    for r in deleted:
        assert (r.namespace, r.uid) not in known
        assert all(at <= NOW - GRACE for path, _, at in listing if path.startswith(r.prefix))
    kept = usage(runs, deleted)
    assert sum(o for o, _ in kept.values()) + sum(r.objects for r in deleted) == len(listing)
    assert sum(b for _, b in kept.values()) + sum(r.bytes for r in deleted) == sum(s for _, s, _ in listing)
    # The order of the listing does not matter.
    assert by_run(reversed(listing)) == runs


# The sweep itself (controller.blob_gc), on the filesystem backend and an operator cache.
def run_body(ns: str, name: str, uid: str) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
            "metadata": {"namespace": ns, "name": name, "uid": uid, "resourceVersion": "1"},
            "spec": {"taskRef": "t"}}


def test_the_sweep_deletes_the_blobs_of_runs_gone_once_the_cache_has_synced(tmp_path):
    import asyncio
    import os
    import time

    from kubetasks.blobs import BlobStore, StorageConfig
    from kubetasks.controller import metrics
    from kubetasks.controller.blob_gc import BlobSweeper
    from kubetasks.controller.cache import Cache

    store = BlobStore(StorageConfig(url=f"file://{tmp_path}/store"))
    for path in ("runs/a/known/payload", "runs/a/known/attempt-1/log", "runs/a/gone/payload",
                 "runs/b/orphan/steps/k", "runs/b/recent/payload", "notarun/x"):
        store.put(path, b"12345")
    hour_ago = time.time() - 3600
    for path in ("runs/a/known/payload", "runs/a/known/attempt-1/log", "runs/a/gone/payload", "runs/b/orphan/steps/k"):
        os.utime(tmp_path / "store" / path, (hour_ago, hour_ago))
    cache = Cache()
    sweeper = BlobSweeper(store, cache, grace=60)

    async def sweep() -> list:
        return await sweeper.sweep_now()

    assert asyncio.run(sweep()) == []  # not synced: it knows no run, and deletes nothing
    assert store.usage("runs/") == (6 - 1, 25)
    cache.tasks.replace([])
    cache.jobs.replace([])
    cache.runs.replace([cache.runs.slim(run_body("a", "r1", "known"))])
    assert {(r.namespace, r.uid) for r in asyncio.run(sweep())} == {("a", "gone"), ("b", "orphan")}
    left = sorted(path for path, _, _ in store.listing())
    assert left == ["notarun/x", "runs/a/known/attempt-1/log", "runs/a/known/payload", "runs/b/recent/payload"]
    assert not (tmp_path / "store/runs/a/gone").exists()  # no empty directories left behind
    assert metrics.STORE_OBJECTS.labels("a")._value.get() == 2
    assert metrics.STORE_BYTES.labels("b")._value.get() == 5
    # A namespace whose last blobs went is no longer reported.
    cache.runs.replace([])
    store.delete_prefix("runs/b/")
    asyncio.run(sweep())
    samples = {s.labels["namespace"] for m in metrics.STORE_OBJECTS.collect() for s in m.samples}
    assert "b" not in samples and "a" not in samples


def test_a_failing_store_costs_a_sweep_not_the_loop():
    import asyncio

    from kubetasks.controller.blob_gc import BlobSweeper
    from kubetasks.controller.cache import Cache

    class Flaky:
        def __init__(self) -> None:
            self.listings = 0
            self.deleted: list[str] = []

        def listing(self, prefix: str = ""):
            self.listings += 1
            if self.listings == 1:
                raise ConnectionError("store down")
            yield f"{prefix}a/gone/payload", 1, OLD

        def delete_prefix(self, prefix: str) -> int:
            self.deleted.append(prefix)
            return 1

    cache = Cache()
    for store in (cache.tasks, cache.jobs, cache.runs):
        store.replace([])
    flaky = Flaky()
    sweeper = BlobSweeper(flaky, cache, period=0.01, grace=60)  # type: ignore[arg-type]

    async def main() -> None:
        loop = asyncio.create_task(sweeper.run())
        while not flaky.deleted:
            await asyncio.sleep(0.01)
        loop.cancel()

    asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert flaky.listings >= 2 and flaky.deleted[0] == "runs/a/gone/"
