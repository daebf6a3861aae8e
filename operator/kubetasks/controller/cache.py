"""The operator's view of the cluster: a store per kind (see :mod:`.store`), and what a
controller must remember between a write and the watch event that confirms it.

- Stores keep only the fields the reconcilers read (no managedFields, no Job specs, no payload
  or result of a finished run), indexed by Task and by parent run (runs) and by owner UID (Jobs).
- ``gone``: the last known state of each deleted Job, by its run's UID, until the run's status
  has the attempt's outcome (a Job removed at once by ``ttlSecondsAfterFinished: 0``, or by a
  user, still tells how its attempt ended, or that it was lost).
- ``expected``: attempts whose Job this operator created and the watch has not shown yet
  (kube-controller-manager's ControllerExpectations): not lost, not to be created again.
- ``job_pods``: the pods of those Jobs (an informer, as the Job controller's), so that a finished
  attempt's exit code and its log's pod cost no list per attempt.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from kubetasks.api.taskrun import Phase
from kubetasks.informer.store import Body, Key, Store, key_of, uid_of
from kubetasks.core.children import attempt_ended, controller_uid
from kubetasks.core.debounce import group_key
from kubetasks.core.overlap import overlap_key
from kubetasks.core.logs import slim_kept_log
from kubetasks.core.observe import JOB_UID_LABEL
from kubetasks.core.naming import ANNOTATION_TASK_VERSION, LABEL_ATTEMPT, LABEL_RUN_UID
from kubetasks.core.tracing import TRACE_ANNOTATIONS
from kubetasks.core.version import kept
from kubetasks.protocol import EVENT, METADATA_LABEL

__all__ = ["Body", "Cache", "Key", "key_of", "uid_of"]

EXPECTATION_SECONDS = 300.0  # after this, an unseen Job is taken as never created (or lost)
_META_KEYS = ("name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp", "labels",
              "deletionTimestamp", "ownerReferences")
_JOB_STATUS_KEYS = ("conditions", "startTime", "completionTime", "active", "ready", "succeeded", "failed")
# What is read of a pod: its exit code and termination message (core.observe), why it has not
# started (core.start_check) and where its log is (core.logs); not its spec.
_POD_STATUS_KEYS = ("phase", "reason", "message", "conditions", "containerStatuses", "startTime")
JOB_NAME_LABEL = "job-name"  # set by the Job controller on each pod it makes
_POD_META_KEYS = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp")


def _meta(body: Body) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {k: meta[k] for k in _META_KEYS if meta.get(k) is not None}


def slim_custom(kind: str, api_version: str) -> Any:
    def slim(body: Body) -> Body:
        out: Body = {"apiVersion": api_version, "kind": kind, "metadata": _meta(body)}
        for part in ("spec", "status"):
            if body.get(part) is not None:
                out[part] = body[part]
        return out
    return slim


def slim_waitpoint(api_version: str) -> Any:
    """A Waitpoint without its completion's data (up to 64 KiB each): read once, when its run resumes."""
    slim_all = slim_custom("Waitpoint", api_version)

    def slim(body: Body) -> Body:
        out = slim_all(body)
        if "status" in out:
            out["status"] = {k: v for k, v in out["status"].items() if k != "data"}
        return out
    return slim


# What the operator still reads of a finished run (Task status, cron history, slots, retention,
# which of its hooks are still to fire):
# not its payload, result, error, tags or history, which can be most of its size. (The dashboard
# keeps a store of its own, in the user's process.)
_FINISHED_SPEC_KEYS = ("taskRef", "idempotencyKey", "cancel", "ttlSecondsAfterFinished", "parentRun")
_FINISHED_STATUS_KEYS = ("phase", "attempt", "startTime", "completionTime", "duplicateOf", "triggerDepth",
                         "idempotencyKeyExpiresAt",  # core.dedup.key_released
                         "supersededBy", "hooks",
                         "ancestorMetadata")  # what it adds to its ancestors' ctx.metadata, counted till they end


def slim_event(api_version: str) -> Any:
    """A TaskEvent; without its data once dispatched (up to 64 KiB each, held for the retention)."""
    slim_all = slim_custom("TaskEvent", api_version)

    def slim(body: Body) -> Body:
        out = slim_all(body)
        if (out.get("status") or {}).get("dispatchedAt") and "spec" in out:
            out["spec"] = {k: v for k, v in out["spec"].items() if k != "data"}
        return out
    return slim


