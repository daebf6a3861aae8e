"""Keeping each finished attempt's log after its pod is gone (what to keep: core.logs).

The run reconciler calls :meth:`KeptLogs.keep` after it wrote the run's status, once per
reconcile: each attempt whose Job finished gets one try, whatever its outcome, so a slow or
failing read never holds up a run and a failure is a log line, never the run's.

Reading the log is the same wherever it is kept; where it goes is a :class:`LogDestination`:
ConfigMaps within a byte budget per namespace (controller.log_configmaps) today. An object store,
which logs of any length belong in, would be another destination.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Protocol

from kubetasks import kube
from kubetasks.api.taskrun import TaskRun
from kubetasks.controller.cache import Body, Cache, uid_of
from kubetasks.controller.log_configmaps import ConfigMapLogs, log_budget_bytes
from kubetasks.controller.pods import finished_job_pods
from kubetasks.informer.reflector import Reflector, Timing
from kubetasks.core.logs import (DEFAULT_KEEP_BYTES, MAX_KEEP_BYTES, LoglessNodes, last_pod, lines_to_fill, log_tail,
                                 log_window, read_again)

log = logging.getLogger(__name__)
LOG_WARNING_EVERY = 60.0  # seconds: a log not kept is a warning this often, else debug (kwok pods have no log)


def log_keep_bytes(value: str | None) -> int:
    """KUBETASKS_LOG_KEEP_BYTES: 0 keeps no logs; at most what a ConfigMap holds."""
    return max(0, min(int(value or DEFAULT_KEEP_BYTES), MAX_KEEP_BYTES))


class LogDestination(Protocol):
    """Where kept logs go."""

    async def has(self, run: TaskRun, uid: str, job: str) -> bool:
        """Whether the log of the run's Job named ``job`` is kept (asked after a restart)."""

    async def put(self, run: TaskRun, uid: str, job: Body, pod: str, text: str, truncated: bool) -> None:
        """Keeps ``text``, the end of the log of ``pod`` of the run's ``job`` (cut when ``truncated``)."""


class KeptLogs:
    def __init__(self, cache: Cache, api: ModuleType | Any = kube) -> None:
        self.api = api  # kubetasks.kube, or a fake with the same functions in tests
        self.cache = cache
        self.keep_bytes = DEFAULT_KEEP_BYTES
        self.configmaps = ConfigMapLogs(cache, api)
        self.destination: LogDestination = self.configmaps
        self._kept: dict[str, set[str]] = {}  # run uid -> Jobs whose log was kept (or tried once)
        self._warned = -LOG_WARNING_EVERY
        self.logless_nodes = LoglessNodes()  # the rule the dashboard follows too (core.logs)
        # Nodes not yet known to give logs, each with its one read under way: a burst of attempts
        # ending on a kwok node (or a down kubelet) costs one failed read, not one per attempt.
        self._probing: dict[str, asyncio.Event] = {}
        cache.runs.listeners.append(self._run_changed)

    def configure(self, env: Mapping[str, str]) -> None:
        self.keep_bytes = log_keep_bytes(env.get("KUBETASKS_LOG_KEEP_BYTES"))
        self.configmaps.budget = log_budget_bytes(env.get("KUBETASKS_LOG_BUDGET_BYTES"))

    def start(self, scopes: list[str | None], selector: str, loop: asyncio.AbstractEventLoop,
              timing: Timing) -> list[Reflector]:
        """The kept logs' informers, for the operator to wait on and watch over, and their budget's worker."""
        return self.configmaps.start(scopes, selector, loop, timing)

    async def stop(self) -> None:
        await self.configmaps.stop()

    def _run_changed(self, old: Body | None, new: Body | None) -> None:
        if new is None and old is not None:  # deleted, finished or not: nothing of it is needed any more
            self.forget(uid_of(old) or "")

    def forget(self, uid: str) -> None:
        """The run is finished or gone: what was remembered of its attempts is not needed any more."""
        self._kept.pop(uid, None)

    async def _call(self, fn: str, *args: Any) -> Any:
        return await asyncio.to_thread(getattr(self.api, fn), *args)

    async def keep(self, run: TaskRun, uid: str, jobs: list[Body], pods: dict[str, list[Body]]) -> None:
        """Keeps the log of each attempt whose Job finished (core.logs), once: one try per attempt,
        whatever its outcome. An attempt whose outcome the status had already recorded was seen
        by an operator before a restart: its log is read only if none is kept yet."""
        if not self.keep_bytes:
            return
        done = self._kept.setdefault(uid, set())
        recorded = {a.job_name for a in run.status.attempts if a.reason}
        for job in jobs:
            name = job["metadata"]["name"]
            if name in done or not self.cache.attempt_ended(job):
                continue
            done.add(name)
            try:
                await self._keep_one(run, uid, job, pods.get(name), name in recorded)
            except Exception as e:
                self._not_kept(run, name, e)

    async def _keep_one(self, run: TaskRun, uid: str, job: Body, pods: list[Body] | None, recorded: bool) -> None:
        ns, name = run.namespace, job["metadata"]["name"]
        if recorded and await self.destination.has(run, uid, name):
            return
        if pods is None:  # not read by the reconcile (a restart after the outcome was recorded)
            pods = await finished_job_pods(self.cache, self.api, ns, name)
        pod = last_pod(pods or [])
        if pod is None:
            log.debug("%s/%s: no pod of %s is left: its log is not kept", ns, run.name, name)
            return
        pod_name, node = pod["metadata"]["name"], (pod.get("spec") or {}).get("nodeName") or ""
        while (probe := self._probing.get(node)) is not None:
            await probe.wait()  # the first read from a node not known to give logs says whether it does
        if self.logless_nodes.quiet(node, time.monotonic()):
            log.debug("%s/%s: node %s gave no log lately: the log of %s is not kept", ns, run.name, node, name)
            return
        if node and not self.logless_nodes.gave_log(node):
            probe = self._probing[node] = asyncio.Event()
        keep = self.keep_bytes
        lines, cap = log_window(keep)
        try:
            data = await self._call("read_log", ns, pod_name, lines, cap)
            self.logless_nodes.read(node)
            if read_again(data, keep, lines, cap):  # lines longer or shorter than guessed (core.logs)
                lines = lines_to_fill(data, keep)
                data = await self._call("read_log", ns, pod_name, lines, cap)
        except Exception as e:
            if kube.is_status(e, 404):
                log.debug("%s/%s: pod %s is gone: the log of %s is not kept", ns, run.name, pod_name, name)
                return
            self.logless_nodes.failed(node, getattr(e, "status", None), time.monotonic())
            raise
        finally:
            if probe is not None:
                del self._probing[node]
                probe.set()
        text, truncated = log_tail(data, keep, lines, cap)
        await self.destination.put(run, uid, job, pod_name, text, truncated)

    def _not_kept(self, run: TaskRun, job: str, error: Exception) -> None:
        now = time.monotonic()
        level = logging.DEBUG
        if now >= self._warned + LOG_WARNING_EVERY:
            level, self._warned = logging.WARNING, now
        log.log(level, "%s/%s: the log of %s is not kept: %s (at most one such warning a minute)",
                run.namespace, run.name, job, kube.error_line(error, 300))
