"""The filesystem store's presigned URLs: the signature (core.blob_signing), the key kept in the
store's directory, BlobStore.sign for file://, and the grant server that serves them
(controller.grant_server), driven by the runtime's own HTTP calls."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kubetasks.api.storage import BlobRef, payload_blob_path, result_path
from kubetasks.blobs import GRANT_KEY_FILE, BlobStore, StorageConfig, grant_key
from kubetasks.controller.grant_server import GrantServer
from kubetasks.core.blob_signing import KEY_BYTES, grant_refusal, path_refusal, signature, signed_url
from kubetasks.runtime.results import http_put
from kubetasks.runtime.step_blobs import http_get
from tests.unit.test_reconcile_runs import NS, World, task, taskrun

KEY = bytes(range(KEY_BYTES))
NOW = 1_800_000_000
OWN = "runs/ns/uid-1/attempt-1/result"
OTHER = "runs/ns/uid-2/attempt-1/result"

segments = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12).filter(
    lambda s: s not in (".", ".."))
paths = st.builds(lambda prefix, parts: prefix + "/".join(parts), st.sampled_from(["runs/", "payloads/"]),
                  st.lists(segments, min_size=2, max_size=4))
methods = st.sampled_from(["GET", "PUT"])
expiries = st.integers(min_value=NOW - 10_000, max_value=NOW + 10_000)


# -- the signature ---------------------------------------------------------------------------------

@given(methods, paths, expiries, methods, paths, expiries)
def test_a_signature_for_one_method_path_and_expiry_never_validates_another(m1, p1, e1, m2, p2, e2):
    assume((m1, p1, e1) != (m2, p2, e2))
    sig = signature(KEY, m1, p1, e1)
    assert grant_refusal(KEY, m2, p2, str(e2), sig, NOW - 20_000) is not None


@given(methods, paths, expiries, st.integers(min_value=0, max_value=10_000))
def test_a_grant_validates_until_its_expiry_and_never_from_then_on(method, path, expires, after):
    assume(path_refusal(method, path) is None)
    sig = signature(KEY, method, path, expires)
    assert grant_refusal(KEY, method, path, str(expires), sig, expires - 1) is None
    assert grant_refusal(KEY, method, path, str(expires), sig, expires + after) == "the grant has expired"


@given(methods, paths, expiries)
def test_another_key_signs_differently(method, path, expires):
    sig = signature(bytes(KEY_BYTES), method, path, expires)
    assert grant_refusal(KEY, method, path, str(expires), sig, NOW - 20_000) is not None


@pytest.mark.parametrize("method, path", [
    ("GET", ".kubetasks-grant-key"), ("GET", "runs/ns/../../.kubetasks-grant-key"), ("GET", "runs/ns/./x"),
    ("GET", "runs/%2e%2e/x/y"), ("GET", "runs/ns//result"), ("GET", "runs/ns/u/"), ("GET", "runs/"),
    ("GET", "runs/ns"), ("GET", "other/ns/x"), ("GET", "/runs/ns/x"), ("GET", "runs/ns/u\nPUT"),
    ("PUT", f"payloads/{NS}/{'a' * 64}"), ("DELETE", OWN), ("HEAD", OWN), ("POST", OWN),
])
def test_no_grant_names_a_path_outside_runs_and_payloads_a_dotted_or_encoded_one_or_another_method(method, path):
    assert path_refusal(method, path) is not None
    with pytest.raises(ValueError):
        signed_url("http://grants", KEY, method, path, NOW)
    sig = signature(KEY, method, path, NOW)  # even signed with the key, the path is refused
    assert grant_refusal(KEY, method, path, str(NOW), sig, NOW - 1) is not None


def test_a_signed_url_carries_its_expiry_and_signature():
    url = signed_url("http://op.kt.svc:8081/", KEY, "PUT", OWN, NOW)
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("op.kt.svc:8081", f"/blobs/{OWN}")
    query = parse_qs(parts.query)
    assert query == {"expires": [str(NOW)], "sig": [signature(KEY, "PUT", OWN, NOW)]}
    for bad in (None, "", "soon", "-1", "1" * 20):
        assert grant_refusal(KEY, "PUT", OWN, bad, query["sig"][0], NOW - 1) is not None
    assert grant_refusal(KEY, "PUT", OWN, str(NOW), None, NOW - 1) is not None
    assert grant_refusal(KEY, "PUT", OWN, str(NOW), "é" * 64, NOW - 1) is not None


# -- the key and BlobStore.sign --------------------------------------------------------------------

def fs_store(tmp_path: Path, grant_url: str | None = "http://grants.kt.svc:8081") -> BlobStore:
    return BlobStore(StorageConfig(url=f"file://{tmp_path}/store", grant_url=grant_url))


def test_the_key_is_made_once_mode_0600_in_the_stores_directory_and_survives_a_restart(tmp_path: Path):
    store = fs_store(tmp_path)
    key_file = tmp_path / "store" / GRANT_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_bytes()) == KEY_BYTES
    url = store.sign("GET", OWN, timedelta(minutes=5))
    restarted = fs_store(tmp_path)  # the operator restarted: the same key, the same grants
    query = parse_qs(urlsplit(url).query)
    assert restarted.grant_refusal("GET", OWN, query["expires"][0], query["sig"][0]) is None
    assert grant_key(str(tmp_path / "store")) == key_file.read_bytes()
    assert sorted(os.listdir(tmp_path / "store")) == [GRANT_KEY_FILE]  # no temporary file left
    assert list(store.listing("runs/")) == [] and list(store.listing("payloads/")) == []


def test_a_damaged_key_stops_the_operator_saying_what_to_do(tmp_path: Path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / GRANT_KEY_FILE).write_bytes(b"short")
    with pytest.raises(RuntimeError, match="remove it to make another"):
        fs_store(tmp_path)


def test_a_filesystem_store_signs_only_with_a_grant_url(tmp_path: Path):
    plain = fs_store(tmp_path / "a", grant_url=None)
    assert not plain.signs and not (tmp_path / "a" / "store" / GRANT_KEY_FILE).exists()
    with pytest.raises(NotImplementedError, match="KUBETASKS_STORAGE_GRANT_URL"):
        plain.sign("PUT", OWN, timedelta(minutes=1))
    assert plain.grant_refusal("GET", OWN, str(NOW), "x") is not None
    signing = fs_store(tmp_path / "b")
    assert signing.signs
    assert signing.sign("PUT", OWN, timedelta(minutes=1)).startswith(f"http://grants.kt.svc:8081/blobs/{OWN}?expires=")
    assert StorageConfig.from_env({"KUBETASKS_STORAGE_URL": "file:///x",
                                   "KUBETASKS_STORAGE_GRANT_URL": " http://g:8081 "}).grant_url == "http://g:8081"


# -- the grant server --------------------------------------------------------------------------------

Client = Any


def served(store: BlobStore, test: Callable[[Client, str], Awaitable[None]], max_bytes: int = 1 << 30) -> None:
    """Runs ``test(client, base URL)`` against the grant server on a real local port."""
    from aiohttp.test_utils import TestClient, TestServer

    async def main() -> None:
        async with TestClient(TestServer(GrantServer(store, max_bytes).app())) as client:
            await test(client, str(client.make_url("")).rstrip("/"))
    asyncio.run(main())


def local(url: str) -> str:
    """A signed URL's path and query, for the test client."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_a_pod_puts_its_own_result_and_reads_it_back_with_the_runtimes_own_calls(tmp_path: Path):
    store = fs_store(tmp_path)
    data = os.urandom(3 * 1024 * 1024 + 17)

    async def test(client: Client, base: str) -> None:
        store.config = StorageConfig(url=store.config.url, grant_url=base)  # where the pod reaches it
        put = store.sign("PUT", OWN, timedelta(minutes=5))
        await asyncio.to_thread(http_put, put, data)
        assert store.get(BlobRef.of(store.uri(OWN), data)) == data
        get = store.sign("GET", OWN, timedelta(minutes=5))
        assert await asyncio.to_thread(http_get, get) == data
        missing = store.sign("GET", OTHER, timedelta(minutes=5))
        assert await asyncio.to_thread(http_get, missing) is None  # 404: a step output gone, said so
        response = await client.get(local(get))
        assert response.headers["Content-Length"] == str(len(data))
        assert hashlib.sha256(await response.read()).hexdigest() == hashlib.sha256(data).hexdigest()
    served(store, test)


