"""A TaskQueue's status: ``running``, ``waiting`` and ``holders`` from flow control's memory
(derived from the Jobs, never from runs' statuses), written at most once per batch period per
queue (the operator queues it after a delay, as a Task's status) and only when it changed, onto
the queue's uid and resourceVersion as read."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from kubetasks import kube
from kubetasks.controller.cache import Cache, Key, uid_of
from kubetasks.controller.conflicts import write_status
from kubetasks.controller.flow import FlowControl
from kubetasks.controller.queues import holders
from kubetasks.core.status_patch import status_patch
from kubetasks.core.queues import queue_status


class QueueReconciler:
    """Writes a TaskQueue's status (running, waiting, holders, observedGeneration)."""

    def __init__(self, cache: Cache, flow: FlowControl, api: ModuleType | Any = kube) -> None:
        self.cache, self.flow, self.api = cache, flow, api

    async def reconcile(self, key: Key) -> None:
        body = self.cache.queues.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        ns, name = key
        lid = f"TaskQueue/{name}"
        old = body.get("status") or {}
        status = queue_status(old, body["metadata"].get("generation"), holders(self.flow, ns, lid),
                              self.flow.waiting(ns, lid))
        patch = status_patch(old, status)
        if not patch:
            return
        await write_status(self.api, self.cache.queues, kube.TASKQUEUES, key, uid_of(body) or "",
                           body["metadata"].get("resourceVersion"), patch)