def _events_subscribed(task: Body) -> list[tuple[str, str]]:
    ns = task["metadata"].get("namespace", "")
    return sorted({(ns, str(sub.get("event"))) for sub in (task.get("spec") or {}).get("on") or []
                   if isinstance(sub, dict) and sub.get("event")})


def _event_name(event: Body) -> list[tuple[str, str]]:
    return [(event["metadata"].get("namespace", ""), str((event.get("spec") or {}).get("event", "")))]


def _event_waits(run: Body) -> list[tuple[str, str]]:
    """The events an unfinished run waits for (its status.waitingOn), by name."""
    if _finished(run):
        return []
    ns = run["metadata"].get("namespace", "")
    return sorted({(ns, e[len(EVENT):].split(":", 1)[0]) for e in (run.get("status") or {}).get("waitingOn") or []
                   if isinstance(e, str) and e.startswith(EVENT)})


def slim_run(api_version: str) -> Any:
    whole = slim_custom("TaskRun", api_version)

    def slim(body: Body) -> Body:
        out: Body = whole(body)
        notes = (body.get("metadata") or {}).get("annotations") or {}
        traced = {k: notes[k] for k in TRACE_ANNOTATIONS if isinstance(notes.get(k), str) and len(notes[k]) <= 1024}
        if traced:  # the caller's trace context (core.tracing), in 2 KiB at most
            out["metadata"]["annotations"] = traced
        if _finished(out):
            spec, status = out.get("spec") or {}, out.get("status") or {}
            out["spec"] = {k: spec[k] for k in _FINISHED_SPEC_KEYS if k in spec}
            out["status"] = {k: status[k] for k in _FINISHED_STATUS_KEYS if k in status}
        return out
    return slim


def slim_job(body: Body) -> Body:
    status = body.get("status") or {}
    meta = _meta(body)
    version = ((body.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_TASK_VERSION)
    if version:  # the version it runs, for a restart that must lock it (core.version), in 2 KiB at most
        meta["annotations"] = {ANNOTATION_TASK_VERSION: kept(version)}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "status": {k: status[k] for k in _JOB_STATUS_KEYS if k in status}}


