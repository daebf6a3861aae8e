"""Results past the termination message: the refs the operator believes, the grants it renders, how
the runtime keeps a result, and the reconciler reading and verifying one before a run succeeds."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubetasks import protocol
from kubetasks.api.storage import BlobRef, result_path
from kubetasks.api.task import Task
from kubetasks.api.taskrun import TaskRun
from kubetasks.blobs import BlobMissing, BlobStore, StorageConfig
from kubetasks.controller.results import open_result
from kubetasks.core.log_archive import SHA256_HEADER
from kubetasks.core.grants import LONGEST, MARGIN, grant_lifetime, grant_margin, render_child_result_grant, render_grant, result_grant_data
from kubetasks.core.naming import checkpoint_name
from kubetasks.core.observe import AttemptObservation
from kubetasks.core.render import render_job
from kubetasks.core.result_refs import REFUSED, UNREADABLE, check_bytes, judge_ref
from kubetasks.protocol import INVALID_REPORT, RUNTIME_COMMAND, Report
from kubetasks.runtime.errors import ResultTooLarge
from kubetasks.runtime.results import Grant, keep_result, read_grant
from tests.unit.test_reconcile_runs import NS, World, task, taskrun

UID = "0123456789abcdef"
STORE = "s3://bucket/kt"
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=timezone.utc)


def ref(uri: str, data: bytes = b'"x"') -> dict[str, Any]:
    return BlobRef.of(uri, data).to_api()


# -- which refs the operator believes ----------------------------------------------------------------

def test_a_ref_is_believed_only_when_it_names_this_attempts_own_key_or_blob():
    own_cm = f"configmap:{checkpoint_name('r', UID)}/result.attempt-2"
    judged = judge_ref(ref(own_cm), NS, "r", UID, 2, None)
    assert judged.place is not None and (judged.place.configmap, judged.place.key) == ("r-01234567-steps",
                                                                                     "result.attempt-2")
    own_blob = f"{STORE}/{result_path(NS, UID, 2)}"
    assert judge_ref(ref(own_blob), NS, "r", UID, 2, STORE).place.path == f"runs/ns/{UID}/attempt-2/result"
    refused = [
        f"configmap:{checkpoint_name('other', 'ffffffff')}/result.attempt-2",  # another run's key
        f"configmap:{checkpoint_name('r', UID)}/result.attempt-1",  # another attempt's
        f"configmap:{checkpoint_name('r', UID)}/step.fetch",  # a step's record
        own_blob,  # without a store: never followed
    ]
    for uri in refused:
        judged = judge_ref(ref(uri), NS, "r", UID, 2, None)
        assert judged.place is None and "not attempt 2's own place" in judged.refusal, uri
    for uri in (f"{STORE}/runs/ns/other-uid/attempt-2/result", f"s3://other/kt/{result_path(NS, UID, 2)}",
                f"{STORE}/runs/ns/{UID}/attempt-2/../../other/attempt-2/result", "file:///etc/passwd"):
        assert judge_ref(ref(uri), NS, "r", UID, 2, STORE).place is None, uri


def test_a_ref_that_is_not_one_or_too_large_for_a_configmap_is_refused_with_why():
    assert "not a ref" in judge_ref({"uri": "x"}, NS, "r", UID, 1, None).refusal
    assert "not a ref" in judge_ref({"uri": "x", "size": 1, "sha256": "nothex"}, NS, "r", UID, 1, None).refusal
    big = {"uri": f"configmap:{checkpoint_name('r', UID)}/result.attempt-1", "size": 300_000, "sha256": "0" * 64}
    assert "at most 262144" in judge_ref(big, NS, "r", UID, 1, None).refusal


@given(st.binary(max_size=2000), st.binary(max_size=2000))
def test_bytes_pass_only_when_size_and_digest_are_the_refs(written, read):
    r = BlobRef.of("configmap:c/k", written)
    assert (check_bytes(r, read) is None) == (read == written)
    assert "missing" in check_bytes(r, None)


def test_a_report_carries_a_ref_instead_of_a_result_and_a_bad_one_reads_as_a_failure():
    r = ref("configmap:c/result.attempt-1")
    text = Report(outcome="succeeded", result_ref=r).encode()
    assert json.loads(text) == {"kubetasks": 1, "outcome": "succeeded", "resultRef": r}
    assert Report.decode(text).result_ref == r
    bad = Report.decode(json.dumps({"kubetasks": 1, "outcome": "succeeded", "resultRef": "configmap:c/k"}))
    assert (bad.outcome, bad.error_type) == ("failed", INVALID_REPORT)


# -- grants ------------------------------------------------------------------------------------------

def objects(spec: dict[str, Any]) -> tuple[Task, TaskRun]:
    t = Task.model_validate({"metadata": {"name": "t", "namespace": NS}, "spec": {"image": "i", **spec}})
    r = TaskRun.model_validate({"metadata": {"name": "r", "namespace": NS, "uid": UID}, "spec": {"taskRef": "t"}})
    return t, r


def test_grants_expire_after_max_duration_plus_a_margin_and_never_past_what_s3_allows():
    assert grant_lifetime("10m") == timedelta(minutes=10) + MARGIN
    assert grant_lifetime(None) == LONGEST and grant_lifetime("720h") == LONGEST
    assert grant_lifetime("10s", grant_margin("5")) == timedelta(seconds=15)
    assert grant_margin(None) == grant_margin("") == MARGIN and grant_margin("0") == timedelta(seconds=1)


def test_an_attempts_upload_grant_is_a_generated_secret_owned_by_the_run_and_mounted_read_only():
    t, r = objects({"entrypoint": "app:run", "maxDuration": "5m"})
    secret = render_grant(r, "t", 3, result_grant_data("https://put", f"{STORE}/x", 65536, T0))
    meta = secret["metadata"]
    assert secret["kind"] == "Secret" and "name" not in meta and meta["generateName"] == "r-3-grant-"
    assert meta["ownerReferences"][0]["uid"] == UID
    assert secret["stringData"] == {"result-put-url": "https://put", "result-uri": f"{STORE}/x", "threshold": "65536",
                                    "expires": "2026-05-01T08:00:00.000Z"}
    pod = render_job(r, t, 3, grant="r-3-grant-abcde")["spec"]["template"]["spec"]
    assert {"name": "kubetasks-grant", "secret": {"secretName": "r-3-grant-abcde", "defaultMode": 0o440}} in pod["volumes"]
    assert {"name": "kubetasks-grant", "mountPath": protocol.GRANT_DIR, "readOnly": True} in \
        pod["containers"][0]["volumeMounts"]
    assert "kubetasks-grant" not in json.dumps(render_job(r, t, 3))  # no store: no grant


def test_a_childs_download_grant_is_an_immutable_configmap_its_parent_role_names():
    _, child = objects({})
    r = BlobRef.of(f"{STORE}/{result_path(NS, UID, 1)}", b"{}")
    cm = render_child_result_grant(child, "https://get", r, T0)
    assert cm["metadata"]["name"] == "r-01234567-result" and cm["immutable"] is True
    assert cm["data"]["url"] == "https://get" and cm["data"]["sha256"] == r.sha256


# -- the runtime keeps a result ----------------------------------------------------------------------

def keep(text: str, grant: Grant | None = None, used: int = 0, now: datetime = T0) -> tuple[dict, dict, list]:
    saved: dict[str, str] = {}
    puts: list[tuple[str, bytes]] = []
    out = keep_result(text, 2, "r-01234567-steps", saved.__setitem__, lambda: used, grant,
                      lambda url, data: puts.append((url, data)), now)
    return out, saved, puts


def test_without_a_store_a_result_up_to_256_kib_goes_to_the_configmap_and_beyond_asks_for_a_store():
    text = json.dumps("y" * 200_000)
    out, saved, _ = keep(text)
    assert saved == {"result.attempt-2": text}
    assert out == {"uri": "configmap:r-01234567-steps/result.attempt-2", "size": len(text),
                   "sha256": hashlib.sha256(text.encode()).hexdigest()}
    with pytest.raises(ResultTooLarge, match=r"at most 262144 bytes: configure a store \(chart values storage\.\*\)"):
        keep(json.dumps("y" * 300_000))
    with pytest.raises(ResultTooLarge, match="holds 900000 bytes of checkpoints"):
        keep(text, used=900_000)


def test_with_a_grant_a_result_above_its_threshold_is_put_to_the_store_and_below_it_stays_in_the_configmap():
    grant = Grant("https://put?sig", f"{STORE}/{result_path(NS, UID, 2)}", 65536, T0 + timedelta(minutes=5))
    big = json.dumps("z" * 5_000_000)
    out, saved, puts = keep(big, grant)
    assert saved == {} and puts == [("https://put?sig", big.encode())]
    assert out["uri"] == grant.uri and out["size"] == len(big)
    out, saved, puts = keep(json.dumps("z" * 10_000), grant)
    assert puts == [] and out["uri"].startswith("configmap:")
    with pytest.raises(ResultTooLarge, match="upload grant expired"):
        keep(big, grant, now=T0 + timedelta(minutes=6))


def test_the_grant_is_read_from_its_mounted_files(tmp_path: Path):
    assert read_grant(str(tmp_path)) is None
    for key, value in {"result-put-url": "https://put", "result-uri": "s3://b/x", "threshold": "100",
                       "expires": "2026-05-01T08:00:00.000Z"}.items():
        (tmp_path / key).write_text(value)
    assert read_grant(str(tmp_path)) == Grant("https://put", "s3://b/x", 100, T0)


# -- the reconciler reads and verifies ----------------------------------------------------------------

def sdk_world(**spec: Any) -> tuple[World, str]:
    w = World(task(entrypoint="app:run", command=None, retry={"maxAttempts": 1}, **spec), taskrun("r"))
    w.reconcile("r")
    uid = w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    return w, uid


def end_with(w: World, message: str) -> None:
    w.api.pods["r-1"] = [{"metadata": {"name": "r-1-pod", "creationTimestamp": "2026-01-01T00:00:00Z"},
                          "spec": {"containers": [{"name": "task", "command": RUNTIME_COMMAND}]},
                          "status": {"containerStatuses": [{"name": "task", "state": {"terminated": {
                              "exitCode": 0, "reason": "Completed", "message": message}}}]}}]
    w.api.finish_job(NS, "r-1", ok=True)
    w.api.deliver(w.op.cache)
    w.reconcile("r")


def put_configmap(w: World, name: str, data: dict[str, str]) -> None:
    key = ("ConfigMap", NS, name)
    if key in w.api.objects:
        w.api.objects[key]["data"] = data
    else:
        w.api.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}, "data": data})


def test_a_ref_to_the_runs_own_configmap_key_with_its_bytes_succeeds_with_result_ref():
    w, uid = sdk_world()
    text = json.dumps({"big": "v" * 10_000})
    put_configmap(w, checkpoint_name("r", uid), {"result.attempt-1": text})
    r = BlobRef.of(f"configmap:{checkpoint_name('r', uid)}/result.attempt-1", text.encode()).to_api()
    end_with(w, Report(outcome="succeeded", result_ref=r).encode())
    status = w.status("r")
    assert status["phase"] == "Succeeded" and status["resultRef"] == r and status.get("result") is None


def test_a_forged_ref_to_another_runs_key_is_refused_and_never_read():
    w, _ = sdk_world()
    put_configmap(w, "victim-aaaaaaaa-steps", {"result.attempt-1": '"secret"'})
    forged = BlobRef.of("configmap:victim-aaaaaaaa-steps/result.attempt-1", b'"secret"').to_api()
    w.api.calls.clear()
    end_with(w, Report(outcome="succeeded", result_ref=forged).encode())
    status = w.status("r")
    assert status["phase"] == "Failed" and status["error"]["type"] == REFUSED
    assert "victim-aaaaaaaa-steps" in status["error"]["message"] and "refused, not read" in status["error"]["message"]
    assert ("get_configmap", ("victim-aaaaaaaa-steps",)) not in w.api.calls
    assert "resultRef" not in status and status.get("result") is None


def test_a_ref_whose_bytes_changed_or_went_fails_with_a_clear_reason_never_a_wrong_value():
    for data in ({"result.attempt-1": '"tampered"'}, {}):
        w, uid = sdk_world()
        put_configmap(w, checkpoint_name("r", uid), data)
        r = BlobRef.of(f"configmap:{checkpoint_name('r', uid)}/result.attempt-1", b'"the real one"').to_api()
        end_with(w, Report(outcome="succeeded", result_ref=r).encode())
        status = w.status("r")
        assert status["phase"] == "Failed" and status["error"]["type"] == UNREADABLE
        assert ("not the blob that was written" if data else "is missing") in status["error"]["message"]


def test_a_store_held_result_is_verified_in_the_store_and_served_to_an_allowed_caller(tmp_path: Path):
    store = BlobStore(StorageConfig(url=f"file://{tmp_path}/blobs"))
    w, uid = sdk_world()
    w.op.runs.results.store = store
    data = json.dumps("s" * 100_000).encode()
    r = store.put(result_path(NS, uid, 1), data)
    end_with(w, Report(outcome="succeeded", result_ref=r.to_api()).encode())
    assert w.status("r")["phase"] == "Succeeded" and w.status("r")["resultRef"] == r.to_api()
    body = w.api.objects[("TaskRun", NS, "r")]
    ref, chunks = open_result(store, lambda ns, n: body, NS, "r")
    assert ref == r and b"".join(chunks) == data
    Path(f"{tmp_path}/blobs/{result_path(NS, uid, 1)}").unlink()  # deleted behind the operator's back
    with pytest.raises(BlobMissing, match="is missing from the store"):
        b"".join(open_result(store, lambda ns, n: body, NS, "r")[1])
    with pytest.raises(LookupError, match="no store"):
        open_result(None, lambda ns, n: body, NS, "r")
    with pytest.raises(LookupError, match="no TaskRun"):
        open_result(store, lambda ns, n: None, NS, "r")


def test_a_store_ref_of_another_run_is_refused_even_when_the_blob_exists(tmp_path: Path):
    store = BlobStore(StorageConfig(url=f"file://{tmp_path}/blobs"))
    w, _ = sdk_world()
    w.op.runs.results.store = store
    other = store.put(result_path(NS, "other-uid", 1), b'"theirs"')
    end_with(w, Report(outcome="succeeded", result_ref=other.to_api()).encode())
    assert w.status("r")["error"]["type"] == REFUSED


def test_verified_refs_are_remembered_so_a_repeated_reconcile_reads_nothing_again():
    w, uid = sdk_world()
    text = json.dumps("q" * 5000)
    put_configmap(w, checkpoint_name("r", uid), {"result.attempt-1": text})
    r = BlobRef.of(f"configmap:{checkpoint_name('r', uid)}/result.attempt-1", text.encode()).to_api()
    run = TaskRun.model_validate(w.api.objects[("TaskRun", NS, "r")])
    seen = {1: AttemptObservation(attempt=1, job_name="r-1", state="succeeded",
                                  report=Report(outcome="succeeded", result_ref=r))}
    w.api.calls.clear()
    first = asyncio.run(w.op.runs.results.resolve(run, uid, seen))
    again = asyncio.run(w.op.runs.results.resolve(run, uid, seen))
    assert first == again and first[1].result_ref == BlobRef.model_validate(r)
    assert [c for c in w.api.calls if c[0] == "get_configmap"] == [("get_configmap", (checkpoint_name("r", uid),))]
    w.op.runs.results.forget(uid)
    asyncio.run(w.op.runs.results.resolve(run, uid, seen))
    assert len([c for c in w.api.calls if c[0] == "get_configmap"]) == 2


def test_a_store_that_cannot_be_reached_is_waited_for_then_the_attempt_fails_saying_so(tmp_path: Path):
    from kubetasks.controller.queue import Requeue
    from kubetasks.controller.results import READ_DEADLINE

    class Down(BlobStore):
        def stream(self, ref: BlobRef):  # type: ignore[override]
            raise ConnectionRefusedError("tcp connect error: Connection refused")

    w, uid = sdk_world()
    w.op.runs.results.store = Down(StorageConfig(url=f"file://{tmp_path}/blobs"))
    r = BlobRef.of(f"file://{tmp_path}/blobs/{result_path(NS, uid, 1)}", b'"v"')
    run = TaskRun.model_validate(w.api.objects[("TaskRun", NS, "r")])
    now = datetime.now(timezone.utc)
    seen = {1: AttemptObservation(attempt=1, job_name="r-1", state="succeeded", completion_time=now,
                                  report=Report(outcome="succeeded", result_ref=r.to_api()))}
    with pytest.raises(Requeue):
        asyncio.run(w.op.runs.results.resolve(run, uid, seen))
    long_ago = {1: AttemptObservation(attempt=1, job_name="r-1", state="succeeded",
                                      completion_time=now - timedelta(seconds=READ_DEADLINE + 1),
                                      report=Report(outcome="succeeded", result_ref=r.to_api()))}
    failed = asyncio.run(w.op.runs.results.resolve(run, uid, long_ago))[1]
    assert failed.state == "failed" and failed.reason == UNREADABLE
    assert "could not be read for 300s: ConnectionRefusedError: tcp connect error" in failed.report.error_message


def signing_store(monkeypatch: pytest.MonkeyPatch) -> BlobStore:
    """An S3 store that signs URLs locally (nothing is sent anywhere)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    return BlobStore(StorageConfig(url="s3://bucket/kt", region="us-east-1"))


