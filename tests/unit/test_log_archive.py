"""The run reconciler with the log archive (controller.log_archive) against a fake API server and a
real filesystem store: the outcome waits for the upload, a store down holds it and says why, and a
store down past the deadline fails the upload for good with a reason, never the run."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from kubetasks import kube
from kubetasks.api.storage import BlobRef, log_path
from kubetasks.blobs import BlobStore, StorageConfig
from kubetasks.controller import log_archive
from kubetasks.controller.cache import slim_pod
from tests.unit.test_logs import World, calls, finish
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
    # Read at its end, not followed: what the kubelet may have rotated away is said to be missing.
    assert "the log of attempt 1 was read from after its container started" in condition(w)["message"]


def bound(state: str) -> dict:
    """Attempt 1's pod as the informer has it: bound to a node, its container in ``state``."""
    return slim_pod({"metadata": {"name": "r-1-pod", "namespace": NS, "uid": "pod-uid", "resourceVersion": "1",
                                  "labels": {"job-name": "r-1"}},
                     "spec": {"nodeName": "node-a", "containers": [{"name": "task"}]},
                     "status": {"phase": "Pending" if state == "waiting" else "Running",
                                "containerStatuses": [{"name": "task", "state": {state: {}}}]}})


WAITING = kube.ApiException(status=400, reason="Bad Request")
WAITING.body = '{"message": "container \\"task\\" in pod \\"r-1-pod\\" is waiting to start: ContainerCreating"}'


def test_a_bound_pods_log_is_followed_from_before_its_container_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(log_archive, "ATTACH_FIRST", 0.01)
    w = archiving(tmp_path)
    w.api.logs["r-1-pod"] = [WAITING, WAITING, LOG]  # the kubelet: waiting, waiting, then the whole log

    async def scenario() -> None:
        await reconcile(w)
        w.op.cache.job_pods.event("ADDED", bound("waiting"))  # bound, its container not started
        await uploads_done(w)
        finish(w, "r-1", ok=True, log=LOG)
        await reconcile(w)
    asyncio.run(scenario())
    s = w.status("r")
    assert s["phase"] == "Succeeded" and condition(w)["status"] == "True", s
    assert condition(w)["message"] == "every attempt's log that could be read is in the object store"
    assert w.op.runs.archive.store.get(BlobRef.model_validate(s["attempts"][0]["log"])) == LOG  # type: ignore[union-attr]
    # Asked three times while bound, following; never read again at the end; no node taken for logless.
    assert [c for c in calls(w, "stream_log")] == [("r-1-pod", True)] * 3
    assert not w.op.runs.archive.logless.quiet("node-a", 0)


def test_a_follow_begun_after_its_container_ran_says_it_may_lack_the_start(tmp_path):
    w = archiving(tmp_path)
    w.api.logs["r-1-pod"] = LOG  # taken at once: the container already ran (an operator restarted, say)

    async def scenario() -> None:
        await reconcile(w)
        w.op.cache.job_pods.event("ADDED", bound("running"))
        await uploads_done(w)
        finish(w, "r-1", ok=True, log=LOG)
        await reconcile(w)
    asyncio.run(scenario())
    assert w.status("r")["phase"] == "Succeeded" and condition(w)["status"] == "True"
    assert "the log of attempt 1 was read from after its container started" in condition(w)["message"]
    assert calls(w, "stream_log") == [("r-1-pod", True)]


def test_a_pod_that_ends_before_its_container_is_followed_is_read_at_its_end(tmp_path, monkeypatch):
    monkeypatch.setattr(log_archive, "ATTACH_FIRST", 0.01)
    w = archiving(tmp_path)
    w.api.logs["r-1-pod"] = [WAITING, LOG]

    async def scenario() -> None:
        await reconcile(w)
        w.op.cache.job_pods.event("ADDED", bound("waiting"))
        w.op.cache.job_pods.event("MODIFIED", {**bound("terminated"), "metadata": {
            **bound("terminated")["metadata"], "resourceVersion": "2"}})  # ended before it was asked again
        await uploads_done(w)
        finish(w, "r-1", ok=True, log=LOG)
        await reconcile(w)
        await uploads_done(w)
        await reconcile(w)
    asyncio.run(scenario())
    assert w.status("r")["phase"] == "Succeeded" and w.status("r")["attempts"][0]["log"]["size"] == len(LOG)
    assert calls(w, "stream_log") == [("r-1-pod", True), ("r-1-pod", False)]


