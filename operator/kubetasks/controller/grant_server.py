"""The filesystem store's own presigned URLs, served: what S3 does for its URLs, for a PVC.

A ``file://`` store is a directory only the operator mounts, so task pods reach their blobs
through the operator: ``GET``/``PUT <grant URL>/blobs/<path>?expires=..&sig=..``, the URLs
``BlobStore.sign`` makes (core.blob_signing). A request whose signature is not the operator's for
exactly that method, path and expiry, or that has expired, is refused (403) before the store is
touched; there is nothing else here (no listing, no HEAD, no delete). GETs stream from the store,
PUTs stream into it, at most ``max_bytes`` (413 beyond, and nothing is written).

Its own port (KUBETASKS_STORAGE_GRANT_PORT), plain HTTP as the presigned URLs of the local
cluster's S3 server are: the signature, not the channel, is the authority; the chart's
NetworkPolicy admits task pods to this port only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping

from aiohttp import web

from kubetasks.blobs import BlobMissing, BlobStore, error_line
from kubetasks.controller.metrics_server import start_site
from kubetasks.core.blob_signing import BLOBS_PREFIX

log = logging.getLogger(__name__)
MAX_BYTES = 1024 ** 3  # KUBETASKS_STORAGE_GRANT_MAX_BYTES: the largest blob a pod may PUT
READ_SECONDS = 60  # a PUT whose body stalls this long is dropped (it holds one of the store's threads)
_HEADERS = {"Cache-Control": "no-store"}


class _TooLarge(Exception):
    pass


class _Cut(Exception):
    """The body ended short of its Content-Length: the blob is not written."""


class GrantServer:
    def __init__(self, store: BlobStore, max_bytes: int = MAX_BYTES) -> None:
        self.store = store
        self.max_bytes = max_bytes

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024)  # bodies are streamed, never read whole
        app.router.add_get(BLOBS_PREFIX + "{path:.*}", self.get, allow_head=False)
        app.router.add_put(BLOBS_PREFIX + "{path:.*}", self.put)
        return app

    def _refusal(self, request: web.Request) -> tuple[str, web.Response | None]:
        """The raw path (as signed: never a decoded twin) and a 403 when the grant does not hold."""
        path = request.rel_url.raw_path[len(BLOBS_PREFIX):]
        query = request.rel_url.query
        expires, sig = query.getall("expires", []), query.getall("sig", [])
        refused = self.store.grant_refusal(request.method, path, expires[0] if len(expires) == 1 else None,
                                           sig[0] if len(sig) == 1 else None)
        if refused is None:
            return path, None
        log.info("grant refused: %s %s: %s", request.method, path[:200], refused)
        return path, web.Response(status=403, text=f"refused: {refused}\n", headers=_HEADERS)

    async def get(self, request: web.Request) -> web.StreamResponse:
        path, refused = self._refusal(request)
        if refused is not None:
            return refused
        try:
            size, chunks = await asyncio.to_thread(self.store.open, path)
            first = await asyncio.to_thread(next, chunks, b"")
        except BlobMissing:
            return web.Response(status=404, text="no such blob\n", headers=_HEADERS)
        except Exception as e:  # noqa: BLE001 (the PVC failing: the pod retries a 5xx)
            log.warning("grant GET %s: %s", path, error_line(e))
            return web.Response(status=503, text=f"the store failed: {error_line(e)}\n", headers=_HEADERS)
        response = web.StreamResponse(headers={**_HEADERS, "Content-Type": "application/octet-stream",
                                               "Content-Length": str(size)})
        await response.prepare(request)
        chunk = first
        while chunk:
            await response.write(chunk)
            chunk = await asyncio.to_thread(next, chunks, b"")
        await response.write_eof()
        return response

    async def put(self, request: web.Request) -> web.Response:
        path, refused = self._refusal(request)
        if refused is not None:
            return refused
        if request.content_length is not None and request.content_length > self.max_bytes:
            return self._too_large()
        loop = asyncio.get_running_loop()

        def body() -> Iterator[bytes]:
            # Runs in the store's thread: each chunk is read on the event loop, as it arrives.
            size = 0
            while chunk := asyncio.run_coroutine_threadsafe(request.content.readany(), loop).result(READ_SECONDS):
                size += len(chunk)
                if size > self.max_bytes:
                    raise _TooLarge()  # the multipart upload is aborted: nothing is written
                yield chunk
            if request.content_length is not None and size != request.content_length:
                raise _Cut(f"the body ended after {size} of its {request.content_length} bytes")

        try:
            ref = await asyncio.to_thread(self.store.put, path, body())
        except _TooLarge:
            return self._too_large()
        except _Cut as e:
            return web.Response(status=400, text=f"{e}\n", headers=_HEADERS)
        except Exception as e:  # noqa: BLE001
            log.warning("grant PUT %s: %s", path, error_line(e))
            return web.Response(status=503, text=f"the store failed: {error_line(e)}\n", headers=_HEADERS)
        return web.Response(status=200, headers={**_HEADERS, "ETag": f'"{ref.sha256}"'})

    def _too_large(self) -> web.Response:
        return web.Response(status=413, text=f"a granted upload is at most {self.max_bytes} bytes "
                                             "(KUBETASKS_STORAGE_GRANT_MAX_BYTES)\n", headers=_HEADERS)


async def serve(store: BlobStore | None, env: Mapping[str, str]) -> web.AppRunner | None:
    """Serves the filesystem store's grants when the environment gives them an address; None
    otherwise (another backend checks its own URLs; without a grant URL it signs none)."""
    if store is None or store.scheme != "file" or not store.config.grant_url:
        return None
    port = int(env.get("KUBETASKS_STORAGE_GRANT_PORT") or "8081")
    server = GrantServer(store, int(env.get("KUBETASKS_STORAGE_GRANT_MAX_BYTES") or MAX_BYTES))
    runner = await start_site(server.app(), env.get("KUBETASKS_STORAGE_GRANT_BIND_ADDRESS") or "0.0.0.0",
                              port, None, "grants")
    log.info("filesystem store grants served on port %d as %s", port, store.config.grant_url)
    return runner
