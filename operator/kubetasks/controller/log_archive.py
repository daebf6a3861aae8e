"""Each finished attempt's whole log, streamed from its pod into the object store; and the outcome
held until it is there (when to retry or give up: core.log_archive).

The run reconciler asks :meth:`LogArchive.hold` before each write: it starts an upload for every
attempt whose Job finished and whose log is not archived yet, writes the refs of those archived
into the attempts' records (``status.attempts[].log``: where `kubetasks logs` finds it; in the
status, not in the kept-tail ConfigMap, which the namespace's byte budget may evict), and, while
an upload is under way, holds back a plan that would finish the run: the run stays as it was, with
a ``LogArchived`` condition saying what it waits for. An upload's end wakes the run.

The kubelet serves only a container's current log file: one it rotated away while the container
ran (past its containerLogMaxSize, 10 MiB by default, checked every 10 s) is not in a read after
the end, nor in a follow that starts after the rotation. So an attempt's log is followed from its
container's start until it ends, which the kubelet's follow does across rotations: asked for as soon
as the pod is bound to a node, and again while the kubelet answers that the container waits to start
(its own view: nothing waits for the pod's status to reach the API server and the informer). At
most FOLLOWERS at once, each a thread of its own and one stream. An attempt not followed (too many
at once, a restart, a follow cut) is read when it ends, at most UPLOADS_AT_ONCE at a time; such a
log, and one whose container already ran when its follow began, may lack what the kubelet rotated
away before: the LogArchived condition says so. Either way the log is read in chunks
and written as a multipart upload, never whole in memory. A store that refuses is tried again with backoff; past the deadline the upload fails for
good, and the outcome is written with ``LogArchived=False`` and a Warning Event. A log that cannot
be read (the pod gone, a node that gives none, as kwok's) is nothing the store could mend: no wait.

A restarted operator finds finished attempts without a ref and archives them again (the same path:
an upload overwrites a half-done one).
"""

from __future__ import annotations

import asyncio
import logging
import time
import threading
from dataclasses import replace
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any, TypeVar

from kubetasks import kube
from kubetasks.api.storage import BlobRef, log_path
from kubetasks.api.taskrun import TaskRun
from kubetasks.blobs import BlobStore, error_line as store_error
from kubetasks.controller.cache import Body, Cache, Key, attempt_of, key_of
from kubetasks.core.children import POD_ENDED, pod_phase
from kubetasks.core.conditions import condition, get_condition, set_condition
from kubetasks.core.log_archive import (CONDITION, DEFAULT_DEADLINE, FAILED, State, Upload, after_store_failure,
                                        failure_message, held_job_ttl, job_ttl,
                                        outcome_may_be_written)
from kubetasks.core.logs import LoglessNodes, last_pod
from kubetasks.core.naming import LABEL_RUN_UID
from kubetasks.core.plan import Event, Plan

log = logging.getLogger(__name__)
UPLOADS_AT_ONCE = 2  # each holds a thread, a kubelet stream and a multipart upload's parts
FOLLOWERS = 8  # attempts whose logs are followed at once, from when bound (more are read when they end)
# While the kubelet says a bound pod's container waits to start: ask again after 0.2, 0.4 ... 1 s,
# for at most ATTACH_DEADLINE (an image pull, say); then it is read when it ends, or followed when
# the informer shows it running.
ATTACH_FIRST, ATTACH_MAX, ATTACH_DEADLINE = 0.2, 1.0, 300.0
RECHECK = 30.0  # seconds between looks at a run whose outcome waits for its log


def upload_deadline(value: str | None) -> float:
    """KUBETASKS_STORAGE_UPLOAD_DEADLINE_SECONDS: how long a store may stay down before a log is given up."""
    return max(1.0, float(value or DEFAULT_DEADLINE))


class SourceFailed(Exception):
    """The pod's log could not be read (not the store's fault)."""


class NotStarted(SourceFailed):
    """The kubelet has no log yet: the pod's container waits to start (or the kubelet has yet to
    see the pod)."""