def test_everything_but_the_signed_method_on_the_signed_path_before_expiry_is_refused(tmp_path: Path):
    store = fs_store(tmp_path)
    theirs = store.put(OTHER, b'"theirs"')
    payload = store.put(payload_blob_path(NS, "a" * 64), b'{"p": 1}')

    async def test(client: Client, base: str) -> None:
        put = store.sign("PUT", OWN, timedelta(minutes=5))
        path, query = urlsplit(put).path, parse_qs(urlsplit(put).query)
        sig, expires = query["sig"][0], query["expires"][0]
        attempts = [
            ("PUT", f"/blobs/{OTHER}?expires={expires}&sig={sig}"),  # its signature on another run's blob
            ("GET", f"/blobs/{OTHER}?expires={expires}&sig={sig}"),
            ("GET", local(put)),  # GET with a PUT's grant
            ("PUT", f"{path}?expires={int(expires) + 3600}&sig={sig}"),  # a longer expiry
            ("PUT", f"{path}?expires={expires}&sig={'0' * 64}"),
            ("PUT", f"{path}?expires={expires}"), ("PUT", path),  # unsigned
            ("PUT", f"{path}?expires={expires}&sig={sig}&sig={sig}"),
            ("PUT", f"/blobs/runs/ns/uid-1/attempt-1/../../uid-2/attempt-1/result?expires={expires}&sig={sig}"),
            ("PUT", f"/blobs/runs/ns/uid-1/attempt-1/%2e%2e/%2e%2e/uid-2/attempt-1/result?expires={expires}&sig={sig}"),
            ("GET", "/blobs/runs/"), ("GET", "/blobs/"), ("GET", f"/blobs/runs/ns?expires={expires}&sig={sig}"),
            ("GET", f"/blobs/{GRANT_KEY_FILE}?expires={expires}&sig={sig}"),
            ("PUT", local(store.sign("GET", payload_blob_path(NS, "a" * 64), timedelta(minutes=5)))),
            ("PUT", local(store.sign("PUT", OWN, timedelta(seconds=-1)))),  # expired
        ]
        for method, url in attempts:
            response = await client.request(method, url, data=b'"mine"' if method == "PUT" else None)
            assert response.status == 403, (method, url, response.status)
        for method, url in (("DELETE", local(put)), ("HEAD", local(store.sign("GET", OTHER, timedelta(minutes=5)))),
                            ("POST", local(put)), ("GET", "/"), ("GET", "/metrics")):
            response = await client.request(method, url)
            assert response.status in (404, 405), (method, url, response.status)
        assert store.get(theirs) == b'"theirs"' and store.get(payload) == b'{"p": 1}'
        assert store.size_of(OWN) is None
    served(store, test)