def test_each_sdk_attempt_gets_a_fresh_upload_grant_of_its_own_result_path(monkeypatch: pytest.MonkeyPatch):
    w = World(task(entrypoint="app:run", command=None, maxDuration="10m"), taskrun("r"))
    w.op.runs.results.store = signing_store(monkeypatch)
    w.reconcile("r")
    uid = w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    secrets = [o for k, o in w.api.objects.items() if k[0] == "Secret"]
    assert len(secrets) == 1
    data = secrets[0]["stringData"]
    assert data["result-uri"] == f"s3://bucket/kt/runs/ns/{uid}/attempt-1/result"
    assert data["result-put-url"].startswith("https://") and f"/kt/runs/ns/{uid}/attempt-1/result?" in data["result-put-url"]
    assert "X-Amz-Expires=1200" in data["result-put-url"]  # maxDuration 10m plus the 10m margin
    pod = w.api.objects[("Job", NS, "r-1")]["spec"]["template"]["spec"]
    assert {"name": "kubetasks-grant", "secret": {"secretName": secrets[0]["metadata"]["name"], "defaultMode": 0o440}} \
        in pod["volumes"]


def test_a_plain_command_gets_no_grant_and_a_chart_without_the_secrets_rule_starts_without_one(monkeypatch):
    from kubetasks import kube

    w = World(task(), taskrun("plain"))
    w.op.runs.results.store = signing_store(monkeypatch)
    w.reconcile("plain")
    assert not [k for k in w.api.objects if k[0] == "Secret"]

    w = World(task(entrypoint="app:run", command=None), taskrun("r"))
    w.op.runs.results.store = signing_store(monkeypatch)

    def forbidden(obj: dict[str, Any]) -> dict[str, Any]:
        raise kube.ApiException(status=403, reason="Forbidden")
    w.api.create = forbidden  # type: ignore[method-assign]
    w.reconcile("r")
    assert w.status("r")["phase"] == "Running"
    assert "kubetasks-grant" not in json.dumps(w.api.objects[("Job", NS, "r-1")])


