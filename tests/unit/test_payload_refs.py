"""Payloads kept in the object store (spec.payloadRef): which refs the operator follows, the upload
endpoint, the reconciler's check and grant, the sweep, and the runtime's download and upload."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubetasks import protocol
from kubetasks.api.storage import BlobRef, payload_blob_path
from kubetasks.api.task import Task
from kubetasks.api.taskrun import TaskRun
from kubetasks.blobs import BlobStore, StorageConfig
from kubetasks.controller.payloads import Payloads
from kubetasks.core.payload_refs import (INVALID_PAYLOAD_REF, PAYLOAD_UNAVAILABLE, missing_refusal, payload_refusal,
                                         payloads_to_delete, ref_path, upload_access)
from kubetasks.runtime import payloads as runtime_payloads
from kubetasks.runtime.payloads import (INLINE_LIMIT, PayloadGrant, PayloadTooLarge, PayloadUnavailable, fetch_payload,
                                        place_payload, read_payload_grant)
from tests.unit.test_reconcile_runs import NS, World, task, taskrun
from tests.unit.test_result_refs import signing_store

STORE = "s3://bucket/kt"
DATA = json.dumps({"blob": "x" * 1000}).encode()
SHA = hashlib.sha256(DATA).hexdigest()
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=timezone.utc)


def own_ref(namespace: str = NS, data: bytes = DATA) -> BlobRef:
    return BlobRef.of(f"{STORE}/{payload_blob_path(namespace, hashlib.sha256(data).hexdigest())}", data)


def run_with(ref: BlobRef | None, **spec: Any) -> TaskRun:
    body = taskrun("r", payloadRef=ref.to_api() if ref else None, **spec)
    body["metadata"]["uid"] = "u-1"
    return TaskRun.model_validate(body)


# -- which refs the operator follows ---------------------------------------------------------------

def test_a_ref_is_followed_only_into_its_own_namespaces_payloads_by_its_own_digest():
    assert ref_path(own_ref(), NS, STORE) == (payload_blob_path(NS, SHA), None)
    for uri in (f"{STORE}/payloads/other/{SHA}",  # another namespace's payload
                f"{STORE}/runs/{NS}/u-2/attempt-1/result",  # another run's blob
                f"s3://elsewhere/kt/payloads/{NS}/{SHA}",  # another store
                f"{STORE}/payloads/{NS}/{'0' * 64}",  # another digest than the ref's
                f"{STORE}/payloads/{NS}/../other/{SHA}"):
        path, why = ref_path(BlobRef(uri=uri, size=len(DATA), sha256=SHA), NS, STORE)
        assert path is None and why and "refused, not read" in why and uri in why
    path, why = ref_path(own_ref(), NS, None)
    assert path is None and why and "no object store" in why and "storage.*" in why


@given(st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
       st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True))
def test_no_namespace_reads_another_ones_payload(mine: str, theirs: str) -> None:
    path, _ = ref_path(own_ref(theirs), mine, STORE)
    assert (path is not None) == (mine == theirs)


def test_a_command_task_or_both_payloads_are_refused_and_a_missing_or_changed_blob_is_unavailable():
    assert payload_refusal(run_with(None), STORE, uses_runtime=False) is None
    assert payload_refusal(run_with(own_ref()), STORE, uses_runtime=True) is None
    refused = payload_refusal(run_with(own_ref()), STORE, uses_runtime=False)
    assert refused and refused.reason == INVALID_PAYLOAD_REF and "`entrypoint` tasks only" in refused.message
    both = payload_refusal(run_with(own_ref(), payload={"a": 1}), STORE, uses_runtime=True)
    assert both and "not both" in both.message
    assert missing_refusal(own_ref(), len(DATA)) is None
    gone = missing_refusal(own_ref(), None)
    assert gone and gone.reason == PAYLOAD_UNAVAILABLE and "missing from the store" in gone.message
    changed = missing_refusal(own_ref(), 3)
    assert changed and "not the payload that was uploaded" in changed.message


def test_only_who_may_create_taskruns_may_upload():
    assert upload_access({"username": "alice"}, {"allowed": True}, NS).allowed
    refused = upload_access({"username": "bob"}, {"allowed": False}, NS)
    assert refused.status == 403 and "bob may not create taskruns" in refused.reason


def test_the_sweep_collects_payloads_no_run_names_once_past_the_grace():
    old, young = T0 - timedelta(hours=1), T0 - timedelta(seconds=5)
    listing = [(f"payloads/{NS}/{'a' * 64}", 1, old), (f"payloads/{NS}/{'b' * 64}", 1, old),
               (f"payloads/{NS}/{'c' * 64}", 1, young), (f"payloads/elsewhere/{'d' * 64}", 1, old),
               ("payloads/odd", 1, old), (f"payloads/{NS}/x/y", 1, old)]
    named = {f"payloads/{NS}/{'a' * 64}"}
    assert payloads_to_delete(listing, named, T0, timedelta(minutes=10), [NS]) == [f"payloads/{NS}/{'b' * 64}"]
    assert len(payloads_to_delete(listing, named, T0, timedelta(minutes=10))) == 2


def test_the_sweeper_deletes_an_unnamed_payload_and_keeps_a_named_one(tmp_path: Path):
    from kubetasks.controller.blob_gc import BlobSweeper
    from kubetasks.controller.cache import Cache

    store = BlobStore(StorageConfig(url=f"file://{tmp_path}/blobs"))
    named = Payloads(store).upload(NS, DATA)
    other = Payloads(store).upload(NS, b'{"other": true}')
    sweeper = BlobSweeper(store, Cache(), grace=0)
    sweeper.sweep_payloads({named.uri}, datetime.now(timezone.utc) + timedelta(seconds=1))
    assert store.get(named) == DATA
    assert not Path(f"{tmp_path}/blobs/{store.path_of(other)}").exists()


# -- the reconciler: the check before the first attempt, the grant ----------------------------------

def sdk_world(monkeypatch: pytest.MonkeyPatch, ref: BlobRef, found: int | None, **task_spec: Any) -> World:
    spec = {"entrypoint": "app:run", "command": None, **task_spec}
    w = World(task(**spec), taskrun("r", payloadRef=ref.to_api()))
    store = signing_store(monkeypatch)
    path = store.path_of(ref) if ref.uri.startswith(STORE) else ""
    store.size_of = lambda p: found if p == path else None  # type: ignore[method-assign]
    w.op.runs.results.store = store
    w.op.runs.payloads.store = store
    return w


def test_a_run_gets_a_presigned_get_of_its_payload_in_its_grant_and_no_payload_file(monkeypatch):
    ref = own_ref()
    w = sdk_world(monkeypatch, ref, len(DATA), maxDuration="10m")
    w.reconcile("r")
    assert w.status("r")["phase"] == "Running"
    secrets = [o for k, o in w.api.objects.items() if k[0] == "Secret"]
    data = secrets[0]["stringData"]
    assert f"/kt/payloads/{NS}/{SHA}?" in data[protocol.GRANT_PAYLOAD_URL] and "X-Amz-Expires=1200" in data[
        protocol.GRANT_PAYLOAD_URL]
    assert (data[protocol.GRANT_PAYLOAD_SHA256], data[protocol.GRANT_PAYLOAD_SIZE]) == (SHA, str(len(DATA)))
    configmaps = [o for k, o in w.api.objects.items() if k[0] == "ConfigMap" and k[2].endswith("-payload")]
    assert configmaps and all(protocol.PAYLOAD_KEY not in (c.get("data") or {}) for c in configmaps)


@pytest.mark.parametrize("uri, found, reason, says", [
    (f"{STORE}/payloads/other/{SHA}", len(DATA), INVALID_PAYLOAD_REF, "refused, not read"),
    (f"{STORE}/runs/{NS}/u-2/attempt-1/result", len(DATA), INVALID_PAYLOAD_REF, "refused, not read"),
    (f"{STORE}/payloads/{NS}/{SHA}", None, PAYLOAD_UNAVAILABLE, "missing from the store"),
])
def test_a_ref_not_its_own_or_gone_fails_the_run_before_any_job_with_an_event(monkeypatch, uri, found, reason, says):
    w = sdk_world(monkeypatch, BlobRef(uri=uri, size=len(DATA), sha256=SHA), found)
    w.reconcile("r")
    status = w.status("r")
    assert status["phase"] == "Failed" and status["error"]["type"] == reason and says in status["error"]["message"]
    assert not [k for k in w.api.objects if k[0] in ("Job", "Secret")]
    assert any(e[2] == reason for e in w.api.events), w.api.events


def test_a_command_task_with_a_payload_ref_fails_saying_entrypoint_tasks_only(monkeypatch):
    w = World(task(), taskrun("r", payloadRef=own_ref().to_api()))
    w.op.runs.payloads.store = signing_store(monkeypatch)
    w.reconcile("r")
    assert w.status("r")["error"]["type"] == INVALID_PAYLOAD_REF
    assert "`entrypoint` tasks only" in w.status("r")["error"]["message"]


# -- the endpoint ------------------------------------------------------------------------------------

class Reviews:
    """The API server: alice may create TaskRuns in ns, bob may not."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []

    def review_token(self, token: str) -> dict[str, Any]:
        user = {"alice-token": {"username": "alice"}, "bob-token": {"username": "bob"}}.get(token)
        return {"authenticated": True, "user": user} if user else {"authenticated": False, "error": "invalid"}

    def review_access(self, user: dict[str, Any], verb: str, path: str) -> dict[str, Any]:
        raise AssertionError("uploads never ask about /metrics")

    def review_run(self, user: dict[str, Any], verb: str, namespace: str, name: str) -> dict[str, Any]:
        self.asked.append((verb, namespace, name))
        return {"allowed": user["username"] == "alice" and namespace == NS and verb == "create"}


