"""The object store behind kubetasks.blobs, against the local cluster's real S3 server (SeaweedFS,
hack/cluster/storage.sh) and the filesystem backend: the same tests on both.

Paths are below tests/<random>/, never runs/: the session operator sweeps runs/ prefixes that
no run of its own names.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import obstore
import pytest

from kubetasks.api.storage import BlobRef
from kubetasks.blobs import BlobCorrupt, BlobMissing, BlobStore
from tests.conftest import wait_until

pytestmark = pytest.mark.cluster

MB = 1024 * 1024


@pytest.fixture(params=["s3", "filesystem"])
def store(request: pytest.FixtureRequest) -> BlobStore:
    return request.getfixturevalue("blob_store" if request.param == "s3" else "fs_blob_store")


@pytest.fixture
def base() -> str:
    return f"tests/{uuid.uuid4().hex}/"


def http(url: str, data: bytes | None = None, method: str = "GET") -> tuple[int, bytes]:
    """A plain request (no credentials): status and body, errors included."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_20_mb_go_in_and_come_back_with_their_digest(store: BlobStore, base: str) -> None:
    data = os.urandom(20 * MB)
    digest = hashlib.sha256(data).hexdigest()
    ref = store.put(base + "whole", data)
    assert (ref.size, ref.sha256) == (20 * MB, digest)
    assert ref.uri == store.uri(base + "whole")
    # Streamed in (a multipart upload on S3) and out, in chunks.
    chunks = (data[i:i + 3 * MB] for i in range(0, len(data), 3 * MB))
    streamed = store.put(base + "streamed", chunks)
    assert (streamed.size, streamed.sha256) == (20 * MB, digest)
    out = hashlib.sha256()
    for chunk in store.stream(streamed):
        assert len(chunk) <= 20 * MB
        out.update(chunk)
    assert out.hexdigest() == digest
    assert store.get(ref) == data


def test_a_blob_deleted_behind_our_back_is_missing_with_a_clear_reason(store: BlobStore, base: str) -> None:
    ref = store.put(base + "gone", b"x" * 1000)
    obstore.delete(store.store, base + "gone")
    with pytest.raises(BlobMissing, match="missing from the store") as missing:
        store.get(ref)
    assert ref.uri in str(missing.value)


@pytest.mark.parametrize("change", ["same size", "shorter", "longer"])
def test_changed_bytes_are_never_returned(store: BlobStore, base: str, change: str) -> None:
    data = os.urandom(2 * MB)
    ref = store.put(base + "blob", data)
    changed = {"same size": data[:-1] + bytes([data[-1] ^ 1]), "shorter": data[:-10], "longer": data + b"!"}[change]
    obstore.put(store.store, base + "blob", changed)
    with pytest.raises(BlobCorrupt, match="not the blob that was written") as corrupt:
        store.get(ref)
    assert ref.uri in str(corrupt.value) and ref.sha256[:12] in str(corrupt.value)
    # A reader of the stream gets the bytes, then the error, before its end.
    with pytest.raises(BlobCorrupt):
        for _ in store.stream(ref):
            pass


def test_a_ref_into_another_store_is_not_followed(store: BlobStore, base: str) -> None:
    ref = store.put(base + "mine", b"mine")
    for uri in ("s3://elsewhere/x", store.uri(base + "../../etc/passwd"), store.config.url + "x/" + base + "mine"):
        with pytest.raises(ValueError, match="not in this operator's store"):
            store.get(BlobRef(uri=uri, size=ref.size, sha256=ref.sha256))


def test_delete_prefix_and_usage(store: BlobStore, base: str) -> None:
    for path, size in (("run/a", 10), ("run/b/c", 20), ("run/d", 30), ("runner/e", 40), ("other", 50)):
        store.put(base + path, b"x" * size)
    assert store.usage(base) == (5, 150)
    assert store.usage(base + "run/") == (3, 60)
    assert sorted((p, s) for p, s, _ in store.listing(base + "run/")) == [
        (base + "run/a", 10), (base + "run/b/c", 20), (base + "run/d", 30)]
    assert store.delete_prefix(base + "run/") == 3
    assert store.usage(base + "run/") == (0, 0)
    # A prefix is a whole path segment: runner/ is another prefix than run/.
    assert store.usage(base) == (2, 90)
    assert store.delete_prefix(base + "run/") == 0
    assert store.delete_prefix(base) == 2


def test_the_filesystem_backend_grants_no_urls(fs_blob_store: BlobStore, base: str) -> None:
    with pytest.raises(NotImplementedError, match="cannot presign"):
        fs_blob_store.sign("GET", base + "x", timedelta(minutes=1))


