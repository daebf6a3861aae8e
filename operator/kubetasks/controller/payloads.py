"""Payloads kept in the object store: uploaded through the operator, checked before a run's first
attempt, granted to its pods (core.payload_refs decides what is followed).

- ``upload``: the body of ``PUT /payloads/<namespace>`` (its caller reviewed by the metrics
  server: may they create TaskRuns there?), checked to be JSON, written content-addressed at
  ``payloads/<namespace>/<sha256>``; the answer is its BlobRef, for the caller's spec.payloadRef.
- ``refusal``: before a run's first attempt, why its payloadRef must not be followed (another
  namespace's, a run's blob, another store, a `command` task, a store that cannot sign) or is
  not there: the run then fails with that reason and an Event, before any Job.
- ``grant_data``: the presigned GET of the payload, with its digest, for the attempt's grant Secret
  (protocol.GRANT_PAYLOAD_*): the pod reads it with plain HTTP and checks the sha256.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Collection, Mapping
from datetime import timedelta

from aiohttp import web

from kubetasks import protocol
from kubetasks.api.storage import BlobRef, payload_blob_path
from kubetasks.api.task import Task
from kubetasks.api.taskrun import TaskRun
from kubetasks.blobs import BlobStore
from kubetasks.core.payload_refs import (DEFAULT_MAX_UPLOAD, INVALID_PAYLOAD_REF, missing_refusal, payload_refusal,
                                         ref_path)
from kubetasks.core.render import uses_sdk
from kubetasks.core.trigger_policy import Refusal

log = logging.getLogger(__name__)
MAX_UPLOAD_ENV = "KUBETASKS_STORAGE_MAX_PAYLOAD_BYTES"  # chart: storage.maxPayloadBytes


class UploadRefused(ValueError):
    """A body that is not a payload: a message for the caller (400)."""


class Payloads:
    def __init__(self, store: BlobStore | None = None, max_upload: int = DEFAULT_MAX_UPLOAD) -> None:
        self.store = store
        self.max_upload = max_upload
        self.namespaces: tuple[str, ...] = ()  # those the operator serves (empty: all)
        self._found: set[str] = set()  # uids whose payload was found: a queued run's reconciles list nothing

    def forget(self, uid: str) -> None:
        self._found.discard(uid)

    def configure(self, env: Mapping[str, str] = os.environ, store: BlobStore | None = None,
                  namespaces: Collection[str] = ()) -> None:
        self.store = store
        self.namespaces = tuple(namespaces)
        self.max_upload = int(env.get(MAX_UPLOAD_ENV) or DEFAULT_MAX_UPLOAD)

    def upload(self, namespace: str, data: bytes) -> BlobRef:
        """Writes an uploaded payload (blocking); its ref. The same payload twice is one blob."""
        assert self.store is not None
        try:
            json.loads(data)
        except ValueError as e:  # UnicodeDecodeError included
            raise UploadRefused(f"the payload is not JSON: {e}") from None
        path = payload_blob_path(namespace, hashlib.sha256(data).hexdigest())
        return self.store.put(path, data)  # written again when it exists: its age restarts the sweep's grace

    async def refusal(self, run: TaskRun, task: Task) -> Refusal | None:
        """Why the run's payloadRef cannot be given to its task; None when it can (or it has none).
        An error reaching the store raises: the reconcile is retried."""
        ref, uid = run.spec.payload_ref, str(run.metadata.get("uid", ""))
        if ref is None or uid in self._found:
            return None
        store = self.store
        refused = payload_refusal(run, store.config.url if store else None, uses_sdk(task))
        if refused or store is None:
            return refused
        if not store.signs:
            return Refusal(INVALID_PAYLOAD_REF, "the payload is kept by reference, and this filesystem store cannot "
                                                "give task pods a URL to read it: give the operator a grant URL "
                                                "(KUBETASKS_STORAGE_GRANT_URL; the chart sets it) or use an S3, GCS "
                                                "or Azure store")
        path, _ = ref_path(ref, run.namespace, store.config.url)
        assert path is not None
        found = await asyncio.to_thread(store.size_of, path)
        refused = missing_refusal(ref, found)
        if refused is None:
            self._found.add(uid)
        return refused

    def grant_data(self, run: TaskRun, lifetime: timedelta) -> dict[str, str]:
        """The grant Secret's keys for the run's payload (blocking: it signs); {} without a payloadRef."""
        ref, store = run.spec.payload_ref, self.store
        if ref is None or store is None:
            return {}
        path, _ = ref_path(ref, run.namespace, store.config.url)
        if path is None:  # refused before the first attempt; never signed
            return {}
        return {protocol.GRANT_PAYLOAD_URL: store.sign("GET", path, lifetime), protocol.GRANT_PAYLOAD_URI: ref.uri,
                protocol.GRANT_PAYLOAD_SHA256: ref.sha256, protocol.GRANT_PAYLOAD_SIZE: str(ref.size)}


async def serve_upload(payloads: Payloads, namespace: str, request: web.Request) -> web.Response:
    """``PUT /payloads/<namespace>``, its caller already allowed: 201 and the BlobRef; 413 past
    ``max_upload`` (read no further), 400 for a body that is not JSON, 501 without a store."""
    if payloads.store is None:
        return web.json_response({"message": "this operator has no object store: a payload travels in spec.payload "
                                             "(the API server holds at most about 1.5 MiB); a store (chart values "
                                             "storage.*) lifts the limit"}, status=501)
    if payloads.namespaces and namespace not in payloads.namespaces:
        return web.json_response({"message": f"this operator does not serve the namespace {namespace!r}"}, status=404)
    limit = payloads.max_upload
    too_large = web.json_response({"message": f"the payload is over this operator's limit of {limit} bytes "
                                              "(chart value storage.maxPayloadBytes)"}, status=413)
    if (request.content_length or 0) > limit:
        return too_large
    body = bytearray()
    async for chunk in request.content.iter_chunked(1024 * 1024):
        body += chunk
        if len(body) > limit:
            return too_large
    try:
        ref = await asyncio.to_thread(payloads.upload, namespace, bytes(body))
    except UploadRefused as e:
        return web.json_response({"message": str(e)[:500]}, status=400)
    except Exception as e:  # the store unreachable: the caller may try again
        log.warning("could not store a payload for %s: %s", namespace, e)
        return web.json_response({"message": f"could not store the payload: {str(e).splitlines()[0][:300]}"}, status=503)
    return web.json_response(ref.to_api(), status=201, headers={"Cache-Control": "no-store"})
