"""The step half of an attempt's grant Secret: upload slots for its large step outputs, and reads
of those its run's checkpoints name (core.step_grants decides which refs are the run's own).

Made with the attempt's upload grant (controller.results), by the same signing store and with the
same lifetime. The checkpoint ConfigMap is read when the attempt starts: a step completed later
(by this very attempt) is read back from the pod's memory, not the store.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from kubetasks.api.taskrun import TaskRun
from kubetasks.blobs import BlobStore
from kubetasks.controller.conflicts import Call
from kubetasks.core.naming import checkpoint_name
from kubetasks.core.step_grants import judge_step_ref, render_step_grant, slot_paths, step_refs

log = logging.getLogger(__name__)


async def step_grant(call: Call, store: BlobStore, run: TaskRun, attempt: int, lifetime: timedelta,
                     slots: int) -> dict[str, str]:
    """The grant Secret's step keys for ``attempt`` (stringData); {} with no slots."""
    if slots <= 0:
        return {}
    uid = str(run.metadata.get("uid", ""))
    data = await call("get_configmap_data", run.namespace, checkpoint_name(run.name, uid))
    judged = [judge_step_ref(raw, run.namespace, uid, store.config.url) for raw in step_refs(data).values()]
    for refused in (j for j in judged if j.refusal):
        log.warning("%s/%s: attempt %d: a step record names %s", run.namespace, run.name, attempt, refused.refusal)
    paths = slot_paths(run.namespace, uid, attempt, slots)

    def sign() -> tuple[list[tuple[str, str]], dict[str, dict[str, str]]]:
        puts = [(store.uri(p), store.sign("PUT", p, lifetime)) for p in paths]
        gets: dict[str, dict[str, str]] = {
            j.uri: {"url": store.sign("GET", j.path, lifetime)} if j.path else {"refused": j.refusal or "refused"}
            for j in judged}
        return puts, gets

    puts, gets = await asyncio.to_thread(sign)
    return render_step_grant(puts, gets)
