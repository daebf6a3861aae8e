"""The run reconciler with the log archive (controller.log_archive) against a fake API server and a
real filesystem store: the outcome waits for the upload, a store down holds it and says why, and a
store down past the deadline fails the upload for good with a reason, never the run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kubetasks.api.storage import BlobRef, log_path
from kubetasks.blobs import BlobStore, StorageConfig
from tests.unit.test_logs import World, finish
from tests.unit.test_reconcile_runs import NS, task, taskrun

LOG = b"".join(b"line %d\n" % i for i in range(100))


def archiving(tmp_path: Path, deadline: float = 300.0) -> World:
    w = World(task(), taskrun("r"))
    w.op.runs.archive.configure({"KUBETASKS_STORAGE_UPLOAD_DEADLINE_SECONDS": str(deadline)},
                                BlobStore(StorageConfig(url=f"file://{tmp_path}/store")))
    return w


async def reconcile(w: World) -> None:
    await w.op.runs.reconcile((NS, "r"))
    w.api.deliver(w.op.cache)


async def uploads_done(w: World) -> None:
    while w.op.runs.archive._tasks:
        await asyncio.gather(*w.op.runs.archive._tasks, return_exceptions=True)


def condition(w: World) -> dict:
    return next(c for c in w.status("r")["conditions"] if c["type"] == "LogArchived")


def test_the_outcome_is_written_once_the_whole_log_is_archived(tmp_path):
    w = archiving(tmp_path)

    async def scenario() -> None:
        await reconcile(w)
        finish(w, "r-1", ok=True, log=LOG)
        await reconcile(w)  # the attempt is over: its upload starts, the outcome waits
        assert w.status("r")["phase"] == "Running" and condition(w)["status"] == "Unknown"
        await uploads_done(w)
        await reconcile(w)
    asyncio.run(scenario())
    s = w.status("r")
    assert s["phase"] == "Succeeded" and condition(w)["status"] == "True"
    ref = BlobRef.model_validate(s["attempts"][0]["log"])
    uid = w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    assert ref == BlobRef.of(f"file://{tmp_path}/store/{log_path(NS, uid, 1)}", LOG)
    assert w.op.runs.archive.store.get(ref) == LOG  # type: ignore[union-attr]
    opened, chunks = w.op.runs.archive.open(NS, "r", 1)
    assert opened == ref and b"".join(chunks) == LOG


def test_a_store_down_holds_the_outcome_and_one_down_past_the_deadline_gives_up_with_a_reason(tmp_path):
    w = archiving(tmp_path, deadline=1.0)
    (tmp_path / "store" / "runs").write_text("down")  # where the runs' blobs go is not a directory

    async def scenario() -> None:
        await reconcile(w)
        finish(w, "r-1", ok=True, log=LOG)
        await reconcile(w)
        upload = next(iter(w.op.runs.archive.uploads.values()))
        while not upload.failures:
            await asyncio.sleep(0.05)
            upload = next(iter(w.op.runs.archive.uploads.values()))
        await reconcile(w)
        assert w.status("r")["phase"] == "Running" and "the store failed" in condition(w)["message"]
        await uploads_done(w)
        await reconcile(w)
    asyncio.run(scenario())
    s = w.status("r")
    assert s["phase"] == "Succeeded" and "log" not in s["attempts"][0]
    assert condition(w)["status"] == "False" and condition(w)["reason"] == "LogArchiveFailed"
    assert condition(w)["message"].startswith("the log of attempt 1 was not archived: the object store failed for 1 s")
    assert [e[2] for e in w.api.events].count("LogArchiveFailed") == 1


def test_a_log_that_cannot_be_read_holds_nothing(tmp_path):
    w = archiving(tmp_path)

    async def scenario() -> None:
        await reconcile(w)
        finish(w, "r-1", ok=True)  # no log: the kubelet answers 404
        await reconcile(w)
        await uploads_done(w)
        await reconcile(w)
    asyncio.run(scenario())
    assert w.status("r")["phase"] == "Succeeded" and "log" not in w.status("r")["attempts"][0]


def test_a_jobs_ttl_is_raised_to_outlive_the_upload(tmp_path):
    w = archiving(tmp_path)
    asyncio.run(reconcile(w))
    assert w.api.objects[("Job", NS, "r-1")]["spec"]["ttlSecondsAfterFinished"] == 86400  # the default: kept
    short = World(task(ttlSecondsAfterFinished=5), taskrun("r"))
    short.op.runs.archive.configure({}, BlobStore(StorageConfig(url=f"file://{tmp_path}/store2")))
    asyncio.run(reconcile(short))
    assert short.api.objects[("Job", NS, "r-1")]["spec"]["ttlSecondsAfterFinished"] == 360