def slim_pod(body: Body) -> Body:
    """What is read of a pod, in a fraction of its size (a day of finished Jobs' pods is held):
    its Job's name and uid, its node, its containers' commands (whether it speaks the runtime's
    protocol, core.results), phase and container states, and whether it is scheduled."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    labels = meta.get("labels") or {}
    job = labels.get(JOB_NAME_LABEL) or labels.get(f"batch.kubernetes.io/{JOB_NAME_LABEL}")
    slim = {k: status[k] for k in _POD_STATUS_KEYS if k in status}
    if "containerStatuses" in slim:  # their states only: no images or container ids
        slim["containerStatuses"] = [{k: cs[k] for k in ("name", "state", "lastState") if k in cs}
                                     for cs in slim["containerStatuses"]]
    if "conditions" in slim:
        slim["conditions"] = [{k: c[k] for k in ("type", "status", "reason", "message") if k in c}
                              for c in slim["conditions"] if c.get("type") == "PodScheduled"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**{k: meta[k] for k in _POD_META_KEYS if meta.get(k) is not None},
                         "labels": {k: v for k, v in ((JOB_NAME_LABEL, job), (JOB_UID_LABEL, labels.get(JOB_UID_LABEL)))
                                    if v}},
            "spec": {**{k: spec[k] for k in ("nodeName",) if k in spec},
                     "containers": [{k: c[k] for k in ("name", "command") if k in c} for c in spec.get("containers") or []]},
            "status": slim}


def slim_labelled_checkpoint(body: Body) -> Body:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {**{k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if meta.get(k)},
                         "labels": {k: labels[k] for k in (METADATA_LABEL, LABEL_RUN_UID) if k in labels}}}


def run_uid_label(body: Body) -> list[Any]:
    uid = ((body.get("metadata") or {}).get("labels") or {}).get(LABEL_RUN_UID)
    return [uid] if uid else []


def _job_of_pod(pod: Body) -> list[Key]:
    job = (pod["metadata"].get("labels") or {}).get(JOB_NAME_LABEL)
    return [(pod["metadata"].get("namespace", ""), job)] if job else []


def _task_of(run: Body) -> list[Key]:
    return [(run["metadata"].get("namespace", ""), (run.get("spec") or {}).get("taskRef", ""))]


def _parent_of(run: Body) -> list[Key]:
    parent = (run.get("spec") or {}).get("parentRun")
    return [(run["metadata"].get("namespace", ""), parent)] if parent else []


def _debounce_group(run: Body) -> list[tuple[str, str, str]]:
    key = group_key(run) if not _finished(run) else None  # core.debounce: its unfinished runs
    return [key] if key else []


def _key_group(run: Body) -> list[tuple[str, str, str]]:
    spec = run.get("spec") or {}
    key = spec.get("idempotencyKey")
    return [(run["metadata"].get("namespace", ""), spec.get("taskRef", ""), str(key))] \
        if key and not _finished(run) else []


def _superseded_into(run: Body) -> list[Key]:
    into = (run.get("status") or {}).get("supersededBy")
    return [(run["metadata"].get("namespace", ""), into)] if into else []


def _overlap(run: Body) -> list[tuple[str, str, str]]:
    key = overlap_key(run)  # core.overlap: unfinished runs by Task and concurrency key
    return [key] if key else []


def _uid(body: Body) -> list[str]:
    uid = uid_of(body)
    return [uid] if uid else []


def _owner_of(job: Body) -> list[str]:
    uid = controller_uid(job)
    return [uid] if uid else []


def _finished(run: Body) -> bool:
    try:
        return Phase((run.get("status") or {}).get("phase") or Phase.PENDING).finished
    except ValueError:  # not a phase of ours: someone else's write
        return False


def attempt_of(job: Body) -> int:
    try:
        return int((job["metadata"].get("labels") or {}).get(LABEL_ATTEMPT, "0"))
    except ValueError:
        return 0


class Cache:
    def __init__(self, api_version: str = "kubetasks.io/v1alpha1") -> None:
        self.tasks = Store("Task", slim_custom("Task", api_version), {"event": _events_subscribed})
        self.events = Store("TaskEvent", slim_event(api_version), {"name": _event_name})  # sent events (kubetasks send), until dispatched and expired
        self.queues = Store("TaskQueue", slim_custom("TaskQueue", api_version))  # shared limits (flow control)
        self.waitpoints = Store("Waitpoint", slim_waitpoint(api_version))  # tokens waiting runs wait for
        self.runs = Store("TaskRun", slim_run(api_version), {"task": _task_of, "uid": _uid, "parent": _parent_of,
                                                              "debounce": _debounce_group, "key": _key_group, "superseded": _superseded_into,
                                                              "overlap": _overlap, "event_wait": _event_waits})
        self.jobs = Store("Job", slim_job, {"owner": _owner_of})
        self.job_pods = Store("Pod", slim_pod, {"job": _job_of_pod})
        # Kept logs (core.logs): their sizes and ages, for the budget; never their text.
        self.logs = Store("ConfigMap", slim_kept_log, {"namespace": lambda b: [key_of(b)[0]]})
        # Checkpoint ConfigMaps that hold ctx.metadata (protocol.METADATA_LABEL): their labels only.
        self.checkpoints = Store("ConfigMap", slim_labelled_checkpoint, {"run": run_uid_label})
        self.gone: dict[str, dict[str, Body]] = defaultdict(dict)  # run uid -> Job name -> last state
        self.expected: dict[str, dict[int, float]] = defaultdict(dict)  # run uid -> attempt -> deadline
        # Pods of finished attempts (exit codes, termination messages): read once per attempt,
        # by run uid and Job name; kept until the run is finished.
        self.pods: dict[str, dict[str, list[Body]]] = defaultdict(dict)
        self.claimed: set[str] = set()  # uids of runs known to hold their idempotency key
        self.parent_access: set[str] = set()  # uids of child runs whose parent may read them
        self.jobs.listeners.append(self._job_changed)
        self.runs.listeners.append(self._run_changed)

    @property
    def synced(self) -> bool:
        return self.tasks.synced and self.runs.synced and self.jobs.synced

    def subscribers(self, namespace: str, event: str) -> list[Body]:
        """The Tasks whose spec.on names ``event``."""
        return self.tasks.by("event", (namespace, event))

    def events_named(self, namespace: str, event: str) -> list[Body]:
        return self.events.by("name", (namespace, event))

    def waiting_for_event(self, namespace: str, event: str) -> list[Body]:
        """The unfinished runs whose status says they wait for ``event`` (ctx.step.wait_for_event)."""
        return self.runs.by("event_wait", (namespace, event))

    def runs_of_task(self, namespace: str, task: str) -> list[Body]:
        return self.runs.by("task", (namespace, task))

    def debounce_group(self, namespace: str, task: str, key: str) -> list[Body]:
        """The unfinished runs of a Task with this debounce key (core.debounce)."""
        return self.runs.by("debounce", (namespace, task, key))

    def with_key(self, namespace: str, task: str, key: str) -> list[Body]:
        """The unfinished runs of a Task with this idempotency key (core.dedup.claims_first)."""
        return self.runs.by("key", (namespace, task, key))

    def superseded_into(self, namespace: str, run: str) -> list[Body]:
        """The runs superseded by ``run`` (their status.supersededBy)."""
        return self.runs.by("superseded", (namespace, run))

    def overlapping(self, namespace: str, task: str, key: str) -> list[Body]:
        """The unfinished runs of a Task with this concurrency key ("" for none) (core.overlap)."""
        return self.runs.by("overlap", (namespace, task, key))

    def children_of(self, namespace: str, run: str) -> list[Body]:
        """The runs that name ``run`` as their ``parentRun`` (triggered by it), finished or not."""
        return self.runs.by("parent", (namespace, run))

    def jobs_of_run(self, uid: str) -> list[Body]:
        return self.jobs.by("owner", uid)

    def pods_of_job(self, namespace: str, job: str) -> list[Body]:
        return self.job_pods.by("job", (namespace, job))

    def pods_of(self, job: Body) -> list[Body]:
        """A Job's pods, as the pod informer has them."""
        meta = job["metadata"]
        return self.pods_of_job(meta.get("namespace", ""), meta.get("name", ""))

    def job_of(self, pod: Body) -> Body | None:
        """The Job a pod of ``job_pods`` belongs to, as the store has it."""
        keys = _job_of_pod(pod)
        return self.jobs.get(keys[0]) if keys else None

    def attempt_ended(self, job: Body) -> bool:
        """Its Job ended, or its pod succeeded, as the informers show (core.children)."""
        return attempt_ended(job, self.pods_of(job))

    def run_by_uid(self, uid: str) -> Body | None:
        found = self.runs.by("uid", uid)
        return found[0] if found else None

    # Expectations --------------------------------------------------------------------------
    def expect(self, run_uid: str, attempt: int) -> None:
        self.expected[run_uid][attempt] = time.monotonic() + EXPECTATION_SECONDS

    def expected_attempts(self, run_uid: str) -> set[int]:
        now = time.monotonic()
        pending = self.expected.get(run_uid) or {}
        for attempt in [a for a, deadline in pending.items() if deadline < now]:
            del pending[attempt]
        return set(pending)

    def settle(self, run_uid: str, recorded: set[str]) -> None:
        """The run's status now has the outcomes of the Jobs named ``recorded``: forget them."""
        gone = self.gone.get(run_uid)
        if gone:
            for name in recorded & set(gone):
                del gone[name]
            if not gone:
                del self.gone[run_uid]

    def forget(self, run_uid: str) -> None:
        """The run is finished or gone: nothing of it is needed any more."""
        self.gone.pop(run_uid, None)
        self.expected.pop(run_uid, None)
        self.pods.pop(run_uid, None)
        self.claimed.discard(run_uid)
        self.parent_access.discard(run_uid)

    # Listeners -----------------------------------------------------------------------------
    def _job_changed(self, old: Body | None, new: Body | None) -> None:
        if new is not None:
            owner = controller_uid(new)
            if owner and owner in self.expected:
                self.expected[owner].pop(attempt_of(new), None)
                if not self.expected[owner]:
                    del self.expected[owner]
        elif old is not None:
            owner = controller_uid(old)
            run = self.run_by_uid(owner) if owner else None
            if owner and run is not None and not _finished(run):  # only while its outcome may matter
                self.gone[owner][old["metadata"]["name"]] = old

    def _run_changed(self, old: Body | None, new: Body | None) -> None:
        if new is None and old is not None:
            self.forget(uid_of(old) or "")