def test_the_endpoint_stores_a_payload_only_for_who_may_create_taskruns_and_within_its_limit(tmp_path: Path):
    from aiohttp.test_utils import TestClient, TestServer

    from kubetasks.controller.metrics_server import MetricsServer

    store = BlobStore(StorageConfig(url=f"file://{tmp_path}/blobs"))
    reviews, payloads = Reviews(), Payloads(store, max_upload=10_000)
    payloads.namespaces = (NS,)

    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def main() -> None:
        server = MetricsServer(True, reviews.review_token, reviews.review_access, review_run=reviews.review_run,
                               payloads=payloads)
        async with TestClient(TestServer(server.app())) as client:
            assert (await client.put(f"/payloads/{NS}", data=DATA)).status == 401
            refused = await client.put(f"/payloads/{NS}", data=DATA, headers=auth("bob-token"))
            assert refused.status == 403 and "may not create taskruns" in await refused.text()
            assert (await client.put("/payloads/other", data=DATA, headers=auth("alice-token"))).status == 403
            assert not list(store.listing())  # nothing refused was written
            ok = await client.put(f"/payloads/{NS}", data=DATA, headers=auth("alice-token"))
            assert ok.status == 201
            ref = BlobRef.model_validate(await ok.json())
            assert ref.uri == store.uri(payload_blob_path(NS, SHA)) and store.get(ref) == DATA
            big = await client.put(f"/payloads/{NS}", data=b"[" + b"1," * 6000 + b"1]", headers=auth("alice-token"))
            assert big.status == 413 and "storage.maxPayloadBytes" in (await big.json())["message"]
            bad = await client.put(f"/payloads/{NS}", data=b"{nope", headers=auth("alice-token"))
            assert bad.status == 400 and "not JSON" in (await bad.json())["message"]
            payloads.store = None
            none = await client.put(f"/payloads/{NS}", data=DATA, headers=auth("alice-token"))
            assert none.status == 501 and "storage.*" in (await none.json())["message"]
        assert {verb for verb, _, _ in reviews.asked} == {"create"}
    asyncio.run(main())


