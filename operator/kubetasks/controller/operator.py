"""The operator: kopf for the process (login, startup, liveness, shutdown), informers and work
queues for the controllers.

Reflectors keep a store per kind (Tasks, TaskRuns, and the Jobs kubetasks made and their pods) in step with
the API server; every change queues the keys it concerns (see :mod:`kubetasks.core.wakeups`),
and the reconcilers (``runs``, ``tasks``) act level-based: a missed, repeated or reordered
event changes nothing, and a restarted operator picks up where the world stands.

kopf's own watches are not used for these kinds: they relist after 410 Gone without saying
what vanished, and they would be a second stream of the same objects.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Iterator
from datetime import timedelta
from types import ModuleType
from typing import Any

import kopf

from kubetasks import blobs, kube
from kubetasks.api.storage import BlobRef
from kubetasks.controller import admission_server, grant_server, metrics, metrics_server, results, token_completion
from kubetasks.controller.metadata import COALESCE_SECONDS, ancestors_to_wake, digest_of
from kubetasks.controller.blob_gc import GRACE_SECONDS, SWEEP_SECONDS, BlobSweeper
from kubetasks.controller.cache import Body, Cache, Key, key_of
from kubetasks.controller.events import EventReconciler
from kubetasks.controller.queue import WorkQueue
from kubetasks.controller.queue_status import QueueReconciler
from kubetasks.informer.reflector import Reflector, Timing
from kubetasks.controller.runs import RunReconciler
from kubetasks.controller.tasks import TaskReconciler
from kubetasks.core.children import controller_uid, pod_turned
from kubetasks.core.grants import grant_margin
from kubetasks.core.reach import refused_namespaces
from kubetasks.core.naming import LABEL_MANAGED_BY, MANAGER, instance_selector
from kubetasks.core.wakeups import (
    after_task_change, parent_to_wake, phase_of, run_to_wake_for_token, task_spec_changed, unfinished,
)

log = logging.getLogger("kubetasks")


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


TASK_STATUS_BATCH_SECONDS = 1.0  # a TaskQueue's status too


class Operator:
    def __init__(self, api: ModuleType | Any = kube, workers: int = 8) -> None:
        self.cache = Cache()
        self.runs = RunReconciler(self.cache, api)
        self.tasks = TaskReconciler(self.cache, api)
        self.run_queue = WorkQueue("taskruns", self.runs.reconcile, workers=workers)
        self.task_queue = WorkQueue("tasks", self.tasks.reconcile, workers=2)
        # A run a freed slot lets start goes ahead of status echoes: the slot waits for it.
        self.runs.flow.wake = lambda key: self.run_queue.add(key, first=True)
        self.runs.archive.wake = self.run_queue.add  # a log archived (or given up): its outcome may be written
        self.tasks.flow = self.runs.flow  # a Task's status lists its limit's holders
        self.queue_status = QueueReconciler(self.cache, self.runs.flow, api)
        self.queue_queue = WorkQueue("taskqueues", self.queue_status.reconcile, workers=1)
        self.events = EventReconciler(self.cache, api)
        self.event_queue = WorkQueue("taskevents", self.events.reconcile, workers=4)
        self.admission = self.runs.queues  # the admission webhook's memory
        self.reflectors: list[Reflector] = []
        self._resyncs: asyncio.Task[None] | None = None
        self.sweeper: BlobSweeper | None = None  # with an object store: its blobs of runs gone
        self._sweeps: asyncio.Task[None] | None = None
        self.cache.tasks.listeners.append(self.task_changed)
        self.cache.runs.listeners.append(self.run_changed)
        self.cache.jobs.listeners.append(self.job_changed)
        self.cache.job_pods.listeners.append(self.pod_changed)
        self.cache.queues.listeners.append(self.queue_changed)
        self.runs.metadata.store.listeners.append(self.metadata_changed)
        self.cache.waitpoints.listeners.append(self.waitpoint_changed)
        self.cache.events.listeners.append(self.event_changed)

    # What a change wakes -------------------------------------------------------------------
    def task_changed(self, old: Body | None, new: Body | None) -> None:
        ns, name = key_of(new or old or {})
        if task_spec_changed(old, new):
            # Not on its status write's echo: reconciled at once, it wrote again what its runs
            # had changed since, twice per batch period (below) in a burst.
            self.task_queue.add((ns, name))
        for run in after_task_change(old, new, lambda: self.cache.runs_of_task(ns, name)):
            self.run_queue.add((ns, run))

    def run_changed(self, old: Body | None, new: Body | None) -> None:
        body = new or old
        assert body is not None
        ns, name = key_of(body)
        task = (body.get("spec") or {}).get("taskRef", "")
        if new is not None:
            self.run_queue.add((ns, name), first=old is None)  # a new run: its Job before others' updates
        parent = parent_to_wake(old, new)
        if parent is not None:  # ahead of status echoes, as a freed slot's next run: it may resume now
            self.run_queue.add((ns, parent), first=True)
        for ancestor in ancestors_to_wake(self.cache, old, new):  # its ctx.metadata.parent/.root changed
            # A second later, once for all the children that changed meanwhile (its writes are
            # one a second anyway): a fan-out of a thousand children costs a parent no more.
            self.run_queue.add_after(ancestor, COALESCE_SECONDS)
        if phase_of(old) != phase_of(new):
            # A Task's status sums up its runs: a burst of phase changes is written once per
            # batch period (as the Job controller batches its pods' updates), not once each.
            self.task_queue.add_after((ns, task), TASK_STATUS_BATCH_SECONDS)
        self._queue_status_later(body)

    def job_changed(self, old: Body | None, new: Body | None) -> None:
        owner = controller_uid(new or old or {})
        run = self.cache.run_by_uid(owner) if owner else None
        if run is not None:
            self.run_queue.add(key_of(run))
            self._queue_status_later(run)

    def pod_changed(self, old: Body | None, new: Body | None) -> None:
        """A pod that succeeded ends its attempt a second or more before its Job says so
        (core.observe.succeeded_pod): its run is looked at now."""
        if not pod_turned(old, new, {"Succeeded"}):
            return
        job = self.cache.job_of(new or {})
        if job is not None:
            self.job_changed(None, job)

    def metadata_changed(self, old: Body | None, new: Body | None) -> None:
        """A run's pod wrote new ctx.metadata (its checkpoint's digest label changed)."""
        if new is not None and digest_of(new) != digest_of(old):
            run = self.runs.metadata.run_of(new)
            if run is not None:
                self.run_queue.add(key_of(run))

    def waitpoint_changed(self, old: Body | None, new: Body | None) -> None:
        run = run_to_wake_for_token(old, new)
        if run is not None:  # ahead of status echoes, as a child's end: it may resume now
            self.run_queue.add((key_of(new or old or {})[0], run), first=True)

    def event_changed(self, old: Body | None, new: Body | None) -> None:
        if new is not None and old is None:  # sent (or listed at start): its status echoes change nothing
            self.event_queue.add(key_of(new))
            ns, event = key_of(new)[0], str((new.get("spec") or {}).get("event", ""))
            for run in self.cache.waiting_for_event(ns, event):  # ctx.step.wait_for_event: it may resume now
                self.run_queue.add(key_of(run), first=True)

    def queue_changed(self, old: Body | None, new: Body | None) -> None:
        if task_spec_changed(old, new):  # not its status write's echo
            self.queue_queue.add(key_of(new or old or {}))

    def _queue_status_later(self, run: Body) -> None:
        """A change of a run or its Job may change its TaskQueue's running or waiting: written once
        per batch period, however many runs changed."""
        ns = run["metadata"].get("namespace", "")
        spec = self.runs.flow.task_spec(ns, (run.get("spec") or {}).get("taskRef", ""))
        if spec is not None and spec.queue:
            self.queue_queue.add_after((ns, spec.queue), TASK_STATUS_BATCH_SECONDS)

    def resynced(self, spread: float = 0.0) -> None:
        """client-go's resync, from the stores (no request): every unfinished run and every Task is
        looked at again, so no wake-up lost to a fault is lost for long. Each key is queued after
        a random delay within ``spread`` seconds, so a resync is a trickle, not a burst."""
        def add(queue: WorkQueue[Key], key: Key) -> None:
            if spread > 0:
                queue.add_after(key, random.uniform(0, spread))
            else:
                queue.add(key)

        for key in self.cache.tasks.keys():
            add(self.task_queue, key)
        for key in self.cache.queues.keys():
            add(self.queue_queue, key)
        for key in self.cache.events.keys():
            add(self.event_queue, key)
        for key in self.cache.runs.keys():
            body = self.cache.runs.get(key)
            if body is not None and unfinished(body):
                add(self.run_queue, key)

    async def _resync_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.resynced(spread=seconds)

    # Running ---------------------------------------------------------------------------------
    async def start(self, namespaces: list[str], resync_seconds: float, instance: str | None = None,
                    timing: Timing = Timing()) -> None:
        """Starts the informers, then (once every store but the pods' has its first list) the workers, and a
        resync every ``resync_seconds``. Only the Tasks and TaskRuns of this operator ``instance``
        are seen (naming.LABEL_INSTANCE), and the Jobs made for them."""
        from kubetasks.controller.cron import Scheduler

        self.tasks.schedule = Scheduler(self.cache, self.task_queue, self.run_queue)
        loop = asyncio.get_running_loop()
        mine = instance_selector(instance)
        kinds = ((self.cache.tasks, kube.TASKS, mine), (self.cache.queues, kube.TASKQUEUES, mine),
                 (self.cache.runs, kube.TASKRUNS, mine), (self.cache.waitpoints, kube.WAITPOINTS, mine),
                 (self.cache.events, kube.TASKEVENTS, mine),
                 (self.cache.jobs, kube.JOBS, f"{LABEL_MANAGED_BY}={MANAGER},{mine}"),
                 (self.cache.job_pods, kube.PODS, f"{LABEL_MANAGED_BY}={MANAGER},{mine}"))  # their pods carry the labels
        scopes: list[str | None] = list(namespaces) or [None]  # None: all namespaces
        for namespace in scopes:
            for store, resource, selector in kinds:
                reflector = Reflector(store, resource, namespace, selector, loop, timing)
                self.reflectors.append(reflector)
                reflector.start()
        self.reflectors += self.runs.logs.start(scopes, mine, loop, timing)  # and their budget
        self.reflectors += self.runs.metadata.start(scopes, f"{LABEL_MANAGED_BY}={MANAGER},{mine}", loop, timing)
        # Not on the pods' first list: until it is in, a finished attempt's pods are listed
        # (controller.pods), and a ClusterRole without `watch` on pods (an older chart's) only
        # costs those lists.
        await asyncio.gather(*(r.synced.wait() for r in self.reflectors if r.store is not self.cache.job_pods))
        log.info("informers synced: %d Tasks, %d TaskRuns, %d Jobs", len(self.cache.tasks), len(self.cache.runs),
                 len(self.cache.jobs))
        await self.runs.find_access_left(scopes, f"{LABEL_MANAGED_BY}={MANAGER},{mine}")
        self.run_queue.start()
        self.task_queue.start()
        self.queue_queue.start()
        self.event_queue.start()
        self.resynced()
        self._resyncs = asyncio.create_task(self._resync_every(resync_seconds), name="resync")
        if self.sweeper is not None:
            self._sweeps = asyncio.create_task(self.sweeper.run(), name="blob-sweep")

    async def stop(self) -> None:
        for task in (self._resyncs, self._sweeps):
            if task:
                task.cancel()
        for reflector in self.reflectors:
            reflector.stop()
        await self.run_queue.stop()
        await self.task_queue.stop()
        await self.queue_queue.stop()
        await self.event_queue.stop()
        await self.runs.logs.stop()
        await self.runs.archive.stop()

    def health(self, stall_seconds: float) -> str | None:
        """Why the operator is not healthy, or None."""
        dead = [r.resource.plural for r in self.reflectors if not r.alive]
        if dead:
            return f"informers stopped: {', '.join(dead)}"
        for queue in (self.run_queue, self.task_queue):
            if queue.stalled(stall_seconds):
                return f"{queue.name}: {len(queue)} keys waiting and none done for {stall_seconds:.0f}s"
        return None


# Reconciles mostly wait on the API server (in threads): 32 keep a 1000-run burst's Jobs under a
# second behind their runs on the 2-core development VM, where 8 left them 19 s behind (bench/).
WORKERS = int(os.environ.get("KUBETASKS_WORKERS", "32"))
OPERATOR = Operator(workers=WORKERS)


def namespaces() -> list[str]:
    return [n for n in os.environ.get("KUBETASKS_NAMESPACES", "").split(",") if n]


def instance_id() -> str | None:
    return os.environ.get("KUBETASKS_INSTANCE_ID") or None


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # Both kopf's own login and the official client are available: use the client's view.
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = 60
    loop = asyncio.get_running_loop()
    from concurrent.futures import ThreadPoolExecutor

    loop.set_default_executor(ThreadPoolExecutor(max_workers=WORKERS + 8, thread_name_prefix="kube"))
    store = blobs.from_env()  # None: no object store, and the limits of etcd hold
    OPERATOR.runs.results.store = store
    OPERATOR.runs.results.grant_margin = grant_margin(os.environ.get("KUBETASKS_STORAGE_GRANT_MARGIN_SECONDS"))
    OPERATOR.runs.payloads.configure(os.environ, store, namespaces())
    _metrics.append(await metrics_server.serve(explain=explain_run, open_result=open_result,
                                               open_log=OPERATOR.runs.archive.open, payloads=OPERATOR.runs.payloads))
    _metrics.append(await admission_server.serve(OPERATOR.admission, lambda: OPERATOR.cache.synced))
    # A filesystem store's presigned URLs are the operator's to serve (every replica: a pod may
    # reach any through the Service, and the key is in the shared store).
    _metrics.append(await grant_server.serve(store, os.environ))
    # Signed completion URLs of tokens (opt-in): the run key goes into each SDK attempt's grant.
    OPERATOR.runs.results.token_urls = token_completion.TokenUrls.from_env(os.environ)
    _metrics.append(await token_completion.serve(OPERATOR.runs.results.token_urls, os.environ, namespaces()))
    # In the background: kopf serves liveness only once startup handlers return, and the first
    # lists of a large cluster take a while.
    resync = _env_float("KUBETASKS_RESYNC_SECONDS", 300)
    timing = Timing(relist_seconds=_env_float("KUBETASKS_RELIST_SECONDS", Timing.relist_seconds),
                    watch_seconds=_env_float("KUBETASKS_WATCH_SECONDS", Timing.watch_seconds))
    OPERATOR.events.retention = timedelta(seconds=_env_float("KUBETASKS_EVENT_RETENTION_SECONDS", 86400))
    OPERATOR.runs.start_deadline = _env_float("KUBETASKS_START_DEADLINE_SECONDS", OPERATOR.runs.start_deadline)
    OPERATOR.runs.logs.configure(os.environ)
    OPERATOR.runs.tracing.configure(os.environ)
    OPERATOR.runs.archive.configure(os.environ, store)
    OPERATOR.runs.max_trigger_depth = int(os.environ.get("KUBETASKS_MAX_TRIGGER_DEPTH") or OPERATOR.runs.max_trigger_depth)
    OPERATOR.runs.refused_namespaces = refused_namespaces(os.environ.get("KUBETASKS_REFUSED_NAMESPACES"))
    if store is not None:
        log.info("object store %s: values above %d bytes go there", store.config.url, store.config.threshold)
        OPERATOR.sweeper = BlobSweeper(store, OPERATOR.cache, namespaces(),
                                       _env_float("KUBETASKS_STORAGE_SWEEP_SECONDS", SWEEP_SECONDS),
                                       _env_float("KUBETASKS_STORAGE_SWEEP_GRACE_SECONDS", GRACE_SECONDS))
    _background.append(asyncio.create_task(OPERATOR.start(namespaces(), resync, instance_id(), timing), name="informers"))
    _background.append(asyncio.create_task(_report_queue_depth(), name="queue-depth"))


def explain_run(namespace: str, name: str) -> dict[str, Any] | None:
    """Why the run waits, live (/why on the metrics port); None when this operator has no such run."""
    body = OPERATOR.cache.runs.get((namespace, name))
    return None if body is None else OPERATOR.runs.flow.explain(body)


def open_result(namespace: str, name: str) -> tuple[BlobRef, Iterator[bytes]]:
    """A run's store-held result, for /results on the metrics port (its caller reviewed there)."""
    return results.open_result(OPERATOR.runs.results.store, lambda ns, n: kube.get(kube.TASKRUNS, ns, n),
                               namespace, name)


_background: list[asyncio.Task[None]] = []
_metrics: list[metrics_server.web.AppRunner | None] = []  # the metrics endpoint, the webhook, the grants (None: off)


async def _report_queue_depth() -> None:
    while True:
        metrics.QUEUE_DEPTH.labels("taskruns").set(len(OPERATOR.run_queue))
        metrics.QUEUE_DEPTH.labels("tasks").set(len(OPERATOR.task_queue))
        await asyncio.sleep(5)


@kopf.on.probe(id="controller")
async def health(**_: Any) -> str:
    problem = OPERATOR.health(_env_float("KUBETASKS_STALL_SECONDS", 120))
    if problem:
        raise kopf.PermanentError(problem)  # the liveness endpoint answers 500
    return "ok"


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for task in _background:
        task.cancel()
    for runner in _metrics:
        if runner is not None:
            await runner.cleanup()
    await OPERATOR.stop()
    OPERATOR.runs.tracing.shutdown()  # the spans still batched

