"""Results kept by reference: read and verified before a run succeeds, and granted to its readers.

An attempt that reports a ``resultRef`` (protocol.Report) succeeds only once the operator has
judged the ref its own (core.result_refs) and read the bytes it names, with the size and sha256 it
names: from the run's checkpoint ConfigMap, or from the operator's object store (blobs). Otherwise
the attempt fails with the reason (InvalidResultRef, ResultUnreadable) and the retry policy acts.
A verified ref is remembered per attempt, so a reconcile that is repeated (a 409) reads nothing again.

When a run whose result is in the store finishes and its parent's pods are waiting for it, the
operator writes them a presigned GET of it into a ConfigMap only the parent's Role may read
(core.grants); ConfigMap-held results the parent reads from the child's checkpoint ConfigMap.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from kubetasks.api.task import Task
from kubetasks.api.taskrun import TaskRun, TaskRunStatus
from kubetasks.controller.cache import Cache
from kubetasks.controller.conflicts import Call
from kubetasks.controller.queue import Requeue
from kubetasks.blobs import BlobError, BlobMissing, BlobStore, error_line as store_error
from kubetasks import kube
from kubetasks.api.storage import BlobRef, result_path
from kubetasks.core.grants import MARGIN, grant_lifetime, render_child_result_grant, render_grant, result_grant_data
from kubetasks.core.observe import AttemptObservation
from kubetasks.core.render import run_account, uses_sdk
from kubetasks.controller.step_blobs import step_grant
from kubetasks.controller.token_completion import TokenUrls
from kubetasks.core.step_grants import slots_from_env
from kubetasks.core.result_refs import REFUSED, UNREADABLE, Place, check_bytes, judge_ref
from kubetasks.protocol import RESULT_CONFIGMAP_LIMIT, Report

log = logging.getLogger(__name__)
READ_RETRY = 5.0  # seconds between reads of a result the store could not serve
READ_DEADLINE = 300.0  # seconds after the attempt's end: then the attempt fails, ResultUnreadable


class ResultRefs:
    def __init__(self, call: Call, store: BlobStore | None) -> None:
        self.call = call
        self.store = store
        self.token_urls: TokenUrls | None = None  # the run key of signed completion URLs, when served
        self.grant_margin = MARGIN  # beyond a Task's maxDuration (KUBETASKS_STORAGE_GRANT_MARGIN_SECONDS)
        self._verified: dict[str, dict[int, AttemptObservation]] = {}  # run uid -> attempt -> judged
        self.step_slots = slots_from_env(os.environ)  # upload slots for large step outputs, per attempt

    def forget(self, uid: str) -> None:
        self._verified.pop(uid, None)

    async def resolve(self, run: TaskRun, uid: str, attempts: dict[int, AttemptObservation],
                      ) -> dict[int, AttemptObservation]:
        """``attempts`` with every succeeded attempt's reported ref read and verified (its
        observation carries the ref), or turned into a failed attempt that says why."""
        if not any(o.state == "succeeded" and o.report and o.report.result_ref is not None for o in attempts.values()):
            return attempts
        out = dict(attempts)
        done = self._verified.setdefault(uid, {})
        for n, obs in attempts.items():
            if obs.state != "succeeded" or obs.report is None or obs.report.result_ref is None:
                continue
            if n not in done:  # a Requeue (the store unreachable) remembers nothing
                done[n] = await self._judge(run, uid, obs)
            out[n] = done[n]
        return out

    async def _judge(self, run: TaskRun, uid: str, obs: AttemptObservation) -> AttemptObservation:
        assert obs.report is not None
        store_url = self.store.config.url if self.store else None
        judged = judge_ref(obs.report.result_ref, run.namespace, run.name, uid, obs.attempt, store_url)
        if judged.place is None:
            return _failed(obs, REFUSED, judged.refusal or "refused")
        try:
            problem = await self._read(run.namespace, judged.place)
        except Exception as e:  # the store (or the API) not reachable: the bytes may well be there
            waited = (datetime.now(timezone.utc) - (obs.completion_time or datetime.now(timezone.utc))).total_seconds()
            if waited < READ_DEADLINE and not isinstance(e, BlobError):
                raise Requeue(READ_RETRY, f"cannot read the result of attempt {obs.attempt} yet: "
                                          f"{store_error(e)}") from e
            problem = f"could not be read for {READ_DEADLINE:.0f}s: {store_error(e)}"
        if problem is not None:
            return _failed(obs, UNREADABLE, problem)
        return replace(obs, result_ref=judged.place.ref)

    async def _read(self, namespace: str, place: Place) -> str | None:
        """Why the bytes at ``place`` are not the ones its ref names; None when they are. An
        error reaching the store raises (the queue retries: the store may be back soon)."""
        if place.configmap is not None:
            data = await self.call("get_configmap_data", namespace, place.configmap)
            text = (data or {}).get(place.key or "")
            return check_bytes(place.ref, None if text is None else text.encode())
        assert self.store is not None and place.path is not None
        store = self.store
        try:
            await asyncio.to_thread(lambda: sum(1 for _ in store.stream(place.ref)))  # verified, not kept
        except BlobMissing:
            return check_bytes(place.ref, None)
        except (BlobError, ValueError) as e:  # BlobCorrupt, or a path the store refuses
            return str(e)
        return None

    async def upload_grant(self, run: TaskRun, task: Task, attempt: int,
                           extra: Callable[[TaskRun, timedelta], dict[str, str]] | None = None) -> str | None:
        """The Secret (its name) of the attempt's grants, made now; None for a plain command (its
        result is its termination message), or without a store that signs URLs and without
        signed completion URLs (controller.token_completion)."""
        if not uses_sdk(task):
            return None
        data = self.token_urls.grant_data(run) if self.token_urls else {}
        lifetime = grant_lifetime(task.spec.max_duration, self.grant_margin)
        path = result_path(run.namespace, str(run.metadata.get("uid", "")), attempt)
        store = self.store
        url = None if store is None else await asyncio.to_thread(sign_put, store, path, lifetime)
        if store is not None and url is not None:
            data.update(result_grant_data(url, store.uri(path), store.config.threshold,
                                          datetime.now(timezone.utc) + lifetime))
            if extra:  # the payload's GET (controller.payloads)
                data.update(await asyncio.to_thread(extra, run, lifetime))
            data.update(await step_grant(self.call, store, run, attempt, lifetime, self.step_slots))  # step outputs' slots
        if not data:
            return None
        secret = render_grant(run, task.task_id, attempt, data)
        try:
            created = await self.call("create", secret)
        except Exception as e:
            if not kube.is_status(e, 403):
                raise
            # A chart without the Secrets rule (an older one): results stay within the ConfigMap's limit.
            log.warning("%s/%s: cannot create the upload grant of attempt %d (%s): its result may be at most "
                        "%d bytes", run.namespace, run.name, attempt, kube.error_line(e), RESULT_CONFIGMAP_LIMIT)
            return None
        return str(created["metadata"]["name"])

    async def finished(self, run: TaskRun, status: TaskRunStatus, cache: Cache) -> None:
        """The run finishes with ``status``: a store-held result is granted to its waiting parent.
        An error is logged, never the run's: its outcome is written (the parent's wait says the
        grant is missing)."""
        if status.result_ref is None or not run.spec.parent_run or self.store is None:
            return
        try:
            parent_body = cache.runs.get((run.namespace, run.spec.parent_run))
            parent = TaskRun.model_validate(parent_body) if parent_body else None
            task_body = cache.tasks.get((run.namespace, parent.spec.task_ref)) if parent else None
            parent_task = Task.model_validate(task_body) if task_body else None
            await self.grant_parent(run.model_copy(update={"status": status}), parent, parent_task)
        except Exception as e:  # noqa: BLE001
            log.warning("%s/%s: could not grant its parent its result: %s", run.namespace, run.name, e)

    async def grant_parent(self, run: TaskRun, parent: TaskRun | None, parent_task: Task | None) -> None:
        """A child whose result is in the store finished: its parent's pods get a presigned GET of
        it (they cannot reach the store otherwise), in a ConfigMap owned by the child that only
        the parent's access Role names. Nothing when the parent has finished or has no account."""
        ref = run.status.result_ref
        if (ref is None or self.store is None or not ref.uri.startswith(self.store.config.url + "/")
                or parent is None or parent_task is None or parent.status.phase.finished
                or run_account(parent, parent_task) is None):
            return
        lifetime = grant_lifetime(parent_task.spec.max_duration, self.grant_margin)
        store, path = self.store, self.store.path_of(ref)
        url = await asyncio.to_thread(store.sign, "GET", path, lifetime)
        grant = render_child_result_grant(run, url, ref, datetime.now(timezone.utc) + lifetime)
        created, existing = await self.call("create_or_get", grant)
        if not created and existing is not None:
            log.info("%s/%s: result grant %s exists already", run.namespace, run.name, grant["metadata"]["name"])


