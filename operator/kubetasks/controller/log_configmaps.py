"""Where kept logs go today: a ConfigMap per attempt, owned by its run, within a byte budget per
namespace (KUBETASKS_LOG_BUDGET_BYTES).

The budget is known without a request per log: an informer (a Reflector into ``cache.logs``)
holds every kept log's metadata and size, never its text (listed and watched as metadata only),
so a restarted operator knows the bytes kept as soon as it has listed them, those an earlier
version kept included. Each change queues its namespace; the eviction is core.logs' pure decision
over the store, and each delete carries the log's UID as a precondition (a log re-created under
that name since is not the one judged). Logs being deleted are not judged again until the watch
shows them gone (expectations, as the Job controller's), so a burst does not delete twice as many.

The budget can be exceeded for a moment: by the logs written between an eviction and the next
(at most one per run worker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import ModuleType
from typing import Any

from kubetasks import kube
from kubetasks.api.taskrun import TaskRun
from kubetasks.controller import metrics
from kubetasks.controller.cache import Body, Cache, attempt_of, key_of, uid_of
from kubetasks.controller.queue import WorkQueue
from kubetasks.informer.reflector import Reflector, Timing
from kubetasks.core.children import controlled_by
from kubetasks.core.logs import DEFAULT_BUDGET_BYTES, KEPT_LOG_SELECTOR, evictions, kept_size, render_attempt_log
from kubetasks.core.naming import attempt_log_name

log = logging.getLogger(__name__)
EVICTION_SECONDS = 60.0  # a log deleted and not yet seen gone by the watch is left out this long


def log_budget_bytes(value: str | None) -> int:
    """KUBETASKS_LOG_BUDGET_BYTES: bytes of kept logs per namespace; 0 is no budget."""
    return max(0, int(value or DEFAULT_BUDGET_BYTES))


class ConfigMapLogs:
    def __init__(self, cache: Cache, api: ModuleType | Any = kube) -> None:
        self.store = cache.logs
        self.api = api
        self.budget = DEFAULT_BUDGET_BYTES
        self.queue: WorkQueue[str] = WorkQueue("kept-logs", self.evict, workers=1)  # namespaces over budget
        self._bytes: dict[str, tuple[int, int]] = {}  # namespace -> (logs, bytes) in the store
        self._evicting: dict[str, float] = {}  # uid -> until when it is taken as gone
        self.store.listeners.append(self._changed)

    # Where a kept log goes (controller.kept_logs.LogDestination) ----------------------------
    async def has(self, run: TaskRun, uid: str, job: str) -> bool:
        found = self.store.get((run.namespace, attempt_log_name(job)))
        return found is not None and controlled_by(found, uid)

    async def put(self, run: TaskRun, uid: str, job: Body, pod: str, text: str, truncated: bool) -> None:
        configmap = render_attempt_log(run, job, attempt_of(job), pod, text, truncated)
        created, existing = await asyncio.to_thread(self.api.create_or_get, configmap)
        if not created and existing is not None and not controlled_by(existing, uid):
            log.warning("%s/%s: ConfigMap %s belongs to another owner: the log of %s is not kept", run.namespace,
                        run.name, configmap["metadata"]["name"], job["metadata"]["name"])

    # The budget ------------------------------------------------------------------------------
    def _changed(self, old: Body | None, new: Body | None) -> None:
        ns = key_of(new or old or {})[0]
        count, total = self._bytes.get(ns, (0, 0))
        for body, sign in ((old, -1), (new, 1)):
            if body is not None:
                count, total = count + sign, total + sign * (kept_size(body) or 0)
        if new is None and old is not None:
            self._evicting.pop(uid_of(old) or "", None)
        if count:
            self._bytes[ns] = count, total
            metrics.KEPT_LOGS.labels(ns).set(count)
            metrics.KEPT_LOG_BYTES.labels(ns).set(total)
        else:
            self._bytes.pop(ns, None)
            for gauge in (metrics.KEPT_LOGS, metrics.KEPT_LOG_BYTES):
                try:
                    gauge.remove(ns)
                except KeyError:
                    pass
        if new is not None and self.budget and total > self.budget:
            self.queue.add(ns)

    def kept_bytes(self, namespace: str) -> int:
        return self._bytes.get(namespace, (0, 0))[1]

    async def evict(self, namespace: str) -> None:
        """Deletes the namespace's oldest kept logs until the rest fit in the budget."""
        now = time.monotonic()
        for uid in [u for u, until in self._evicting.items() if until < now]:
            del self._evicting[uid]
        logs = [b for b in self.store.by("namespace", namespace) if uid_of(b) not in self._evicting]
        for body in evictions(logs, self.budget):
            name, uid = body["metadata"]["name"], uid_of(body) or ""
            await asyncio.to_thread(self.api.delete, kube.CONFIGMAPS, namespace, name, uid)
            self._evicting[uid] = time.monotonic() + EVICTION_SECONDS
            metrics.KEPT_LOG_EVICTIONS.labels(namespace).inc()
            log.debug("%s: kept log %s evicted (the namespace's kept logs exceed %d bytes)", namespace, name,
                      self.budget)

    # Running ----------------------------------------------------------------------------------
    def start(self, scopes: list[str | None], selector: str, loop: asyncio.AbstractEventLoop,
              timing: Timing) -> list[Reflector]:
        """The kept logs' informers (one per namespace watched, or one for all) and the eviction
        worker; ``selector`` picks the operator instance's objects."""
        reflectors = [Reflector(self.store, kube.CONFIGMAP_METADATA, ns, f"{KEPT_LOG_SELECTOR},{selector}", loop,
                                timing) for ns in scopes]
        for reflector in reflectors:
            reflector.start()
        self.queue.start()
        return reflectors

    async def stop(self) -> None:
        await self.queue.stop()
