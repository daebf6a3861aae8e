"""Reconciling one TaskRun: read the world from the cache, decide (core), write the result.

The order of writes is what makes a crash at any line harmless:
- a Job is created *before* the status says its attempt runs, so a restarted operator either
  finds the Job (and adopts its attempt) or starts that attempt, never a second one;
- cancelling deletes every Job of the run (by its UID label, whatever the cache holds) *before*
  the status says Cancelled;
- an idempotency key is claimed through the API server before the first attempt, once the run
  is known to be able to run (a run refused for its payload never holds a key);
- a status write names the run's UID and the resourceVersion it was decided from: when another
  run was re-created under the name, or the run changed meanwhile, the API server refuses it
  (409) and the run is read and decided again. A finished run's outcome is never rewritten (only
  its hooks are marked fired, controller.hooks): an error after its outcome (reaping, retention,
  a hook) is a Warning Event and a metric.
Children are the run's by their owner UID: an object holding a name the run would use but owned
by someone else is never adopted (a Job gets a UID-qualified name instead).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from kubetasks import kube
from kubetasks.api.durations import parse_duration
from kubetasks.api.task import Retention, Task
from kubetasks.api.taskrun import Phase, TaskRun, TaskRunSpec, TaskRunStatus
from kubetasks.api.version import TaskVersion
from kubetasks.controller import metrics
from kubetasks.controller.cache import Body, Cache, Key, uid_of
from kubetasks.controller.conflicts import cancel_run, write_status
from kubetasks.controller.waitpoints import Tokens
from kubetasks.controller.event_waits import EventWaits
from kubetasks.controller.flow import FlowControl
from kubetasks.controller.gates import Gates
from kubetasks.controller.hooks import HookFailed, HookRuns
from kubetasks.controller.kept_logs import KeptLogs
from kubetasks.controller.log_archive import LogArchive
from kubetasks.controller.metadata import MetadataCopier
from kubetasks.controller.pods import finished_job_pods
from kubetasks.controller.queue import WOKEN_AT, Requeue, TokenBucket
from kubetasks.controller.queues import QueueAdmission
from kubetasks.controller.payloads import Payloads
from kubetasks.controller.replay import replay_seed
from kubetasks.controller.results import ResultRefs
from kubetasks.core.reach import refuse_namespace
from kubetasks.core.api_errors import api_error_message
from kubetasks.core.children import controlled_by, controller_uid, observe_attempts
from kubetasks.core.backoff import effective_retry
from kubetasks.core.dedup import claims_first, claim_holder, claim_payload, holds_key, key_expiry, key_released, render_claim
from kubetasks.core.hooks import hooks_due
from kubetasks.core.status_patch import status_patch
from kubetasks.core.naming import LABEL_RUN_UID, checkpoint_name
from kubetasks.core.observe import AttemptObservation, StartProblem
from kubetasks.core.status_trust import REASON as FORGED, judge_status
from kubetasks.core.start_check import Look, judge_start, look_again, more_reads, plan_start_check
from kubetasks.core.replay import replay_refusal
from kubetasks.core.retention import expires_at
from kubetasks.core.trigger_limits import DEPTH_CAP, TRIGGER_DEPTH_EXCEEDED
from kubetasks.core.trigger_policy import Refusal, refuse_child_run
from kubetasks.core.waits import children_in, events_in, still_waiting, tokens_in, unseen, wait_state, waited_for
from kubetasks.core.version import inherited, locked_task, version_from_jobs
from kubetasks.core.wakeups import unfinished
from kubetasks.core.plan import (
    Event, Plan, World, plan_failed, plan_run, retries_left, start_problem_shown,
)
from kubetasks.core.render import (
    access_to_drop, machine_for_attempt, render_job, render_parent_access, render_payload, render_run_identity,
    uses_sdk,
)
from kubetasks.controller.access import drop_access
from kubetasks.otlp import Tracing
from kubetasks.controller.triggers import root_run, runaway
from kubetasks.core.tracing import transition_spans
from kubetasks.protocol import steps_from_configmap

log = logging.getLogger(__name__)
RETRY_SOON = 2.0  # seconds: waiting for the garbage collector, or for a claim to settle
CLAIM_ORDER_RETRY = 0.2  # seconds: waiting for a run of the same key, created first, to claim it
POD_READS_PER_SECOND = 5.0  # start checks in all: a saturated cluster's slow starts are no reason to add load
START_DEADLINE = 300.0  # seconds (KUBETASKS_START_DEADLINE_SECONDS): an attempt not started by then fails
# A finished run whose cleanup failed (a Job reaped, the run deleted at its TTL) is looked at
# again this long after: its outcome stands meanwhile, and one request per run this often is cheap.
AFTER_OUTCOME_RETRY = 300.0


def sooner(requeue: datetime | float | None, seconds: float) -> datetime | float:
    """The earlier of a reconcile's requeue (a time or a delay in seconds) and ``seconds`` from now."""
    if requeue is None:
        return seconds
    if isinstance(requeue, datetime):
        return min(requeue, datetime.now(timezone.utc) + timedelta(seconds=seconds))
    return min(requeue, seconds)