class LogArchive:
    def __init__(self, api: ModuleType | Any = kube, store: BlobStore | None = None,
                 logless: LoglessNodes | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.store = store  # None: no object store, nothing archived, nothing held
        self.deadline = DEFAULT_DEADLINE
        self.logless = logless or LoglessNodes()
        self.clock = clock
        self.wake: Callable[[Key], None] = lambda key: None  # the operator's: queue the run again
        self.uploads: dict[tuple[str, int], Upload] = {}  # (run uid, attempt) -> its upload
        self.refs: dict[tuple[str, int], BlobRef] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(UPLOADS_AT_ONCE)
        self._following = 0
        self.cache: Cache | None = None

    def attach(self, cache: Cache) -> None:
        """Follows each attempt's log from when its pod is bound (the pods' informer)."""
        self.cache = cache
        cache.job_pods.listeners.append(self._pod_changed)
        cache.runs.listeners.append(self._run_changed)

    def _run_changed(self, old: Body | None, new: Body | None) -> None:
        if new is None and old is not None:  # deleted: an upload under way forgets it when it ends
            self.forget(str(old["metadata"].get("uid") or ""))

    def configure(self, env: Mapping[str, str], store: BlobStore | None) -> None:
        self.store = store
        self.deadline = upload_deadline(env.get("KUBETASKS_STORAGE_UPLOAD_DEADLINE_SECONDS"))

    def forget(self, uid: str) -> None:
        for key in [k for k in self.uploads if k[0] == uid and self.uploads[k].state != State.UPLOADING]:
            self.uploads.pop(key, None)
            self.refs.pop(key, None)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # The hook the run reconciler calls ---------------------------------------------------------
    def hold(self, run: TaskRun, uid: str, jobs: list[Body], pods: dict[str, list[Body]], plan: Plan,
             now: datetime) -> Plan:
        """``plan``, with the archived logs' refs in its attempts; or, when it would finish the run
        while a log is still on its way, a plan that writes nothing but why it waits."""
        if self.store is None:
            return plan
        key = (run.namespace, run.name)
        recorded = {a.attempt for a in run.status.attempts if a.log is not None}
        finished = []
        for job in jobs:
            attempt = attempt_of(job)
            if not attempt or self.cache is None or not self.cache.attempt_ended(job):
                continue
            finished.append(attempt)
            if attempt not in recorded and (uid, attempt) not in self.uploads:
                self._start(key, run.namespace, uid, attempt, job["metadata"]["name"],
                            pods.get(job["metadata"]["name"]) or [])
        for record in plan.status.attempts:
            ref = self.refs.get((uid, record.attempt))
            if ref is not None and record.log is None:
                record.log = ref
        if not plan.status.phase.finished or run.status.phase.finished:
            return plan
        uploads = [self.uploads.get((uid, a)) for a in finished if a not in recorded]
        if plan.delete_jobs or plan.stop_job or plan.start_attempt or outcome_may_be_written(uploads):
            return self._outcome(run, uid, plan, now)
        status = run.status.model_copy(deep=True)
        for record in status.attempts:
            record.log = record.log or self.refs.get((uid, record.attempt))
        waiting = [a for a in finished if (u := self.uploads.get((uid, a))) is not None and u.state == State.UPLOADING]
        message = f"the outcome waits for the log of attempt {', '.join(map(str, waiting))} to reach the object store"
        errors = [u.error for a in waiting if (u := self.uploads[(uid, a)]).failures]
        if errors:
            message += f"; the store failed ({errors[-1]}), tried again for up to {self.deadline:.0f} s"
        status.conditions = set_condition(status.conditions, condition(
            CONDITION, "Unknown", "Uploading", message, now, status.observed_generation))
        # An upload's end wakes the run; looked at again meanwhile all the same (level-triggered: a
        # wake lost to an outage of the API server must not leave it waiting for the deadline).
        return Plan(status=status, requeue_at=now + timedelta(seconds=min(self.deadline, RECHECK)))

    def _outcome(self, run: TaskRun, uid: str, plan: Plan, now: datetime) -> Plan:
        """The outcome, saying whether every finished attempt's log was archived."""
        failed = [(a, u) for (u_id, a), u in sorted(self.uploads.items()) if u_id == uid and u.state == State.GAVE_UP]
        shown = get_condition(plan.status.conditions, CONDITION)
        if failed:
            message = "; ".join(failure_message(a, u, self.deadline) for a, u in failed)
            plan.status.conditions = set_condition(plan.status.conditions, condition(
                CONDITION, "False", FAILED, message, now, plan.status.observed_generation))
            if shown is None or shown.reason != FAILED:
                plan.events.append(Event("Warning", FAILED, message))
        elif any(a.log for a in plan.status.attempts) or shown is not None:
            late = [a for (u_id, a), u in sorted(self.uploads.items())
                    if u_id == uid and u.state == State.ARCHIVED and not u.from_start]
            plan.status.conditions = set_condition(plan.status.conditions, condition(
                CONDITION, "True", "Archived", archived_message(late), now, plan.status.observed_generation))
        return plan

    def keep_pods(self, job: Body) -> Body:
        """A Job about to be created, its TTL raised so that its pod outlives its log's read."""
        spec = job.get("spec") or {}
        if self.store is not None and "ttlSecondsAfterFinished" in spec:
            spec["ttlSecondsAfterFinished"] = job_ttl(spec["ttlSecondsAfterFinished"])
        return job

    # Uploads -------------------------------------------------------------------------------------
    def _start(self, key: Key, namespace: str, uid: str, attempt: int, job: str, pods: list[Body]) -> None:
        pod = last_pod(pods)
        node = ((pod or {}).get("spec") or {}).get("nodeName") or ""
        if pod is None or self.logless.quiet(node, self.clock()):
            why = "its pod is gone" if pod is None else f"node {node} gives no logs"
            self.uploads[(uid, attempt)] = Upload(self.clock(), state=State.NO_LOG, error=why)
            return
        self.uploads[(uid, attempt)] = Upload(self.clock())
        task = asyncio.get_running_loop().create_task(
            self._upload(key, namespace, uid, attempt, job, pod["metadata"]["name"], node),
            name=f"log-archive-{namespace}/{key[1]}-{attempt}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_job(self, namespace: str, job: str) -> None:
        """The store refused: the Job (its pod, its log) is kept until the upload's last try."""
        try:
            found = await asyncio.to_thread(self.api.get, kube.JOBS, namespace, job)
            ttl = held_job_ttl((found or {}).get("spec", {}).get("ttlSecondsAfterFinished"), self.deadline)
            if found is not None and ttl is not None:
                await asyncio.to_thread(self.api.merge_patch, kube.JOBS, namespace, job,
                                        {"spec": {"ttlSecondsAfterFinished": ttl}})
        except Exception as e:  # the log may then go with its pod: said, not fatal
            log.warning("%s: could not keep Job %s until its log is archived: %s", namespace, job, kube.error_line(e))

    def _ended(self, key: Key, uid: str) -> None:
        """An upload or follow ended: its run decides again, or, deleted meanwhile, is forgotten."""
        if self.cache is not None and self.cache.run_by_uid(uid) is None:
            self.forget(uid)
        self.wake(key)

    async def _upload(self, key: Key, namespace: str, uid: str, attempt: int, job: str, pod: str, node: str) -> None:
        path = log_path(namespace, uid, attempt)
        while True:
            async with self._slots:
                started = self.clock()
                try:
                    ref = await asyncio.to_thread(self._copy, namespace, pod, path, node)
                except SourceFailed as e:
                    self.uploads[(uid, attempt)] = Upload(started, state=State.NO_LOG, error=str(e))
                    log.info("%s/%s: the log of attempt %d is not archived: %s", *key, attempt, e)
                    break
                except Exception as e:  # the store's: down, unreachable, refusing
                    old = self.uploads[(uid, attempt)]
                    upload = Upload(old.first_try, old.failures + 1, error=store_error(e, 300),
                                    last_failure=self.clock())
                    step = after_store_failure(upload, self.clock(), self.deadline)
                    if step.give_up:
                        upload = replace(upload, state=State.GAVE_UP)
                    self.uploads[(uid, attempt)] = upload
                    log.warning("%s/%s: archiving the log of attempt %d failed (%d): %s%s", *key, attempt,
                                upload.failures, upload.error, "; given up" if step.give_up else "")
                    if step.give_up:
                        break
                    if upload.failures == 1:
                        await self._keep_job(namespace, job)
                    self.wake(key)  # its condition says what failed
                else:
                    self.refs[(uid, attempt)] = ref
                    self.uploads[(uid, attempt)] = Upload(self.uploads[(uid, attempt)].first_try, state=State.ARCHIVED)
                    log.info("%s/%s: the log of attempt %d archived: %d bytes in %.1f s", *key, attempt, ref.size,
                             self.clock() - started)
                    break
            await asyncio.sleep(max(0.0, step.at - self.clock()))
        self._ended(key, uid)

    # Following an attempt from its start -------------------------------------------------------------
    def _pod_changed(self, old: Body | None, new: Body | None) -> None:
        """A pod bound to a node whose container has not ended: its log is followed from the start."""
        if self.store is None or self.cache is None or new is None or not (new.get("spec") or {}).get("nodeName") \
                or _ended(new) or self._following >= FOLLOWERS:
            return
        meta = new["metadata"]
        job = self.cache.jobs.get((meta.get("namespace", ""), (meta.get("labels") or {}).get("job-name", "")))
        if job is None or not attempt_of(job):
            return
        uid, attempt = str((job["metadata"].get("labels") or {}).get(LABEL_RUN_UID) or ""), attempt_of(job)
        run = self.cache.run_by_uid(uid)
        node = new["spec"]["nodeName"]
        if run is None or (uid, attempt) in self.uploads or self.logless.quiet(node, self.clock()):
            return
        self.uploads[(uid, attempt)] = Upload(self.clock())
        self._following += 1
        task = asyncio.get_running_loop().create_task(self._follow(key_of(run), uid, attempt, meta["name"], node),
                                                      name=f"log-follow-{meta['namespace']}/{meta['name']}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, key: Key, uid: str, attempt: int, pod: str, node: str) -> None:
        started, delay, waited = self.clock(), ATTACH_FIRST, False
        try:
            while True:
                try:
                    ref = await in_daemon_thread(self._copy, key[0], pod, log_path(key[0], uid, attempt), node, True)
                    break
                except NotStarted:
                    if self.clock() - started >= ATTACH_DEADLINE or self._pod_ended(key[0], pod):
                        raise
                    waited = True
                    await asyncio.sleep(delay)
                    delay = min(ATTACH_MAX, delay * 2)
        except Exception as e:  # the store, the kubelet or the API server: read again once it ends
            self.uploads.pop((uid, attempt), None)
            log.info("%s/%s: following the log of attempt %d failed (%s): it is read when the attempt ends", *key,
                     attempt, kube.error_line(e, 300))
        else:
            # Asked before its container ran: the kubelet's follow began at the log's first byte.
            self.refs[(uid, attempt)] = ref
            self.uploads[(uid, attempt)] = Upload(started, state=State.ARCHIVED, from_start=waited)
            log.info("%s/%s: the log of attempt %d archived as it ran: %d bytes%s", *key, attempt, ref.size,
                     "" if waited else " (its container already ran when the follow began)")
        finally:
            self._following -= 1
        self._ended(key, uid)

    def _pod_ended(self, namespace: str, pod: str) -> bool:
        """Whether the informer shows ``pod`` gone or its container ended: no follow to wait for."""
        assert self.cache is not None
        found = self.cache.job_pods.get((namespace, pod))
        return found is None or _ended(found)

    # Reading (the operator's /logs endpoint, for a caller allowed to get the run) ---------------------
    def open(self, namespace: str, name: str, attempt: int) -> tuple[BlobRef, Iterator[bytes]]:
        """In a thread: the archived log of the run's attempt, verified as it streams (BlobCorrupt at
        its end). LookupError (a message for a person) when there is none; BlobMissing when its blob
        is gone. The run is read from the API server: the cache drops a finished run's attempts."""
        if self.store is None:
            raise LookupError("this operator has no object store: only the end of each log is kept")
        body = self.api.get(kube.TASKRUNS, namespace, name)
        if body is None:
            raise LookupError(f"no TaskRun {namespace}/{name}")
        uid = str(body["metadata"].get("uid") or "")
        record = next((a for a in (body.get("status") or {}).get("attempts") or [] if a.get("attempt") == attempt), None)
        if record is None or not record.get("log"):
            raise LookupError(f"no archived log of attempt {attempt} of {namespace}/{name}")
        ref = BlobRef.model_validate(record["log"])
        if self.store.path_of(ref) != log_path(namespace, uid, attempt):  # a status is data: only this run's log
            raise LookupError(f"the log of attempt {attempt} of {namespace}/{name} names another blob: {ref.uri}")
        return ref, self.store.stream(ref)

    def _copy(self, namespace: str, pod: str, path: str, node: str, follow: bool = False) -> BlobRef:
        """In a thread: the pod's log, chunk by chunk, into the store."""
        assert self.store is not None
        failure: list[Exception] = []
        try:  # the request and its first chunk: a refusal is the kubelet's, before any upload begins
            source = self.api.stream_log(namespace, pod, follow)
            head = [next(source, b"")]
        except Exception as e:
            if follow and _not_started(e):
                raise NotStarted(f"pod {pod}'s container has not started: {kube.error_line(e, 300)}") from e
            raise self._source_failed(e, pod, node) from e

        def chunks() -> Iterator[bytes]:
            try:
                yield from head
                yield from source
            except Exception as e:
                failure.append(e)
                raise
        try:
            ref = self.store.put(path, chunks())
        except Exception:
            if failure:
                raise self._source_failed(failure[0], pod, node) from failure[0]
            raise
        self.logless.read(node)
        return ref

    def _source_failed(self, e: Exception, pod: str, node: str) -> SourceFailed:
        if kube.is_status(e, 404):
            return SourceFailed(f"pod {pod} is gone")
        self.logless.failed(node, getattr(e, "status", None), self.clock())
        return SourceFailed(f"reading pod {pod}'s log failed: {kube.error_line(e, 300)}")


def _ended(pod: Body) -> bool:
    return pod_phase(pod) in POD_ENDED or any(
        "terminated" in (cs.get("state") or {}) for cs in (pod.get("status") or {}).get("containerStatuses") or [])


def _not_started(e: Exception) -> bool:
    """Whether a log request was refused because the pod's container has not started (400, "waiting
    to start"), or because its kubelet has not seen the pod yet (404: the informer says it exists)."""
    return kube.is_status(e, 404) or kube.is_status(e, 400) and "waiting to start" in kube.error_line(e)


def archived_message(late: list[int]) -> str:
    """The LogArchived=True condition's message; ``late``: the attempts whose log was read only from
    after their container started (at their end, or followed late)."""
    message = "every attempt's log that could be read is in the object store"
    if late:
        message += (f"; the log of attempt {', '.join(map(str, late))} was read from after its container "
                    f"started: what the kubelet rotated away before (past its containerLogMaxSize) is not in it")
    return message


T = TypeVar("T")


def in_daemon_thread(fn: Callable[..., T], *args: Any) -> Awaitable[T]:
    """``fn(*args)`` in a thread of its own that does not keep the process alive: a follow lasts as
    long as its attempt, and a stopping operator must not wait for it (the default executor's
    threads are joined at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        result, error = None, None
        try:
            result = fn(*args)
        except BaseException as e:  # noqa: BLE001 (handed to the awaiting task)
            error = e
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: the operator stopped meanwhile
            pass
    threading.Thread(target=run, daemon=True, name="log-follow").start()
    return future
