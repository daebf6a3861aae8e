"""The one way to the object store: bulk data the operator keeps out of etcd (obstore).

obstore (Rust's object_store) gives S3 and every S3-compatible server, GCS, Azure and a local
filesystem behind one API, with streaming, multipart uploads and presigned URLs; the operator holds
the store's credentials (the standard AWS_*/GOOGLE_*/AZURE_* variables, from the chart's
``storage.credentialsSecret``), task pods never do.

Configured by the environment (the chart sets it from ``storage.*``):
KUBETASKS_STORAGE_URL     s3://bucket/prefix, gs://..., az://container/prefix, file:///path
KUBETASKS_STORAGE_ENDPOINT an S3-compatible server (SeaweedFS in the local cluster), optional
KUBETASKS_STORAGE_REGION  optional (S3)
KUBETASKS_STORAGE_THRESHOLD bytes above which values go to the store (api.storage.DEFAULT_THRESHOLD)
KUBETASKS_STORAGE_GRANT_URL file:// only: where task pods reach the operator's grant server
                          (controller.grant_server), which serves the URLs this store signs
Without KUBETASKS_STORAGE_URL there is no store, and the limits of etcd hold (say so where they bite).

Every blob is written with its sha256 and verified on every read: a missing blob raises BlobMissing,
a changed one BlobCorrupt, each with a message a person can act on; never a wrong value.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import obstore
from obstore.store import AzureStore, GCSStore, S3Store, from_url

from kubetasks.api.storage import DEFAULT_THRESHOLD, BlobRef
from kubetasks.core.blob_signing import KEY_BYTES, grant_refusal, signed_url

if TYPE_CHECKING:
    from obstore.store import ClientConfig

CHUNK = 1024 * 1024
# A streamed put buffers at most this many 5 MiB parts in flight: obstore's default, 12, may hold
# 60 MiB per upload when the store is slower than the source (a log read from a fast kubelet).
PARTS_AT_ONCE = 4


class BlobError(Exception):
    """A blob could not be read as it was written."""


class BlobMissing(BlobError):
    pass


class BlobCorrupt(BlobError):
    pass


_S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "access_key_id", "AWS_SECRET_ACCESS_KEY": "secret_access_key",
                   "AWS_SESSION_TOKEN": "session_token"}


@dataclass(frozen=True)
class StorageConfig:
    url: str  # s3://bucket/prefix, gs://..., az://..., file:///path
    endpoint: str | None = None
    region: str | None = None
    threshold: int = DEFAULT_THRESHOLD
    grant_url: str | None = None  # file://: the operator's grant server, as task pods reach it
    # S3 keys read from the same environment (obstore itself reads only the process's); never printed.
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StorageConfig | None:
        env = os.environ if env is None else env
        url = (env.get("KUBETASKS_STORAGE_URL") or "").strip()
        if not url:
            return None
        return cls(url=url.rstrip("/"), endpoint=env.get("KUBETASKS_STORAGE_ENDPOINT") or None,
                   region=env.get("KUBETASKS_STORAGE_REGION") or None,
                   threshold=int(env.get("KUBETASKS_STORAGE_THRESHOLD") or DEFAULT_THRESHOLD),
                   grant_url=(env.get("KUBETASKS_STORAGE_GRANT_URL") or "").strip() or None,
                   credentials={key: env[var] for var, key in _S3_CREDENTIALS.items() if env.get(var)})


class BlobStore:
    """A store and the prefix below which kubetasks keeps its blobs. Blocking, like kube.py: the
    controller calls it through ``asyncio.to_thread``."""

    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.scheme = urlsplit(config.url).scheme
        options: dict[str, Any] = {}
        # A request is bounded as a whole (a 100 MB log streamed to a slow reader takes a while)
        # and by the gap between two reads (a stalled connection fails fast and is retried).
        client: ClientConfig = {"connect_timeout": "5s", "read_timeout": "30s", "timeout": "600s"}
        if self.scheme == "s3":
            if config.endpoint:
                options["endpoint"] = config.endpoint
                options["virtual_hosted_style_request"] = False
                # A client option, not an S3 one: among the S3 options obstore panics on it.
                client["allow_http"] = config.endpoint.startswith("http://")
            if config.region:
                options["region"] = config.region
            options.update(config.credentials)
        self._grant_key: bytes | None = None  # file:// with a grant URL: the key it signs with
        if self.scheme == "file":
            # Its directories go with their last file, as a prefix does in a bucket.
            self.store = from_url(config.url, mkdir=True, automatic_cleanup=True)
            if config.grant_url:
                self._grant_key = grant_key(urlsplit(config.url).path)
        else:
            self.store = from_url(config.url, client_options=client, **options)

    def uri(self, path: str) -> str:
        return f"{self.config.url}/{path}"

    def path_of(self, ref: BlobRef) -> str:
        """The path below the store's prefix that ``ref`` names; ValueError when it names
        another store (a ref is data a task could have written: never follow it elsewhere)."""
        base = self.config.url + "/"
        if not ref.uri.startswith(base) or ".." in ref.uri[len(base):].split("/"):
            raise ValueError(f"{ref.uri} is not in this operator's store ({self.config.url})")
        return ref.uri[len(base):]

    def put(self, path: str, data: bytes | Iterable[bytes]) -> BlobRef:
        """Writes ``data`` (bytes, or chunks streamed in a multipart upload) and returns its ref."""
        digest, size = hashlib.sha256(), 0

        def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        if isinstance(data, (bytes, bytearray, memoryview)):
            obstore.put(self.store, path, bytes(data))
            return BlobRef.of(self.uri(path), bytes(data))
        obstore.put(self.store, path, counted(data), max_concurrency=PARTS_AT_ONCE)
        return BlobRef(uri=self.uri(path), size=size, sha256=digest.hexdigest())

    def stream(self, ref: BlobRef) -> Iterator[bytes]:
        """The blob's bytes in chunks; raises BlobCorrupt at the end when they are not the ones
        ``ref`` names (a reader that must not act on a wrong value reads it all first: ``get``)."""
        path = self.path_of(ref)
        try:
            result = obstore.get(self.store, path)
        except FileNotFoundError:
            raise BlobMissing(f"{ref.uri} is missing from the store (deleted behind the operator's back?)") from None
        digest, size = hashlib.sha256(), 0
        for chunk in result.stream(min_chunk_size=CHUNK):
            data = bytes(chunk)
            digest.update(data)
            size += len(data)
            yield data
        if size != ref.size or digest.hexdigest() != ref.sha256:
            raise BlobCorrupt(f"{ref.uri} is not the blob that was written: {size} bytes with sha256 "
                              f"{digest.hexdigest()[:12]}, expected {ref.size} bytes with sha256 {ref.sha256[:12]}")

    def get(self, ref: BlobRef) -> bytes:
        """The whole blob, verified before it is returned."""
        return b"".join(self.stream(ref))

    def copy(self, source: str, target: str) -> None:
        """Copies one blob within the store, server-side (no bytes through the operator);
        BlobMissing when there is no ``source``. Overwrites ``target``: copying again is harmless."""
        try:
            obstore.copy(self.store, source, target, overwrite=True)
        except FileNotFoundError:
            raise BlobMissing(f"{self.uri(source)} is missing from the store") from None

    def delete_prefix(self, prefix: str) -> int:
        """Deletes every blob below ``prefix``; how many there were."""
        paths = [path for path, _, _ in self.listing(prefix)]
        if paths:
            obstore.delete(self.store, paths)
        return len(paths)

    def size_of(self, path: str) -> int | None:
        """The size of one blob; None when there is none (a listing takes a prefix as a directory)."""
        try:
            return int(obstore.head(self.store, path)["size"])
        except FileNotFoundError:
            return None

    def delete(self, path: str) -> None:
        """Deletes one blob (a prefix of a file:// store lists directories only: delete_prefix would miss it)."""
        obstore.delete(self.store, path)

    def listing(self, prefix: str = "") -> Iterator[tuple[str, int, datetime]]:
        """(path, size, last modified) of every blob below ``prefix``, page by page."""
        for batch in obstore.list(self.store, prefix or None):
            for meta in batch:
                yield meta["path"], int(meta["size"]), meta["last_modified"]

    def usage(self, prefix: str = "") -> tuple[int, int]:
        """(objects, bytes) below ``prefix``."""
        objects = size = 0
        for _, blob_size, _ in self.listing(prefix):
            objects += 1
            size += blob_size
        return objects, size

    @property
    def signs(self) -> bool:
        """Whether ``sign`` gives URLs: S3, GCS, Azure; the filesystem with a grant server."""
        return isinstance(self.store, (S3Store, GCSStore, AzureStore)) or self._grant_key is not None

    def sign(self, method: Literal["GET", "PUT"], path: str, expires: timedelta) -> str:
        """A presigned URL for one blob; a pod given it can do ``method`` on that blob only, until it
        expires. The filesystem's are the operator's grant server's (core.blob_signing), and
        NotImplementedError without one (KUBETASKS_STORAGE_GRANT_URL)."""
        if self._grant_key is not None and self.config.grant_url:
            return signed_url(self.config.grant_url, self._grant_key, method, path,
                              int(time.time() + expires.total_seconds()))
        if not isinstance(self.store, (S3Store, GCSStore, AzureStore)):
            raise NotImplementedError(f"the {self.scheme} backend cannot presign URLs without a grant server "
                                      "(KUBETASKS_STORAGE_GRANT_URL)")
        return obstore.sign(self.store, method, path, expires)

    def grant_refusal(self, method: str, path: str, expires: str | None, sig: str | None) -> str | None:
        """Why the grant server refuses a request this store would have to have signed; None when
        ``sign`` made it and it has not expired. Always refused by a store that does not sign so."""
        if self._grant_key is None:
            return "this store signs no grants of its own"
        return grant_refusal(self._grant_key, method, path, expires, sig, time.time())

    def open(self, path: str) -> tuple[int, Iterator[bytes]]:
        """One blob's size and raw bytes in chunks, unchecked (the grant server's GET: the pod that
        reads it checks the digest it was given); BlobMissing when there is none."""
        try:
            result = obstore.get(self.store, path)
        except FileNotFoundError:
            raise BlobMissing(f"{self.uri(path)} is missing from the store") from None
        return int(result.meta["size"]), (bytes(chunk) for chunk in result.stream(min_chunk_size=CHUNK))


_QUERY = re.compile(r"\?\S*")  # a URL's query: presigned or upload ids, long and of no help to a reader
_CAUSE = re.compile(r'message: "([^"]+)"')  # the OS's word, deep in obstore's debug text
_HYPER = re.compile(r"hyper::Error\(\s*(\w+)")  # or the HTTP client's, when the OS had none
_HYPER_WORDS = {"IncompleteMessage": "connection closed before a response"}


def error_line(e: BaseException, limit: int = 300) -> str:
    """One line on why the store failed, its cause first: obstore's first line (a long URL, then
    "error sending request") leaves the cause (connection refused, timed out...) to a debug dump
    below it."""
    text = str(e).strip()
    first = _QUERY.sub("", text.splitlines()[0] if text else "")
    causes = _CAUSE.findall(text) or [_HYPER_WORDS.get(k, k) for k in _HYPER.findall(text)]
    # The cause first: a message cut to its limit keeps it.
    line = f"{type(e).__name__}: " + (f"{causes[-1]}: " if causes and causes[-1] not in first else "") + first
    return line if len(line) <= limit else line[:limit - 1] + "…"


GRANT_KEY_FILE = ".kubetasks-grant-key"  # at the store's root: outside runs/ and payloads/, never served


def grant_key(directory: str) -> bytes:
    """The key the operator signs a filesystem store's grants with, made once (32 random bytes, mode
    0600) in the store's own directory: grants outlive a restart, and no Secret or variable holds
    it. Two operators starting at once agree: the key is linked into place whole, or read."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, GRANT_KEY_FILE)
    if not os.path.exists(path):
        temp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(temp, path)
            except FileExistsError:
                pass  # another operator's came first: it is the key
        finally:
            os.unlink(temp)
    with open(path, "rb") as f:
        key = f.read()
    if len(key) != KEY_BYTES:
        raise RuntimeError(f"{path} is {len(key)} bytes, not a {KEY_BYTES}-byte grant key: remove it to make another "
                           "(grants signed with it stop working)")
    return key


def from_env(env: Mapping[str, str] | None = None) -> BlobStore | None:
    config = StorageConfig.from_env(env)
    return BlobStore(config) if config else None