class RunReconciler:
    def __init__(self, cache: Cache, api: ModuleType | Any = kube) -> None:
        self.cache = cache
        self.api = api  # kubetasks.kube, or a fake with the same functions in tests
        self.flow = FlowControl(cache)  # slots, keys, queues, throttles: who may start (its wake is the operator's)
        self.queues = QueueAdmission(self.flow)  # who may join a TaskQueue's line (maxWaiting)
        self.start_deadline = START_DEADLINE
        self.refused_namespaces: frozenset[str] = frozenset()  # core.reach
        self._pod_reads = TokenBucket(POD_READS_PER_SECOND, POD_READS_PER_SECOND)
        # Job name -> when its pods were last read, and what kept its container from starting
        self._start_checks: dict[str, Look] = {}
        self.logs = KeptLogs(cache, api)  # each finished attempt's log, kept after its pod is gone
        self.results = ResultRefs(self._call, None)  # results kept by reference (the operator sets its store)
        self.tokens = Tokens(cache, self._call)  # Waitpoints runs wait for (ctx.step.wait_for_token)
        self.event_waits = EventWaits(cache, self._call)  # TaskEvents runs wait for (ctx.step.wait_for_event)
        self.payloads = Payloads()  # payloads kept in the store (spec.payloadRef): the operator configures it
        self.archive = LogArchive(api, logless=self.logs.logless_nodes)  # and whole, in the object store
        self.archive.attach(cache)
        self.gates = Gates(cache, self._call, self._event)  # debounce and overlap, before the first attempt
        self.hooks = HookRuns(self._call, self._write_status, self._event)  # the runs a finished run's Task names
        self.metadata = MetadataCopier(cache, self._call, self._event)  # ctx.metadata into status.metadata
        self.tracing = Tracing()  # spans over OTLP, when the operator configures an endpoint
        self._warned_after_outcome: dict[str, str] = {}  # run uid -> the error last posted as an Event
        self.max_trigger_depth = DEPTH_CAP  # the operator's cap on every Task's maxTriggerDepth
        self._access_left: set[str] = set()  # uids of finished runs whose access objects are still to delete
        self._written: dict[str, Body] = {}  # run uid -> the status this process last wrote (core.status_trust)
        self._created_job: dict[str, bool] = {}  # run uid -> this reconcile created its attempt's Job
        self._cancelled: set[str] = set()  # uids of runs whose Jobs were deleted: their pods once more, soon
        # run uid -> (attempt, its checkpoints) as read while it waits: with no pod, nothing writes
        # them until it resumes (a Waiting parent is reconciled as each child ends: one read, not one each).
        self._waiting_steps: dict[str, tuple[int, dict[str, str] | None]] = {}
        cache.runs.listeners.append(self._run_changed)

    def _run_changed(self, old: Body | None, new: Body | None) -> None:
        if new is None and old is not None:  # deleted, finished or not: nothing of it is needed any more
            self._warned_after_outcome.pop(uid_of(old) or "", None)
            self._access_left.discard(uid_of(old) or "")
            self._written.pop(uid_of(old) or "", None)
            self._cancelled.discard(uid_of(old) or "")
            self._waiting_steps.pop(uid_of(old) or "", None)
            self.results.forget(uid_of(old) or "")
            self.payloads.forget(uid_of(old) or "")
            self.metadata.forget(uid_of(old) or "")

    async def _call(self, fn: str, *args: Any) -> Any:
        return await asyncio.to_thread(getattr(self.api, fn), *args)

    async def reconcile(self, key: Key) -> datetime | float | None:
        """Brings one run a step closer to what it should be; returns when to look again. An error
        that a retry cannot mend fails the run with its reason (a retry loop would hide it); once
        the run has finished, it is reported and the outcome stands."""
        try:
            return await self._reconcile_run(key)
        except Exception as e:
            if isinstance(e, Requeue) or kube.is_transient(e):
                raise  # the queue retries with backoff: the API server is busy, away or racing us
            body = self.cache.runs.get(key)
            if body is not None and not unfinished(body):
                return await self._after_outcome(body, e)
            await self._fail(key, e)
            return None

    async def _after_outcome(self, body: Body, error: Exception) -> float:
        """An error met on a finished run (a 403 deleting it at its TTL, a webhook refusing a
        Job's deletion): a Warning Event (once per error) and a metric, never another outcome:
        its history, its Task's counts and the metrics already tell the one it had."""
        meta, uid = body["metadata"], uid_of(body) or ""
        message = str(error) if isinstance(error, HookFailed) else kube.error_line(error)
        reason = error.reason if isinstance(error, HookFailed) else "CleanupFailed"
        log.warning("%s/%s (%s): %s (its outcome stands)", meta.get("namespace"), meta.get("name"),
                    (body.get("status") or {}).get("phase"), message)
        metrics.FINISHED_RUN_ERRORS.labels((body.get("spec") or {}).get("taskRef", "")).inc()
        if self._warned_after_outcome.get(uid) != message:
            self._warned_after_outcome[uid] = message
            await self._event(body, Event("Warning", reason, f"after the run finished: {message}"))
        return AFTER_OUTCOME_RETRY

    async def _fail(self, key: Key, error: Exception) -> None:
        body = self.cache.runs.get(key)
        if body is None:
            return
        reason = "InvalidSpec" if isinstance(error, ValidationError) else "ReconcileError"
        message = f"{type(error).__name__}: {error}"
        log.warning("%s/%s: %s (the run fails)", key[0], key[1], message.splitlines()[0])
        log.debug("%s/%s", key[0], key[1], exc_info=error)
        try:
            run = TaskRun.model_validate(body)
        except ValidationError:  # status as it is cannot be read: start it afresh
            spec = TaskRunSpec.model_construct(task_ref=str((body.get("spec") or {}).get("taskRef", "")))
            run = TaskRun.model_construct(metadata=body["metadata"], spec=spec, status=TaskRunStatus())
        await self._apply(key, run, uid_of(body) or "", None, plan_failed(run, datetime.now(timezone.utc), reason, message))

    async def _reconcile_run(self, key: Key) -> datetime | float | None:
        body = self.cache.runs.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # deleted: the garbage collector removes its children
        run = TaskRun.model_validate(body)
        uid = str(run.metadata.get("uid", ""))
        await self._believe(key, body, uid)
        task_body = self.cache.tasks.get((key[0], run.spec.task_ref))
        task = Task.model_validate(task_body) if task_body else None
        if run.status.phase.finished:
            if uid in self._cancelled:  # once, a moment after its Jobs were deleted: see _apply
                self._cancelled.remove(uid)
                await self._call("delete_pods", run.namespace, f"{LABEL_RUN_UID}={uid}")
            await self._reap(run, uid)
            if uid in self._access_left:  # deleting them failed when it finished: again
                await self._drop_access(run, uid, task)
            await self.hooks.fire(key, run, uid, task)  # before its retention may delete it
            return await self._retain(run, uid, task)
        refusal = refuse_namespace(key[0], self.refused_namespaces)
        if refusal and run.status.attempt == 0:  # nothing made there: it fails before its first Job
            now = datetime.now(timezone.utc)
            return await self._apply(key, run, uid, task, plan_failed(run, now, refusal.reason, refusal.message))
        return await self._reconcile(key, run, uid, task)

    async def _believe(self, key: Key, body: Body, uid: str) -> None:
        """Goes on only with a status the operator wrote: one someone else wrote (core.status_trust) is
        reported and written back as it should be, and the run decided again from that write
        (the store keeps a run it took for finished without most of its spec)."""
        forged = judge_status(body.get("status"), self._written.get(uid), uid, self.cache.jobs_of_run(uid),
                              self.cache.pods_of)
        if forged is None:
            return
        log.warning("%s/%s: %s", key[0], key[1], forged.message)
        await self._event(body, Event("Warning", FORGED, forged.message))
        patch = {**{k: None for k in forged.clear}, **status_patch(body.get("status") or {}, forged.status)}
        await self._write_status(key, uid, patch, str(body["metadata"].get("resourceVersion") or "") or None)
        raise Requeue(0, "a status the operator did not write was put back")

    async def _write_status(self, key: Key, uid: str, patch: dict[str, Any], decided_at: str | None,
                            old: dict[str, Any] | None = None) -> Body | None:
        """Patches the status only onto this run (its uid) as it was decided (its resourceVersion),
        and remembers what it wrote (core.status_trust); None when the run is gone. On a 409 the run
        is decided again on what it is now; after any other error it is not known what the status
        is, so nothing written is remembered (the Jobs judge it, as after a restart)."""
        try:
            updated = await write_status(self.api, self.cache.runs, kube.TASKRUNS, key, uid, decided_at, patch, old)
        except Exception:
            self._written.pop(uid, None)
            raise
        if updated is not None:
            self._written[uid] = self.cache.runs.slim(updated).get("status") or {}  # as the store shows it
        return updated

    async def _reap(self, run: TaskRun, uid: str) -> None:
        """A finished run owns no running Job (a cancel that raced a start, say)."""
        active = [j for j in self.cache.jobs_of_run(uid) if not self.cache.attempt_ended(j)
                  and not j["metadata"].get("deletionTimestamp")]
        if active:
            log.info("%s/%s is %s but owns running Jobs %s: deleting them", run.namespace, run.name,
                     run.status.phase, [j["metadata"]["name"] for j in active])
            await self._call("delete_jobs", run.namespace, f"{LABEL_RUN_UID}={uid}")
        self.cache.forget(uid)
        self.logs.forget(uid)
        self.results.forget(uid)
        self.payloads.forget(uid)
        self.archive.forget(uid)
        self.metadata.forget(uid)

    async def _retain(self, run: TaskRun, uid: str, task: Task | None) -> datetime | None:
        """Deletes a finished run once its time is up (its children go with it); else says when."""
        expiry = expires_at(run.status.completion_time, run.spec.ttl_seconds_after_finished,
                            task.spec.retention if task else Retention())
        if expiry is None or datetime.now(timezone.utc) < expiry:
            return expiry
        await self._call("delete", kube.TASKRUNS, run.namespace, run.name, uid)
        return None

    async def _reconcile(self, key: Key, run: TaskRun, uid: str, task: Task | None) -> datetime | float | None:
        started = asyncio.get_running_loop().time()
        if run.status.task_version and not run.status.attempt and not self.cache.jobs_of_run(uid):
            # A version on a run that never started is no lock the operator took (only a status
            # writer's): the Task's own is locked as it starts, never an image its creator chose.
            run = run.model_copy(update={"status": run.status.model_copy(update={"task_version": None})})
        version = None if run.status.task_version else self._version_to_lock(run, uid, task)
        if task is not None:  # its attempts run the Task as it was when its first one started (core.version)
            task = locked_task(task, run.status.task_version or version)
        sdk = task is not None and uses_sdk(task)
        attempts = await self._observe(run, uid)
        refusal = None
        if run.spec.parent_run and run.status.attempt == 0 and not run.spec.cancel and task is not None:
            refusal = await self._check_parent(run, uid)  # records run.status.triggerDepth too
        if refusal is None and run.status.attempt == 0 and not run.spec.cancel and task is not None and task.spec.queue:
            refusal = self.queues.first_reconcile(self.cache.runs.get(key))  # its TaskQueue's maxWaiting
        if refusal is None and run.status.attempt == 0 and not run.spec.cancel and task is not None:
            refusal = await self.payloads.refusal(run, task)  # a payloadRef not its own, or not there
        if refusal is None and run.status.attempt == 0 and not run.spec.cancel and task is not None \
                and run.spec.replay_of:
            refusal = await self._check_replay(run)  # its original gone, another run now, or of another Task
        world = World(now=datetime.now(timezone.utc), run=run, task=task, attempts=attempts, refusal=refusal,
                      version=version)
        token_check: datetime | None = None
        waits = run.status.phase == Phase.WAITING or run.spec.cancel
        # The steps tell what an ended attempt did (its wait, its sleep): read when the latest ended,
        # not on every reconcile of a later attempt that is still running.
        if sdk and (waits or (attempts and attempts[max(attempts)].state != "active")):
            data = await self._checkpoints(run, uid)  # read once for all that follows
            world = self._with_steps(world, uid, data)
            attempt = max([run.status.attempt, *attempts])
            names = waited_for(world.steps, attempt)
            tokens = tokens_in(names)
            pending, token_check = await self.tokens.pending(run, uid, tokens, world.now)
            if events_in(names):
                events, event_check, decided = await self.event_waits.pending(run, uid, attempt, world.now, data)
                if decided:  # written into the checkpoints
                    self._waiting_steps.pop(uid, None)
                pending += events
                token_check = min(filter(None, (token_check, event_check)), default=None)
            children = await self._unfinished_children(run, children_in(names))
            wait = wait_state(world.steps, attempt, children + pending, world.now)
            if not wait.waiting_on and tokens:  # over: the next attempt reads the tokens' outcomes
                self._waiting_steps.pop(uid, None)  # they change the checkpoints
                await self.tokens.write_outcomes(run, uid, tokens, world.now, data)
            if wait.cancel:  # a wait_any over: the children it no longer waits for
                await self._cancel_children(run, wait.cancel)
            token_check = min(filter(None, (token_check, wait.look_again)), default=None)
            world = replace(world, waiting_on=wait.waiting_on)
        problem, deadline, check_at = await self._start_check(run, task, attempts)
        world = replace(world, start_problem=problem, start_deadline=deadline)
        plan = plan_run(world)
        if run.spec.idempotency_key and run.status.attempt == 0 and not run.spec.cancel and task is not None \
                and not plan.status.phase.finished:
            # Claimed only by a run that may run: one refused (its payload, its Task, its parent)
            # must not hold the key, which would make the next run of that key a Duplicate of it.
            held = await self._claim(run, uid, world.now)
            if held is not None:
                plan = plan_run(replace(world, duplicate_of=held[0], duplicate_payload=held[1]))
            elif plan.status.idempotency_key_expires_at is None:  # shown, so that a trigger can tell
                plan.status.idempotency_key_expires_at = key_expiry(run, task)
        if run.status.attempt == 0 and not attempts and not run.spec.cancel and task is not None \
                and not plan.status.phase.finished:  # not begun (no Job): after the claim, as a Duplicate ends so
            plan = await self.gates.admit(world, plan)  # debounce and overlap (controller.gates)
        jobs, pods = self.cache.jobs_of_run(uid), self.cache.pods[uid]  # _apply forgets them when the run ends
        plan = self.archive.hold(run, uid, jobs, pods, plan, world.now)  # may the outcome be written yet?
        body = self.cache.runs.get(key)
        metadata = None if body is None else await self.metadata.decide(
            run, uid, plan.status, plan.status.phase.finished, body)
        starting = plan.start_attempt
        if starting and body is not None:
            # Decided with no await between the look at the slots and taking one (flow.try_start):
            # two runs cannot both take the last slot, and no lock is held across API calls.
            blocked = self.flow.try_start(body, starting)
            if blocked is not None:
                plan, starting = plan_run(replace(world, blocked=blocked.waiting_for, blocked_message=blocked.message,
                                                  blocked_until=blocked.until)), None
        if metadata is not None:
            metadata.set_on(plan.status)
        try:
            requeue = await self._apply(key, run, uid, task, plan)
        finally:
            if starting and body is not None and plan.start_attempt and not self._created_job.pop(uid, False):
                self.flow.release(body, starting)  # refused, requeued or failed before its Job: the slot is free
        if refusal and refusal.reason == TRIGGER_DEPTH_EXCEEDED and plan.status.phase.finished:
            await self._warn_root(run, refusal)
        await self.logs.keep(run, uid, jobs, pods)
        if uid in self._access_left:
            await self._drop_access(run, uid, task)
        if check_at and plan.status.phase == Phase.RUNNING:
            requeue = min(requeue, check_at) if isinstance(requeue, datetime) else check_at
        if token_check and plan.status.phase == Phase.WAITING:  # a token or a wait_any times out then
            requeue = min(requeue, token_check) if isinstance(requeue, datetime) else token_check
        if metadata is not None and metadata.due is not None and not plan.status.phase.finished:
            requeue = sooner(requeue, metadata.due)  # a metadata write held back
        metrics.RECONCILE_SECONDS.labels("taskrun").observe(asyncio.get_running_loop().time() - started)
        return requeue

    def _version_to_lock(self, run: TaskRun, uid: str, task: Task | None) -> TaskVersion | None:
        """For a run with no version in its status, the one it has to lock (core.version): the one
        its first Job runs (its status write was lost), else its parent's, when it inherits it;
        both from the cache, no request. None: the Task as it is when its first attempt starts."""
        found = version_from_jobs(self.cache.jobs_of_run(uid), task)
        if found is not None or not run.spec.inherit_version or not run.spec.parent_run:
            return found
        body = self.cache.runs.get((run.namespace, run.spec.parent_run))
        try:
            return inherited(run, TaskRun.model_validate(body) if body else None)
        except ValidationError:
            return None

    async def _observe(self, run: TaskRun, uid: str) -> dict[int, AttemptObservation]:
        """The run's attempts. An ended attempt's pod (its Job finished, or the pod succeeded
        first: core.observe.succeeded_pod) is read once, for its exit code and termination message
        (a plain command's result too); the kept log reuses the read."""
        jobs = self.cache.jobs_of_run(uid)
        pods = self.cache.pods[uid]
        for job in jobs:
            name = job["metadata"]["name"]
            if name not in pods and self.cache.attempt_ended(job):
                pods[name] = await finished_job_pods(self.cache, self.api, run.namespace, name)
        return await self.results.resolve(run, uid, observe_attempts(
            run.status, jobs, self.cache.gone.get(uid, {}).values(), self.cache.expected_attempts(uid), pods))

    async def _unfinished_children(self, run: TaskRun, names: list[str]) -> list[str]:
        """Of the runs a wait names, the run's children not finished yet (core.waits); a name the
        cache does not know (a child created since the watch last spoke) is read first."""
        known: dict[str, Body | None] = {n: self.cache.runs.get((run.namespace, n)) for n in names}
        for name in unseen(names, known):
            known[name] = await self._call("get", kube.TASKRUNS, run.namespace, name)
        return still_waiting(run.name, names, known)

    async def _cancel_children(self, run: TaskRun, names: list[str]) -> None:
        """Cancels the children a cancelled run waited for (only its own, each by its uid)."""
        known = {n: self.cache.runs.get((run.namespace, n)) for n in names}
        for name in still_waiting(run.name, names, known):
            await cancel_run(self._call, run.namespace, name, uid_of(known[name]))

    async def _check_parent(self, run: TaskRun, uid: str) -> Refusal | None:
        """Why a child run may not run (its parent's Task does not allow its Task), or None; once
        allowed, the parent's pods may read this run (to wait for it)."""
        parent_body = self.cache.runs.get((run.namespace, run.spec.parent_run or ""))
        try:
            parent = TaskRun.model_validate(parent_body) if parent_body else None
            task_body = self.cache.tasks.get((run.namespace, parent.spec.task_ref)) if parent else None
            parent_task = Task.model_validate(task_body) if task_body else None
        except ValidationError:
            parent, parent_task = None, None
        refusal = refuse_child_run(run, parent, parent_task)
        if parent is not None and parent_task is not None:  # too deep, or one child too many
            refusal = refusal or runaway(self.cache, run, parent, parent_task, self.max_trigger_depth)
        if refusal is None and parent is not None and parent_task is not None and uid not in self.cache.parent_access \
                and not parent.status.phase.finished:  # a finished parent's pods are gone
            for obj in render_parent_access(run, parent, parent_task):
                await self._create_owned(obj, uid)
            self.cache.parent_access.add(uid)
        return refusal

    async def _check_replay(self, run: TaskRun) -> Refusal | None:
        """Why a replay cannot start from its original (core.replay); the API is asked when the
        cache does not hold the original it names (just created, or of another instance)."""
        source = run.spec.replay_of
        assert source is not None
        original = self.cache.runs.get((run.namespace, source.name))
        if original is None or uid_of(original) != source.uid:
            original = await self._call("get", kube.TASKRUNS, run.namespace, source.name)
        return replay_refusal(run, original)

    async def _warn_root(self, run: TaskRun, refusal: Refusal) -> None:
        """The run at the root of a chain that went too deep hears of it: that is where a person looks."""
        root = root_run(self.cache, run, self.max_trigger_depth)
        if root is not None:
            await self._event(root, Event("Warning", refusal.reason, f"run {run.name!r}, triggered in its chain, "
                                                                     f"failed: {refusal.message}"))

    async def find_access_left(self, scopes: list[str | None], selector: str) -> None:
        """At start, before the workers: the finished runs that still own a Role. A process that died
        between a run's outcome and its access deletes kept them only in memory (_access_left);
        every run gets a reconcile at start, which deletes them now. One list per scope."""
        for namespace in scopes:
            try:
                roles, _ = await self._call("list_all", kube.RESOURCES["Role"], namespace, selector)
            except Exception as e:  # an older ClusterRole without `list`: they wait for the retention
                log.warning("cannot list Roles left by finished runs: %s", kube.error_line(e))
                continue
            for role in roles:
                owner = self.cache.run_by_uid(controller_uid(role) or "")
                if owner is not None and not unfinished(owner):
                    self._access_left.add(uid_of(owner) or "")

    async def _drop_access(self, run: TaskRun, uid: str, task: Task | None) -> None:
        """A finished run's pods need no access any more (core.render.access_to_drop): deleted now,
        not at its retention. An error is reported by reconcile() and tried again later."""
        parent = self.cache.runs.get((run.namespace, run.spec.parent_run)) if run.spec.parent_run else None
        parent_done = parent is None or not unfinished(parent)
        children = [(b["metadata"]["name"], uid_of(b) or "") for b in self.cache.children_of(run.namespace, run.name)]
        await drop_access(self._call, run.namespace, access_to_drop(run, task, children, parent_done))
        self._access_left.discard(uid)

    async def _start_check(self, run: TaskRun, task: Task | None, attempts: dict[int, AttemptObservation],
                           ) -> tuple[StartProblem | None, datetime | None, datetime | None]:
        """(what keeps the current attempt from starting, its start deadline, when to look again):
        core.start_check decides when its pods are read; here they are read when it says so, at
        most POD_READS_PER_SECOND in all."""
        current = attempts.get(max(attempts, default=0))
        job = (self.cache.jobs.get((run.namespace, current.job_name))
               if current and current.state in ("active", "timed_out") else None)
        now = datetime.now(timezone.utc)
        name = current.job_name if current else ""
        last, shown = self._start_checks.get(name), start_problem_shown(run)
        max_duration = parse_duration(task.spec.max_duration).total_seconds() if task and task.spec.max_duration else None
        check = plan_start_check(now, job, self.start_deadline, max_duration, last, shown)
        if check.started:
            self._start_checks.pop(name, None)
        if not check.read_pods:
            return check.problem, check.deadline, check.again
        if not self._pod_reads.take():
            return check.problem, check.deadline, look_again(now, now + timedelta(seconds=random.uniform(1, 5)),
                                                             check.deadline)
        pods = await self._call("list_pods", run.namespace, f"job-name={name}")
        reads = more_reads(now, check, job or {}, pods, task.spec.service_account_name if task else None)
        events = await self._call("list_by_fields", kube.EVENTS, run.namespace, reads.events) if reads.events else []
        no_account = reads.account if reads.account and not await self._call(
            "get", kube.RESOURCES["ServiceAccount"], run.namespace, reads.account) else None
        look, again = judge_start(now, check, pods, name, last, shown, events, no_account)
        self._start_checks[name] = look
        return look.seen, check.deadline, again

    async def _claim(self, run: TaskRun, uid: str, now: datetime) -> tuple[str, str | None] | None:
        """None when this run holds its idempotency key; else the name of the run that does, and
        its payload digest (from the claim). A key its holder released (core.dedup.key_released)
        is taken over: its claim is deleted, as it was read, and this run makes its own."""
        if uid in self.cache.claimed:
            return None
        assert run.spec.idempotency_key is not None
        rivals = self.cache.with_key(run.namespace, run.spec.task_ref, run.spec.idempotency_key)
        first = claims_first({"metadata": run.metadata}, rivals, self.cache.claimed, now)
        if first is not None:
            raise Requeue(CLAIM_ORDER_RETRY, f"waits for {first}, created before it with its idempotency key, to claim it")
        claim = render_claim(run)
        created, existing = await self._call("create_or_get", claim)
        if created:
            self.cache.claimed.add(uid)
            return None
        if existing is None:
            raise Requeue(0, "the idempotency claim vanished while being read")
        holder, holder_uid = claim_holder(existing)
        if holder_uid == uid:
            self.cache.claimed.add(uid)
            return None
        alive = self.cache.runs.get((run.namespace, holder)) if holder else None
        if holder and (alive is None or uid_of(alive) != holder_uid):
            alive = await self._call("get", kube.TASKRUNS, run.namespace, holder)
        if alive is not None and uid_of(alive) == holder_uid and holds_key(alive, run):
            if not key_released(alive, now):
                return holder, claim_payload(existing)
            log.info("TaskRun %s/%s takes over idempotency key %r, released by %s", run.namespace, run.name,
                     run.spec.idempotency_key, holder)
        # Its holder released the key (it failed, or the key's TTL passed), or is deleted and the
        # garbage collector has not removed the claim yet; or it is no claim a run of this key made
        # (a squatter's). Deleted with its uid as a precondition: of two runs taking it over, one
        # deletes it, and whichever creates the claim next holds the key.
        await self._call("delete", kube.CONFIGMAPS, run.namespace, claim["metadata"]["name"], uid_of(existing))
        raise Requeue(0, "removed a claim no live run of this key holds")

    async def _checkpoints(self, run: TaskRun, uid: str) -> dict[str, str] | None:
        """The run's checkpoint ConfigMap's data; while it waits, as first read then (``_waiting_steps``)."""
        waiting = run.status.phase == Phase.WAITING and not run.spec.cancel
        kept = self._waiting_steps.get(uid) if waiting else self._waiting_steps.pop(uid, None)
        if kept is not None and kept[0] == run.status.attempt:
            return kept[1]
        data: dict[str, str] | None = await self._call("get_configmap_data", run.namespace,
                                                       checkpoint_name(run.name, uid))
        if waiting:  # read after the attempt that wrote its wait ended (the status says Waiting)
            self._waiting_steps[uid] = (run.status.attempt, data)
        return data

    def _with_steps(self, world: World, uid: str, data: dict[str, str] | None) -> World:
        self.metadata.seen(uid, data)
        if data is None:
            return world
        return World(**{**world.__dict__, "steps": steps_from_configmap(data)})

    async def _apply(self, key: Key, run: TaskRun, uid: str, task: Task | None, plan: Plan) -> datetime | float | None:
        body = self.cache.runs.get(key)
        if body is None or uid_of(body) != uid:
            return None  # deleted (or re-created) meanwhile: the garbage collector takes what it owned
        decided_at = str(run.metadata.get("resourceVersion") or "") or None
        if decided_at and body["metadata"].get("resourceVersion") != decided_at:
            # The watch showed a newer state while this was decided: nothing is done on an old one.
            raise Requeue(0, "the run changed while it was being decided")
        old_status = body.get("status") or {}
        if plan.delete_jobs:
            await self._call("delete_jobs", key[0], f"{LABEL_RUN_UID}={uid}")
            # A pod the Job controller was creating as its Job was deleted lands after the pods'
            # delete, and would stop only when the garbage collector gets to it: its pods are
            # deleted once more, RETRY_SOON later (the reconcile that follows the outcome).
            self._cancelled.add(uid)
        if plan.stop_job:
            await self._call("delete", kube.JOBS, key[0], plan.stop_job)
        if plan.cancel_runs:
            await self._cancel_children(run, plan.cancel_runs)
        if plan.start_attempt and task:
            rejected = await self._start_attempt(run, uid, task, plan)
            if rejected:
                plan = rejected
        if plan.status.phase.finished and unfinished(body) and not refuse_namespace(key[0], self.refused_namespaces):
            # Which hooks it fires, decided as it finishes and written with its outcome (core.hooks).
            plan.status.hooks = hooks_due(run, task or self._task_of(run), plan.status.phase)
        # An unfinished run's status is whole in the store: its fields are written whole (a result's nulls kept).
        whole = old_status if unfinished(body) else None
        patch = status_patch(old_status, plan.status.to_api(), whole=whole is not None)
        if patch and await self._write_status(key, uid, patch, decided_at, whole) is None:
            return None
        self.cache.settle(uid, {a.job_name for a in plan.status.attempts if a.reason})
        if self.tracing.enabled:  # after the write that records them: each transition's spans once
            self.tracing.emit(transition_spans(run.metadata, run.spec.task_ref, run.status, plan.status))
        for event in plan.events:
            await self._event(body, event)
        metrics.attempts_finished(run.spec.task_ref, old_status, plan.status)
        old_phase = old_status.get("phase", Phase.PENDING)
        if plan.status.phase != old_phase:
            metrics.phase_changed(run.spec.task_ref, plan.status.phase, old_phase, plan.status)
        if plan.status.phase.finished:
            self.cache.forget(uid)
            for record in plan.status.attempts:
                self._start_checks.pop(record.job_name, None)
            if unfinished(body):  # it finishes now: its access objects go (after its log is kept)
                self._access_left.add(uid)
                await self.results.finished(run, plan.status, self.cache)  # its parent's grant to read its result
            if uid in self._cancelled:
                return RETRY_SOON
        return plan.requeue_at

    def _task_of(self, run: TaskRun) -> Task | None:
        """The run's Task from the store, where the caller had none at hand (a run failed by an error)."""
        body = self.cache.tasks.get((run.namespace, run.spec.task_ref))
        try:
            return Task.model_validate(body) if body else None
        except ValidationError:
            return None

    async def _start_attempt(self, run: TaskRun, uid: str, task: Task, plan: Plan) -> Plan | None:
        """Creates what the attempt needs, its Job last; a Plan when the API server refused it."""
        attempt = plan.start_attempt
        assert attempt is not None
        try:
            payload = render_payload(run, task)
            if payload is not None:  # at every attempt: a run begun before it was made gets it too
                await self._create_owned(payload, uid)
            if attempt == 1 or not plan.status.attempts:
                seed = await replay_seed(self._call, self.results.store, run, uid) if uses_sdk(task) else {}
                if isinstance(seed, Refusal):  # its original was deleted since the replay was admitted
                    return plan_failed(run, datetime.now(timezone.utc), seed.reason, seed.message, plan.status)
                for obj in render_run_identity(run, task, seed):
                    await self._create_owned(obj, uid)
            machine = machine_for_attempt(run, task, [a.reason for a in plan.status.attempts if a.attempt < attempt])
            grant = await self.results.upload_grant(run, task, attempt, self.payloads.grant_data)  # presigned URLs
            version = plan.status.task_version  # the Job says which: a restart locks it (core.version)
            left = retries_left(effective_retry(run, task), plan.status)
            traced = self.tracing.job_env(run.metadata, attempt, task.task_id)  # {} when off
            job = self.archive.keep_pods(render_job(run, task, attempt, machine, grant=grant, version=version,
                                                    retries_left=left, trace_env=traced))  # its pod outlives the upload
            self.cache.expect(uid, attempt)
            self._created_job[uid] = True  # sent: its expectation (and slot) stands until the watch tells
            if attempt == 1 and WOKEN_AT.get():  # woken by the queue (not a test's direct call)
                metrics.JOB_START_LATENCY.labels(task.task_id).observe(time.monotonic() - WOKEN_AT.get())
            if not await self._create_owned(job, uid, required=False):
                log.warning("%s/%s: Job %s belongs to another owner; naming attempt %d's Job with the run's UID",
                            run.namespace, run.name, job["metadata"]["name"], attempt)
                qualified = self.archive.keep_pods(render_job(run, task, attempt, machine, qualified=True, grant=grant,
                                                                version=version, retries_left=left, trace_env=traced))
                await self._create_owned(qualified, uid)
                for record in plan.status.attempts:  # the status names the Job that exists
                    if record.attempt == attempt:
                        record.job_name = qualified["metadata"]["name"]
            metrics.ATTEMPTS_STARTED.labels(task.task_id).inc()
            self.flow.started(uid)  # its throttles count it from now
        except Exception as e:
            if not kube.is_status(e, 400, 422):
                raise
            # The API server refused the Job (a bad quantity, say): a permanent, explained failure.
            message = f"the Job for attempt {attempt} was rejected: {api_error_message(getattr(e, 'body', None) or e)}"
            return plan_failed(run, datetime.now(timezone.utc), "InvalidSpec", message, plan.status)
        return None

    async def _create_owned(self, obj: Body, uid: str, required: bool = True) -> bool:
        """Creates a child of the run; True when it exists and is the run's. An object of that
        name owned by another is never adopted: False, or (``required``) a Requeue until the
        garbage collector removes it."""
        created, existing = await self._call("create_or_get", obj)
        if created or (existing is not None and controlled_by(existing, uid)):
            return True
        if existing is None:
            raise Requeue(0, f"{obj['kind']} {obj['metadata']['name']} vanished while being read")
        if required:
            raise Requeue(RETRY_SOON, f"{obj['kind']} {obj['metadata']['name']} belongs to another owner")
        return False

    async def _event(self, body: Body, event: Event) -> None:
        try:
            await self._call("post_event", body, event.type, event.reason, event.message)
        except Exception as e:  # an Event is a courtesy: never fail a reconcile over one
            log.warning("could not post event %s on %s: %s", event.reason, body["metadata"].get("name"),
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
