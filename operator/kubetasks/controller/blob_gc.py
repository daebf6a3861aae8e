"""The object store's sweep: the blobs of runs that no longer exist are deleted, every so often.

A run's blobs go with it (deleted by hand, by its TTL or its Task's history limit, with its
namespace), and an upload no run came to name goes too: both are a prefix no run in the operator's
cache names (core.blob_gc decides). The same listing refreshes the store's metrics per namespace.
Only with a store configured, and only once the cache has its first lists: an empty cache knows
no run, and would have every blob deleted.

Each operator instance sweeps the store's prefix it is configured with: instances that share a
bucket need a prefix each (the chart's storage.prefix, the instanceID by default), since each
knows only its own runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from datetime import datetime, timedelta, timezone

from kubetasks.blobs import BlobStore
from kubetasks.controller import metrics
from kubetasks.controller.cache import Cache, uid_of
from kubetasks.api.storage import PAYLOADS
from kubetasks.core.blob_gc import RUNS, RunBlobs, by_run, to_delete, usage
from kubetasks.core.payload_refs import payloads_to_delete

log = logging.getLogger("kubetasks.blob_gc")

SWEEP_SECONDS = 300.0  # KUBETASKS_STORAGE_SWEEP_SECONDS (chart: storage.sweepSeconds)
GRACE_SECONDS = 600.0  # KUBETASKS_STORAGE_SWEEP_GRACE_SECONDS: blobs written since are kept


class BlobSweeper:
    def __init__(self, store: BlobStore, cache: Cache, namespaces: Collection[str] = (),
                 period: float = SWEEP_SECONDS, grace: float = GRACE_SECONDS) -> None:
        self.store = store
        self.cache = cache
        self.namespaces = tuple(namespaces)  # empty: all
        self.period = period
        self.grace = timedelta(seconds=grace)
        self._namespaces_reported: set[str] = set()

    def known(self) -> set[tuple[str, str]]:
        """(namespace, uid) of every run in the cache; read on the event loop, which writes it."""
        known = set()
        for key in self.cache.runs.keys():
            uid = uid_of(self.cache.runs.get(key))
            if uid:
                known.add((key[0], uid))
        return known

    def named_payloads(self) -> set[str]:
        """The uris of the payloads the cache's runs name (spec.payloadRef)."""
        refs = ((((self.cache.runs.get(key) or {}).get("spec") or {}).get("payloadRef") or {}).get("uri")
                for key in self.cache.runs.keys())
        return {uri for uri in refs if isinstance(uri, str)}

    def sweep_payloads(self, named: Collection[str], now: datetime) -> None:
        """Deletes the uploaded payloads no run names (``named``: uris, taken before the listing); blocking."""
        base = self.store.config.url + "/"
        paths = {uri[len(base):] for uri in named if uri.startswith(base)}
        for path in payloads_to_delete(self.store.listing(PAYLOADS), paths, now, self.grace, self.namespaces):
            try:
                self.store.delete(path)
            except Exception as e:  # the next sweep tries again
                log.warning("could not delete the payload %s: %s", path, e)

    def sweep(self, known: Collection[tuple[str, str]], now: datetime) -> list[RunBlobs]:
        """Lists the store, deletes the prefixes of runs gone, sets the metrics; blocking.
        ``known`` and ``now`` are taken before the listing begins."""
        runs = by_run(self.store.listing(RUNS))
        gone = to_delete(runs, known, now, self.grace, self.namespaces)
        deleted = []
        for run in gone:
            try:
                self.store.delete_prefix(run.prefix)
                deleted.append(run)
            except Exception as e:  # the next sweep tries again
                log.warning("could not delete the blobs of run %s/%s: %s", run.namespace, run.uid, e)
        if deleted:
            log.info("deleted the blobs of %d runs gone (%d objects, %d bytes)", len(deleted),
                     sum(r.objects for r in deleted), sum(r.bytes for r in deleted))
        self.report(usage(runs, deleted))
        return deleted

    def report(self, totals: dict[str, tuple[int, int]]) -> None:
        for ns, (objects, size) in totals.items():
            metrics.STORE_OBJECTS.labels(ns).set(objects)
            metrics.STORE_BYTES.labels(ns).set(size)
        for ns in self._namespaces_reported - totals.keys():
            for gauge in (metrics.STORE_OBJECTS, metrics.STORE_BYTES):
                try:
                    gauge.remove(ns)
                except KeyError:
                    pass
        self._namespaces_reported = set(totals)

    async def sweep_now(self) -> list[RunBlobs]:
        if not self.cache.synced:
            return []
        known, named, now = self.known(), self.named_payloads(), datetime.now(timezone.utc)
        deleted = await asyncio.to_thread(self.sweep, known, now)
        try:
            await asyncio.to_thread(self.sweep_payloads, named, now)
        except Exception as e:  # the runs' sweep is done; the next one tries the payloads again
            log.warning("object store sweep of payloads failed: %s", e)
        return deleted

    async def run(self) -> None:
        """A sweep every ``period`` seconds, the first at once."""
        while True:
            try:
                await self.sweep_now()
            except Exception as e:  # the store down, a listing cut short: the next sweep
                log.warning("object store sweep failed: %s", e)
            await asyncio.sleep(self.period)