def test_a_store_down_holds_the_outcome_and_one_down_past_the_deadline_gives_up_with_a_reason(tmp_path):
    w = archiving(tmp_path, deadline=1.0)
    w.api.update("Task", NS, "t", spec={**w.api.objects[("Task", NS, "t")]["spec"], "ttlSecondsAfterFinished": 5})
    w.api.deliver(w.op.cache)
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
    assert re.match(r"the log of attempt 1 was not archived: the object store failed for \d+ s, past the limit of "
                    r"1 s \(\d tr(y|ies)\): GenericError", condition(w)["message"]), condition(w)["message"]
    assert [e[2] for e in w.api.events].count("LogArchiveFailed") == 1
    # At the first refusal its Job (its pod, its log) was kept until the upload's last try: 1 + 60 s.
    assert w.api.objects[("Job", NS, "r-1")]["spec"]["ttlSecondsAfterFinished"] == 61


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


def test_a_jobs_ttl_is_raised_to_outlive_the_logs_read(tmp_path):
    w = archiving(tmp_path)
    asyncio.run(reconcile(w))
    assert w.api.objects[("Job", NS, "r-1")]["spec"]["ttlSecondsAfterFinished"] == 86400  # the default: kept
    short = World(task(ttlSecondsAfterFinished=5), taskrun("r"))
    short.op.runs.archive.configure({}, BlobStore(StorageConfig(url=f"file://{tmp_path}/store2")))
    asyncio.run(reconcile(short))
    assert short.api.objects[("Job", NS, "r-1")]["spec"]["ttlSecondsAfterFinished"] == 30


def test_the_operator_serves_an_archived_log_to_those_who_may_get_the_run_only(tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from kubetasks.controller.metrics_server import MetricsServer
    from kubetasks.core.log_archive import SHA256_HEADER
    from tests.unit.test_why import Reviews, bearer

    store = BlobStore(StorageConfig(url=f"file://{tmp_path}/store"))
    ref = store.put("runs/team-a/u1/attempt-1/log", iter([LOG[:300], LOG[300:]]))  # streamed: two parts
    opened: list[tuple[str, str, int]] = []

    def open_log(namespace: str, name: str, attempt: int):
        opened.append((namespace, name, attempt))
        if (namespace, name, attempt) == ("team-a", "q-7", 1):
            return ref, store.stream(ref)
        if (namespace, name, attempt) == ("team-a", "gone", 1):
            return ref, store.stream(BlobRef(uri=store.uri("runs/team-a/u2/attempt-1/log"), size=1, sha256="0" * 64))
        raise LookupError(f"no archived log of attempt {attempt} of {namespace}/{name}")

    async def main() -> None:
        reviews = Reviews()
        server = MetricsServer(True, reviews.review_token, reviews.review_access, review_run=reviews.review_run,
                               open_log=open_log)
        async with TestClient(TestServer(server.app())) as client:
            bob = await client.get("/logs/team-a/q-7/1", headers=bearer("bob-token"))
            assert bob.status == 403 and opened == []  # refused before anything is read
            assert (await client.get("/logs/team-a/q-7/1")).status == 401
            alice = await client.get("/logs/team-a/q-7/1", headers=bearer("alice-token"))
            assert alice.status == 200 and await alice.read() == LOG
            assert alice.headers[SHA256_HEADER] == ref.sha256 and alice.headers["Content-Length"] == str(len(LOG))
            none = await client.get("/logs/team-a/q-7/2", headers=bearer("alice-token"))
            assert none.status == 404 and "attempt 2" in (await none.json())["message"]
            gone = await client.get("/logs/team-a/gone/1", headers=bearer("alice-token"))
            assert gone.status == 404 and "missing from the store" in (await gone.json())["message"]
    asyncio.run(main())
