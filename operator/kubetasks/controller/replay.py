"""Seeding a replay's checkpoints from its original's (core.replay decides which records).

Done once, as the replay's checkpoint ConfigMap is created before its first attempt: the operator
owns checkpoint ConfigMaps, and a replay's pods may read their own run's only. The original is
read, never written. Its reused outputs in the object store are copied server-side into the
replay's own prefix first, so the records the ConfigMap is created with never name a missing copy.
"""

from __future__ import annotations

import asyncio

from kubetasks.api.taskrun import TaskRun
from kubetasks.blobs import BlobMissing, BlobStore, error_line
from kubetasks.controller.conflicts import Call
from kubetasks.controller.queue import Requeue
from kubetasks.core.naming import checkpoint_name
from kubetasks.core.replay import SOURCE_MISSING, blob_copies, reused_records, seed_data
from kubetasks.core.trigger_policy import Refusal

STORE_RETRY = 5.0  # seconds: the store did not answer; the copies are tried again (they overwrite)


async def replay_seed(call: Call, store: BlobStore | None, run: TaskRun, uid: str) -> dict[str, str] | Refusal:
    """The data the replay's checkpoint ConfigMap is created with ({} for a run that is no replay,
    a fresh one, or one whose ConfigMap exists already); a Refusal when the original's records
    are gone (it was deleted since the replay was admitted, or a reused blob is missing)."""
    source = run.spec.replay_of
    if source is None or source.fresh:
        return {}
    if await call("get_configmap_data", run.namespace, checkpoint_name(run.name, uid)) is not None:
        return {}  # seeded by an earlier reconcile, which stopped before the Job: never seeded twice
    name = checkpoint_name(source.name, source.uid)
    data = await call("get_configmap_data", run.namespace, name)
    if data is None:
        return Refusal(SOURCE_MISSING, f"the step records of run {source.name!r} (ConfigMap {name}) are gone: "
                                       "replay with --fresh to run every step again")
    records = reused_records(data, source)
    url = store.config.url if store else None
    copies = blob_copies(records, run.namespace, source.uid, uid, url)
    for uri, (from_path, to_path) in copies.items():
        assert store is not None
        try:
            await asyncio.to_thread(store.copy, from_path, to_path)
        except BlobMissing:
            return Refusal(SOURCE_MISSING, f"a step output of run {source.name!r} is missing from the store "
                                           f"({uri}): replay --from-step an earlier step, or --fresh")
        except Exception as e:  # the store away: its blobs may well be there
            raise Requeue(STORE_RETRY, f"copying {uri} for replay: {error_line(e)}") from e
    return seed_data(records, copies, url)
