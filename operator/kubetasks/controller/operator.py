"""The kopf operator: handlers that only feed the cache and the work queues.

kopf watches Tasks, TaskRuns and the Jobs kubetasks made; every event updates the in-memory
cache and queues a key. Reconcilers (``runs``, ``tasks``) do the work, level-based, so a missed
or repeated event changes nothing and a restarted operator picks up where the world stands.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, cast

import kopf
from prometheus_client import start_http_server

from kubetasks import kube
from kubetasks.api.common import GROUP, VERSION
from kubetasks.controller import metrics
from kubetasks.controller.cache import Cache, Key
from kubetasks.controller.queue import WorkQueue
from kubetasks.controller.runs import RunReconciler
from kubetasks.controller.tasks import TaskReconciler
from kubetasks.core.naming import LABEL_MANAGED_BY, MANAGER

log = logging.getLogger("kubetasks")


class Operator:
    def __init__(self) -> None:
        self.cache = Cache()
        self.runs = RunReconciler(self.cache, self.run_changed)
        self.tasks = TaskReconciler(self.cache)
        self.run_queue = WorkQueue("taskruns", self.runs.reconcile, workers=int(os.environ.get("KUBETASKS_WORKERS", "8")))
        self.task_queue = WorkQueue("tasks", self.tasks.reconcile, workers=2)
        self.runs.enqueue = self.run_queue
        self.tasks.enqueue = self.task_queue

    def run_changed(self, namespace: str, task: str, run: str) -> None:
        """A run's phase changed: its Task's status, queued runs and duplicates may follow."""
        self.task_queue.add((namespace, task))
        for body in self.cache.runs_of_task(namespace, task):
            status = body.get("status") or {}
            if body["metadata"]["name"] != run and (not status.get("attempt") or status.get("duplicateOf")):
                self.run_queue.add((namespace, body["metadata"]["name"]))

    def task_changed(self, namespace: str, task: str) -> None:
        self.task_queue.add((namespace, task))
        for body in self.cache.runs_of_task(namespace, task):
            if not (body.get("status") or {}).get("attempt"):
                self.run_queue.add((namespace, body["metadata"]["name"]))

    def prime(self, namespaces: list[str]) -> None:
        """Lists everything once before the queues start, so the first decisions (concurrency
        slots, idempotency keys) see every existing run, not just those listed so far."""
        for ns in namespaces or [None]:  # type: ignore[list-item]
            for body in kube.list_custom("tasks", ns):
                self.cache.put_task(body)
            for body in kube.list_custom("taskruns", ns):
                self.cache.put_run(body)
            for body in kube.list_jobs(ns, f"{LABEL_MANAGED_BY}={MANAGER}"):
                self.cache.put_job(body)

    def start(self) -> None:
        from kubetasks.controller.cron import Scheduler

        self.tasks.schedule = Scheduler(self.cache, self.task_queue, self.run_queue)
        self.run_queue.start()
        self.task_queue.start()
        for key in self.cache.tasks:
            self.task_queue.add(key)
        for key in self.cache.runs:
            self.run_queue.add(key)


OPERATOR = Operator()


def namespaces() -> list[str]:
    return [n for n in os.environ.get("KUBETASKS_NAMESPACES", "").split(",") if n]


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # Both kopf's own login and the official client are available: use the client's view.
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.batching.worker_limit = 64
    loop = asyncio.get_running_loop()
    from concurrent.futures import ThreadPoolExecutor

    loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="kube"))
    port = int(os.environ.get("KUBETASKS_METRICS_PORT", "9090"))
    if port:
        start_http_server(port)
    await asyncio.to_thread(OPERATOR.prime, namespaces())
    OPERATOR.start()
    asyncio.create_task(_report_queue_depth())


async def _report_queue_depth() -> None:
    while True:
        metrics.QUEUE_DEPTH.labels("taskruns").set(len(OPERATOR.run_queue))
        metrics.QUEUE_DEPTH.labels("tasks").set(len(OPERATOR.task_queue))
        await asyncio.sleep(5)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    await OPERATOR.run_queue.stop()
    await OPERATOR.task_queue.stop()


# The event handlers are async on purpose: they only touch memory, and running them on the
# event loop (not in kopf's thread pool, as sync handlers are) keeps the cache and the
# asyncio work queues single-threaded.
@kopf.on.event(GROUP, VERSION, "tasks")
async def task_event(event: kopf.RawEvent, namespace: str | None, name: str, **_: Any) -> None:
    key = _key(namespace, name)
    if event["type"] == "DELETED":
        OPERATOR.cache.drop_task(key)
        return
    OPERATOR.cache.put_task(_body(event))
    OPERATOR.task_changed(*key)


@kopf.on.event(GROUP, VERSION, "taskruns")
async def run_event(event: kopf.RawEvent, namespace: str | None, name: str, **_: Any) -> None:
    key, body = _key(namespace, name), _body(event)
    if event["type"] == "DELETED":
        OPERATOR.cache.drop_run(key)
        OPERATOR.run_changed(key[0], body["spec"]["taskRef"], name)
        return
    OPERATOR.cache.put_run(body)
    OPERATOR.run_queue.add(key)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGER})
async def job_event(event: kopf.RawEvent, namespace: str | None, name: str, **_: Any) -> None:
    if event["type"] == "DELETED":
        run = OPERATOR.cache.drop_job(_key(namespace, name))
    else:
        run = OPERATOR.cache.put_job(_body(event))
    if run:
        OPERATOR.run_queue.add(run)


def _key(namespace: str | None, name: str) -> Key:
    return namespace or "", name  # every kind watched here is namespaced


def _body(event: kopf.RawEvent) -> dict[str, Any]:
    return cast(dict[str, Any], event["object"])