def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(tmp_path: Path):
    store = fs_store(tmp_path)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(8):
            yield b"x" * 1000

    async def test(client: Client, base: str) -> None:
        url = local(store.sign("PUT", OWN, timedelta(minutes=5)))
        assert (await client.put(url, data=b"x" * 5001)).status == 413
        assert (await client.put(url, data=chunks())).status == 413
        assert store.size_of(OWN) is None
        assert [p for p, _, _ in store.listing("runs/")] == []
        assert (await client.put(url, data=b"x" * 5000)).status == 200
        assert store.size_of(OWN) == 5000
    served(store, test, max_bytes=5000)


def test_an_upload_cut_short_leaves_no_blob(tmp_path: Path):
    import threading

    store = fs_store(tmp_path)
    outcome: list[BaseException | None] = []
    done = threading.Event()
    put = store.put

    def watched(path: str, data: Any) -> BlobRef:
        try:
            ref = put(path, data)
        except BaseException as e:
            outcome.append(e)
            raise
        else:
            outcome.append(None)
            return ref
        finally:
            done.set()
    store.put = watched  # type: ignore[method-assign]

    async def test(client: Client, base: str) -> None:
        url = local(store.sign("PUT", OWN, timedelta(minutes=5)))
        parts = urlsplit(base)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(f"PUT {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode() + b"x" * 5000)
        await writer.drain()
        writer.close()  # the pod dies mid-upload
        assert await asyncio.to_thread(done.wait, 10)
        assert outcome and outcome[0] is not None  # the store's upload failed: it was aborted
        assert store.size_of(OWN) is None
        assert [p for p, _, _ in store.listing("runs/")] == []
    served(store, test)


def test_two_operators_starting_at_once_agree_on_the_key(tmp_path: Path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: grant_key(str(tmp_path / "store")), range(16)))
    assert len(keys) == 1 and sorted(os.listdir(tmp_path / "store")) == [GRANT_KEY_FILE]