# -- the runtime: download in the pod, upload from a user's machine ---------------------------------

@pytest.fixture
def served() -> Iterator[dict[str, Any]]:
    """A local HTTP server standing for the store's presigned GET: path -> bytes (absent: 404)."""
    blobs: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = blobs.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body if body is not None else b"<Error>NoSuchKey</Error>")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"blobs": blobs, "base": f"http://127.0.0.1:{server.server_address[1]}"}
    server.shutdown()


def grant_files(directory: Path, url: str, data: bytes) -> None:
    directory.mkdir(exist_ok=True)
    for key, value in {protocol.GRANT_PAYLOAD_URL: url, protocol.GRANT_PAYLOAD_URI: f"{STORE}/payloads/ns/x",
                       protocol.GRANT_PAYLOAD_SHA256: hashlib.sha256(data).hexdigest(),
                       protocol.GRANT_PAYLOAD_SIZE: str(len(data))}.items():
        (directory / key).write_text(value)


def test_the_runtime_reads_its_payload_through_its_grant_and_checks_it(served, tmp_path: Path):
    from kubetasks.runtime.entry import invocation_from_env, payload_text

    served["blobs"]["/p"] = DATA
    grant_files(tmp_path / "grant", served["base"] + "/p", DATA)
    invocation = invocation_from_env({protocol.ENV_RUN: "r", protocol.ENV_NAMESPACE: NS,
                                      protocol.ENV_ENTRYPOINT: "app:run",
                                      protocol.ENV_PAYLOAD_FILE: str(tmp_path / "no-such-file")})

    def no_reads(ns: str, name: str) -> dict[str, Any]:
        raise AssertionError("the TaskRun is not read")
    assert payload_text(invocation, no_reads, str(tmp_path / "grant")) == DATA.decode()

    served["blobs"]["/p"] = DATA.replace(b"x", b"y")  # changed behind the operator's back
    with pytest.raises(PayloadUnavailable, match="is not the one uploaded"):
        payload_text(invocation, no_reads, str(tmp_path / "grant"))
    del served["blobs"]["/p"]
    with pytest.raises(PayloadUnavailable, match="HTTP 404"):
        fetch_payload(PayloadGrant(served["base"] + "/p", "s3://b/p", SHA, len(DATA)))

    # No grant mounted (the operator could not create it): a clear failure, never a null payload.
    def run_with_ref(ns: str, name: str) -> dict[str, Any]:
        return {"metadata": {"uid": ""}, "spec": {"payloadRef": own_ref().to_api()}}
    with pytest.raises(PayloadUnavailable, match="no grant to read it"):
        payload_text(invocation, run_with_ref, str(tmp_path / "none"))
    assert read_payload_grant(str(tmp_path / "none")) is None