def _failed(obs: AttemptObservation, reason: str, message: str) -> AttemptObservation:
    log.warning("attempt %d (%s): %s: %s", obs.attempt, obs.job_name, reason, message)
    return replace(obs, state="failed", reason=reason, report=Report(outcome="failed", error_type=reason,
                                                                    error_message=message))


def sign_put(store: BlobStore, path: str, lifetime: timedelta) -> str | None:
    """A presigned PUT of ``path``, or None for a backend that cannot sign (the filesystem without a grant URL)."""
    try:
        return store.sign("PUT", path, lifetime)
    except NotImplementedError:
        return None


__all__ = ["ResultRefs", "sign_put"]


def open_result(store: BlobStore | None, get_run: Callable[[str, str], dict[str, Any] | None],
                namespace: str, name: str) -> tuple[BlobRef, Iterator[bytes]]:
    """In a thread, for ``GET /results/<namespace>/<name>`` (its caller already allowed to ``get``
    that TaskRun): the run's store-held result, verified as it streams (BlobCorrupt at its end).
    LookupError (a message for a person) when there is none here; BlobMissing when its blob is gone.
    ConfigMap-held results are read by the caller with their own rights, not here."""
    body = get_run(namespace, name)
    if body is None:
        raise LookupError(f"no TaskRun {namespace}/{name}")
    run = TaskRun.model_validate(body)
    ref = run.status.result_ref
    if ref is None:
        raise LookupError(f"TaskRun {namespace}/{name} has no result kept by reference")
    if store is None:
        raise LookupError(f"TaskRun {namespace}/{name}'s result is at {ref.uri}; this operator has no store")
    judged = judge_ref(ref.to_api(), namespace, name, str(run.metadata.get("uid", "")), run.status.attempt,
                       store.config.url)
    if judged.place is None or judged.place.path is None:
        raise LookupError(f"TaskRun {namespace}/{name}'s result is not in the operator's store ({ref.uri})")
    return judged.place.ref, store.stream(judged.place.ref)