def test_a_grant_outlives_an_operator_restart(tmp_path: Path):
    store = fs_store(tmp_path)
    store.put(OWN, b'"kept"')
    url = store.sign("GET", OWN, timedelta(minutes=5))

    async def test(client: Client, base: str) -> None:
        response = await client.get(local(url))
        assert response.status == 200 and await response.read() == b'"kept"'
    served(fs_store(tmp_path), test)
    other = fs_store(tmp_path / "elsewhere")  # another store's key: its grants are not this one's

    async def refused(client: Client, base: str) -> None:
        assert (await client.get(local(url))).status == 403
    served(other, refused)


# -- the reconciler: a filesystem store with a grant URL gives pods grants as S3 does ------------------

def test_an_sdk_attempt_with_a_signing_filesystem_store_gets_its_upload_grant(tmp_path: Path):
    w = World(task(entrypoint="app:run", command=None, maxDuration="10m"), taskrun("r"))
    store = fs_store(tmp_path)
    w.op.runs.results.store = store
    w.reconcile("r")
    uid = w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    secrets = [o for k, o in w.api.objects.items() if k[0] == "Secret"]
    assert len(secrets) == 1
    data = secrets[0]["stringData"]
    url = data["result-put-url"]
    assert url.startswith(f"http://grants.kt.svc:8081/blobs/{result_path(NS, uid, 1)}?expires=")
    query = parse_qs(urlsplit(url).query)
    assert store.grant_refusal("PUT", result_path(NS, uid, 1), query["expires"][0], query["sig"][0]) is None
    assert store.grant_refusal("PUT", result_path(NS, uid, 2), query["expires"][0], query["sig"][0]) is not None
    assert json.dumps(data).count("/blobs/runs/") >= 2  # the result's PUT and the step slots'


def test_a_payload_ref_is_granted_with_a_signing_filesystem_store_and_refused_without(tmp_path: Path):
    from kubetasks.controller.payloads import Payloads

    for grant_url, refused in (("http://grants.kt.svc:8081", False), (None, True)):
        store = fs_store(tmp_path / str(refused), grant_url=grant_url)
        ref = Payloads(store).upload(NS, b'{"big": true}')
        w = World(task(entrypoint="app:run", command=None), taskrun("r", payloadRef=ref.to_api()))
        w.op.runs.results.store = store
        w.op.runs.payloads.store = store
        w.reconcile("r")
        status = w.status("r")
        if refused:
            assert status["phase"] == "Failed" and "KUBETASKS_STORAGE_GRANT_URL" in status["error"]["message"]
        else:
            assert status["phase"] == "Running", status
            data = next(o for k, o in w.api.objects.items() if k[0] == "Secret")["stringData"]
            assert data["payload-get-url"].startswith(f"http://grants.kt.svc:8081/blobs/{store.path_of(ref)}?")