def test_a_missing_payload_fails_the_attempt_for_good_without_calling_the_task(served, tmp_path: Path):
    from kubetasks.runtime.entry import invocation_from_env, run_task

    grant_files(tmp_path / "grant", served["base"] + "/gone", DATA)
    invocation = invocation_from_env({protocol.ENV_RUN: "r", protocol.ENV_NAMESPACE: NS,
                                      protocol.ENV_ENTRYPOINT: "kubetasks_examples.digest:digest"})
    done = run_task(invocation, store=None, grant_dir=str(tmp_path / "grant"))  # type: ignore[arg-type]
    assert done.code == protocol.EXIT_PERMANENT
    assert done.report.error_type == "PayloadUnavailable" and "HTTP 404" in (done.report.error_message or "")


def test_a_large_payload_is_uploaded_from_a_users_machine_and_stays_inline_from_a_pod(monkeypatch):
    uploaded: list[tuple[str, int]] = []
    ref = own_ref()

    def upload(namespace: str, data: bytes, patience: float = 0) -> BlobRef | None:
        uploaded.append((namespace, len(data)))
        return ref
    monkeypatch.setattr(runtime_payloads, "upload_payload", upload)
    small = {"taskRef": "t", "payload": {"a": "x" * 1000}}
    place_payload(small, NS, in_pod=False)
    assert "payload" in small and not uploaded

    large = {"taskRef": "t", "payload": {"a": "x" * 100_000}}
    place_payload(large, NS, in_pod=False)
    assert large == {"taskRef": "t", "payloadRef": ref.to_api()} and uploaded == [(NS, 100_008)]

    in_pod = {"taskRef": "t", "payload": {"a": "x" * 100_000}}
    place_payload(in_pod, NS, in_pod=True)
    assert "payload" in in_pod and len(uploaded) == 1
    with pytest.raises(PayloadTooLarge, match=f"at most {INLINE_LIMIT} bytes"):
        place_payload({"payload": "x" * (INLINE_LIMIT + 1)}, NS, in_pod=True)

    monkeypatch.setattr(runtime_payloads, "upload_payload", lambda ns, data, patience=0: None)  # no store
    fits = {"payload": {"a": "x" * 100_000}}
    place_payload(fits, NS, in_pod=False)
    assert "payload" in fits
    with pytest.raises(PayloadTooLarge, match=r"configure a store \(chart values storage\.\*\)"):
        place_payload({"payload": "x" * (INLINE_LIMIT + 1)}, NS, in_pod=False)