def test_presigned_urls_do_their_one_thing_without_credentials_until_they_expire(blob_store: BlobStore,
                                                                                base: str) -> None:
    data = os.urandom(MB)
    ref = blob_store.put(base + "readable", data)
    get = blob_store.sign("GET", base + "readable", timedelta(minutes=5))
    assert http(get) == (200, data)
    # The URL names its path: another path, or another verb, with its signature is refused.
    for other in (get.replace("/readable?", "/other?"), get.replace(base, base + "x/")):
        assert http(other)[0] == 403
    assert http(get, data=b"overwritten", method="PUT")[0] == 403
    assert blob_store.get(ref) == data

    put = blob_store.sign("PUT", base + "written", timedelta(minutes=5))
    assert http(put, data=b"by a pod", method="PUT")[0] == 200
    assert blob_store.get(BlobRef.of(blob_store.uri(base + "written"), b"by a pod")) == b"by a pod"
    assert http(put.replace("/written?", "/elsewhere?"), data=b"no", method="PUT")[0] == 403
    assert blob_store.usage(base) == (2, MB + len(b"by a pod"))

    # Short grants stop working once they expire (S3 counts whole seconds).
    get_short = blob_store.sign("GET", base + "readable", timedelta(seconds=2))
    put_short = blob_store.sign("PUT", base + "late", timedelta(seconds=2))
    wait_until("the GET grant to expire", lambda: http(get_short)[0] == 403, timeout=30)
    wait_until("the PUT grant to expire", lambda: http(put_short, data=b"late", method="PUT")[0] == 403, timeout=30)
    assert blob_store.usage(base + "late") == (0, 0)
    blob_store.delete_prefix(base)


def test_no_one_lists_or_reads_the_bucket_without_credentials(blob_store: BlobStore, base: str) -> None:
    endpoint: Any = blob_store.config.endpoint
    bucket = urlsplit(blob_store.config.url).netloc
    contents = f"contents {uuid.uuid4()}".encode()
    blob_store.put(base + "secret", contents)
    prefix = urlsplit(blob_store.config.url).path.strip("/")
    key = f"{prefix}/{base}secret".lstrip("/")
    for url in (f"{endpoint}/{bucket}", f"{endpoint}/{bucket}?list-type=2", f"{endpoint}/",
                f"{endpoint}/{bucket}/{key}"):
        status, body = http(url)
        assert status == 403, (url, status)
        assert contents not in body  # (an error names the key)
    assert http(f"{endpoint}/{bucket}/{key}", data=b"forged", method="PUT")[0] == 403
    assert http(f"{endpoint}/{bucket}/{key}", method="DELETE")[0] == 403
    blob_store.delete_prefix(base)


# -- Lifecycle: the session operator sweeps its store every few seconds (conftest.SWEEP_SECONDS).
def test_a_runs_blobs_go_with_it_and_blobs_no_run_names_are_collected(operator: Any, blob_store: BlobStore,
                                                                      namespace: str) -> None:
    from kubetasks.api.storage import log_path, payload_path, result_path, run_prefix
    from tests.conftest import SWEEP_GRACE_SECONDS, SWEEP_SECONDS, apply, get, kubectl, scrape

    uids = {}
    for name in ("deleted", "kept"):  # runs of a Task that does not exist: they wait, and make no Job
        apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
               "spec": {"taskRef": "no-such-task"}}, namespace)
        uids[name] = get("taskrun", name, namespace)["metadata"]["uid"]
    orphan = str(uuid.uuid4())  # an upload no run ever named
    for uid in (*uids.values(), orphan):
        blob_store.put(payload_path(namespace, uid), b"p" * 100)
        blob_store.put(result_path(namespace, uid, 1), b"r" * 200)
        blob_store.put(log_path(namespace, uid, 1), b"l" * 300)
    kubectl("delete", "taskrun", "deleted", "-n", namespace)

    deadline = SWEEP_GRACE_SECONDS + 3 * SWEEP_SECONDS + 30
    for uid in (uids["deleted"], orphan):
        wait_until(f"the blobs of {uid} to go", lambda: blob_store.usage(run_prefix(namespace, uid)) == (0, 0),
                   timeout=deadline)
    assert blob_store.usage(run_prefix(namespace, uids["kept"])) == (3, 600)

    def store_metrics() -> tuple[float, float] | None:
        families = scrape(operator.metrics_port)
        values = tuple(next((s.value for s in families.get(name, []) if s.labels.get("namespace") == namespace), None)
                       for name in ("kubetasks_store_objects", "kubetasks_store_bytes"))
        return values if values == (3, 600) else None  # type: ignore[return-value]

    wait_until("the store's metrics of the namespace", store_metrics, timeout=3 * SWEEP_SECONDS + 30)


def test_a_pod_reaches_the_store_with_presigned_urls_alone(blob_store: BlobStore, namespace: str, base: str) -> None:
    """Task pods reach the cluster's S3 server (at the node's address) with grants, no credentials."""
    from tests.conftest import VERSIONS, apply, kubectl

    data = os.urandom(256 * 1024)
    blob_store.put(base + "input", data)
    get = blob_store.sign("GET", base + "input", timedelta(minutes=5))
    put = blob_store.sign("PUT", base + "output", timedelta(minutes=5))
    script = ("import hashlib, os, sys, urllib.request as u\n"
              "data = u.urlopen(sys.argv[1], timeout=30).read()\n"
              "assert not any(k.startswith('AWS_') for k in os.environ)\n"
              "r = u.urlopen(u.Request(sys.argv[2], data=hashlib.sha256(data).hexdigest().encode(), method='PUT'), timeout=30)\n"
              "print(r.status)\n")
    apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "grants"},
           "spec": {"backoffLimit": 0, "template": {"spec": {
               "restartPolicy": "Never", "automountServiceAccountToken": False,
               "containers": [{"name": "main", "image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never",
                               "command": ["python3", "-c", script, get, put],
                               "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}}}]}}}}, namespace)
    kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/grants", "--timeout=120s")
    digest = hashlib.sha256(data).hexdigest().encode()
    assert blob_store.get(BlobRef.of(blob_store.uri(base + "output"), digest)) == digest
    blob_store.delete_prefix(base)