def test_results_are_served_only_to_a_caller_who_may_get_the_run():
    from aiohttp.test_utils import TestClient, TestServer

    from kubetasks.controller.metrics_server import MetricsServer
    from tests.unit.test_why import Reviews, bearer

    reviews, read = Reviews(), []

    def open_result(namespace: str, name: str) -> tuple[BlobRef, Iterator[bytes]]:
        read.append((namespace, name))
        if name != "q-7":
            raise BlobMissing("s3://b/x is missing from the store")
        return BlobRef.of("s3://b/x", b'"big"'), iter([b'"big"'])

    async def main() -> None:
        server = MetricsServer(True, reviews.review_token, reviews.review_access, review_run=reviews.review_run,
                               open_result=open_result)
        async with TestClient(TestServer(server.app())) as client:
            assert (await client.get("/results/team-a/q-7")).status == 401
            assert (await client.get("/results/team-a/q-7", headers=bearer("bob-token"))).status == 403
            assert (await client.get("/results/team-b/q-7", headers=bearer("alice-token"))).status == 403
            assert read == []  # nobody refused reached the store
            ok = await client.get("/results/team-a/q-7", headers=bearer("alice-token"))
            assert ok.status == 200 and await ok.read() == b'"big"'
            assert ok.headers["Content-Length"] == "5" and ok.headers[SHA256_HEADER] == BlobRef.of("", b'"big"').sha256
            gone = await client.get("/results/team-a/q-8", headers=bearer("alice-token"))
            assert gone.status == 404 and "missing from the store" in await gone.text()
    asyncio.run(main())