def test_a_grant_lists_the_payload_keys_apart_from_the_result_keys():
    keys = {protocol.GRANT_PAYLOAD_URL, protocol.GRANT_PAYLOAD_URI, protocol.GRANT_PAYLOAD_SHA256,
            protocol.GRANT_PAYLOAD_SIZE}
    assert len(keys) == 4 and not keys & {protocol.GRANT_PUT_URL, protocol.GRANT_URI, protocol.GRANT_THRESHOLD,
                                          protocol.GRANT_EXPIRES}
    assert Task  # the models import cleanly with the new field


def test_runs_of_one_idempotency_key_with_other_stored_payloads_are_told_apart():
    from kubetasks.core.dedup import duplicate_message, render_claim, run_payload_digest

    run = TaskRun.model_validate({**taskrun("r", payloadRef=own_ref().to_api(), idempotencyKey="k"),
                                  "metadata": {"name": "r", "namespace": NS, "uid": "u-1"}})
    assert run_payload_digest(run) == SHA and render_claim(run)["data"]["payloadSha256"] == SHA
    assert "differs" not in duplicate_message(run, "holder", SHA)
    assert "whose payload differs" in duplicate_message(run, "holder", "f" * 64)


def test_describe_and_the_dashboard_show_a_stored_payloads_size_and_digest_never_its_bytes():
    from kubetasks.cli.describe import describe_lines
    from kubetasks.dashboard import views
    from kubetasks.dashboard.views import RunDetails

    ref = {"uri": f"{STORE}/payloads/{NS}/{'ab' * 32}", "size": 10_000_011, "sha256": "ab" * 32}
    run = {"metadata": {"name": "r", "namespace": NS}, "spec": {"taskRef": "t", "payloadRef": ref},
           "status": {"phase": "Running"}}
    assert ("Payload", f"10,000,011 bytes, sha256 {'ab' * 32}, kept in {ref['uri']}") in describe_lines(run, T0)
    html = views.run_page(run, RunDetails(), T0)
    assert 'data-testid="payload-ref"' in html and "10,000,011 bytes" in html and "No payload." not in html
