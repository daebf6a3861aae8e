"""Triggering runs from Python: create a TaskRun, get a handle to wait on or cancel it.

Works from anywhere with Kubernetes access (a web app, a script, another task). Inside a running
task the new run records its parent (``spec.parentRun``). A retried attempt triggers again, so
inside tasks either pass an ``idempotency_key`` or trigger from within a step.

A key's run that exists already is returned only after reading it (:func:`idempotent_mismatch`).
A task pod whose Role may not ``get`` other runs cannot read it, so triggering a key a second time
from a task pod raises :class:`IdempotencyConflict` rather than trusting whoever holds the name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from kubetasks import protocol
from kubetasks.protocol import canonical
from kubetasks.api.common import API_VERSION, GROUP, VERSION, Machine
from kubetasks.api.machines import machine_of
from kubetasks.api.taskrun import Phase
from kubetasks.core.debounce import followed
from kubetasks.core.dedup import key_released
from kubetasks.core.naming import (
    ANNOTATION_TRIGGER, LABEL_INSTANCE, LABEL_TASK, idempotent_run_name, label_value, successor_run_name,
)
from kubetasks.runtime.durations import DurationLike, duration_string
from kubetasks.runtime.encoding import encode_json, revive, to_json_value
from kubetasks.runtime.flow import DebounceLike, flow_spec
from kubetasks.runtime.payloads import place_payload
from kubetasks.runtime.errors import IdempotencyConflict, RunFailed
from kubetasks.runtime.results import result_of
from kubetasks.runtime.tracing import caller_annotations

log = logging.getLogger("kubetasks.runtime")

PLURAL = "taskruns"
FINISHED = tuple(p.value for p in Phase if p.finished)


@runtime_checkable
class TaskLike(Protocol):
    """What triggering needs of a task (a ``@task``, :class:`kubetasks.runtime.task.TaskDefinition`):
    its id, and its models to check a payload and read a result with. By shape, so that the task
    module may use this one and not the other way round."""

    @property
    def id(self) -> str: ...

    @property
    def payload_model(self) -> type[BaseModel] | None: ...

    @property
    def result_model(self) -> type[BaseModel] | None: ...


TaskRef = TaskLike | str
_TRANSIENT = (429, 500, 502, 503, 504)


# -- pure parts --------------------------------------------------------------------------------------

def task_id_of(task: TaskRef) -> str:
    if isinstance(task, str) and task:
        return task
    if isinstance(task, TaskLike):
        return task.id
    raise TypeError(f"a task is a @task function or a task id string, not {type(task).__name__}")


def payload_of(task: TaskRef, payload: Any) -> Any:
    """The JSON payload to send. With a @task that has a payload model, the payload is validated
    here, so a bad one fails in the caller rather than in a pod."""
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json")
    if isinstance(task, TaskLike) and task.payload_model is not None:
        task.payload_model.model_validate(payload)
    encode_json(payload, "payload")
    return to_json_value(payload, "payload")


def taskrun_manifest(task_id: str, payload: Any, *, namespace: str, delay: DurationLike | None = None,
                     idempotency_key: str | None = None, tags: Iterable[str] | None = None,
                     machine: Machine | dict[str, Any] | str | None = None,
                     parent_run: str | None = None, instance: str | None = None,
                     concurrency_key: str | None = None, priority: int | None = None,
                     debounce: DebounceLike | None = None,
                     idempotency_key_ttl: DurationLike | None = None, inherit_version: bool = False) -> dict[str, Any]:
    """The TaskRun to create. With an idempotency key its name is derived from the key, so a second
    create with the same key is a 409 rather than a second run, and an annotation holds the digest
    of task, key and payload (see :func:`idempotent_mismatch`). The flow-control options are
    checked here (:func:`kubetasks.runtime.flow.flow_spec`): a bad one raises before any create."""
    flow = flow_spec(concurrency_key=concurrency_key, priority=priority, debounce=debounce)
    metadata: dict[str, Any] = {"namespace": namespace, "labels": {LABEL_TASK: label_value(task_id)}}
    if instance:
        metadata["labels"][LABEL_INSTANCE] = instance
    if idempotency_key:
        metadata["name"] = idempotent_run_name(task_id, idempotency_key)
        metadata["annotations"] = {ANNOTATION_TRIGGER: trigger_digest(task_id, idempotency_key, payload)}
    else:
        metadata["generateName"] = f"{task_id}-"
    spec: dict[str, Any] = {"taskRef": task_id, "payload": payload}
    if delay is not None:
        spec["delay"] = duration_string(delay)
    if idempotency_key:
        spec["idempotencyKey"] = idempotency_key
        if idempotency_key_ttl is not None:
            spec["idempotencyKeyTTL"] = duration_string(idempotency_key_ttl)
    if tags:
        spec["tags"] = [str(t) for t in tags]
    size = machine_of(machine)
    if size is not None:
        spec["machine"] = size.to_api()
    if parent_run:
        spec["parentRun"] = parent_run
        if inherit_version:  # a child its parent waits for: the parent's version, when the same Task
            spec["inheritVersion"] = True
    spec.update(flow)
    return {"apiVersion": API_VERSION, "kind": "TaskRun", "metadata": metadata, "spec": spec}


def trigger_digest(task_id: str, key: str, payload: Any) -> str:
    """What the annotation of a keyed run says: the sha256 of its task, key and payload."""
    text = json.dumps([task_id, key, canonical(payload)], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def idempotent_mismatch(existing: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """Why ``existing``, the run that holds a keyed run's name, is not the run that ``wanted`` (a
    :func:`taskrun_manifest` with a key) would have created; None when it is. Anyone who may create
    TaskRuns can take a name the key decides: only a run of the same Task and key, with the same
    payload, made by ``trigger`` (its annotation) may stand for this trigger. Never quotes a payload."""
    spec, want = existing.get("spec") or {}, wanted["spec"]
    if spec.get("taskRef") != want["taskRef"]:
        return f"runs task {str(spec.get('taskRef'))[:253]!r}"
    if spec.get("idempotencyKey") != want["idempotencyKey"]:
        return "has another idempotency key, or none"
    if canonical(spec.get("payload")) != canonical(want.get("payload")):
        return "has another payload (an idempotency key stands for one payload)"
    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    if annotations.get(ANNOTATION_TRIGGER) != wanted["metadata"]["annotations"][ANNOTATION_TRIGGER]:
        return f"was not made by trigger() with this key (no {ANNOTATION_TRIGGER} annotation of it)"
    return None


def finished_result(name: str, status: dict[str, Any]) -> tuple[bool, Any]:
    """(finished, result) from a TaskRun's status; raises RunFailed when it finished badly."""
    phase = status.get("phase")
    if phase not in FINISHED:
        return False, None
    if phase == "Succeeded":
        return True, status.get("result")
    raise RunFailed(name, str(phase), status.get("error"))


# -- handles -----------------------------------------------------------------------------------------

def _custom() -> Any:
    from kubernetes.client import CustomObjectsApi

    from kubetasks.runtime.kube import api_client

    return CustomObjectsApi(api_client())


def _transient(e: BaseException) -> bool:
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if isinstance(e, ApiException):
        return e.status in _TRANSIENT
    return isinstance(e, (urllib3.exceptions.HTTPError, OSError))


ACCESS_GRACE_SECONDS = 60.0


def _status_of(e: BaseException) -> int | None:
    from kubernetes.client.exceptions import ApiException

    return e.status if isinstance(e, ApiException) else None


def retryable(e: BaseException, grace_until: float) -> bool:
    """A failed read of a run worth trying again: a transient error, or before ``grace_until``
    (time.monotonic) a 403 or 404. Inside a task pod, the right to read a child is granted by the
    operator when it first sees the child: until then (or a cache's lag after the create) 403 or 404."""
    return _transient(e) or (_status_of(e) in (403, 404) and time.monotonic() < grace_until)


class RunHandle:
    """A TaskRun that was triggered: its name, status and result."""

    def __init__(self, name: str, namespace: str, task: TaskLike | None = None) -> None:
        self.name = name
        self.namespace = namespace
        self.task = task

    @property
    def id(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"RunHandle({self.namespace}/{self.name})"

    def get(self, name: str | None = None) -> dict[str, Any]:
        """The whole TaskRun object (this one, or the run ``name``)."""
        return dict(_custom().get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name or self.name))

    def status(self) -> dict[str, Any]:
        """The TaskRun's status (phase, attempt, result, error...); {} before the operator saw it."""
        return dict(self.get().get("status") or {})

    def look(self) -> tuple[bool, Any, str]:
        """One look at the run: (finished, its result as JSON data, the name of the run that
        decided it). A run Superseded (debounce) or Duplicate (idempotency key) is followed to the
        run that ran in its place. A result kept by reference is read and its sha256 checked
        (runtime.results). Raises RunFailed when it failed, was cancelled, skipped or timed out."""
        name, seen = self.name, {self.name}
        while True:
            body = self.get(name)
            status = dict(body.get("status") or {})
            into = followed(status)
            if into is not None and into not in seen:
                log.info("TaskRun %s/%s ended %s: following %s", self.namespace, name, status.get("phase"), into)
                name = into
                seen.add(into)
                continue
            done, result = finished_result(name, status)
            if done and status.get("resultRef") is not None:
                result = result_of(self.namespace, name, status, dict(body.get("metadata") or {}))
            return done, result, name

    def wait(self, timeout: float | None = None, poll_interval: float = 5.0) -> Any:
        """Waits until the run finishes and returns its result (validated into the task's return
        model, if any); raises RunFailed when it failed, was cancelled, skipped or timed out, and
        TimeoutError after ``timeout`` seconds (see :meth:`look`). Polls with GET (all a task pod
        may do), starting fast and backing off to ``poll_interval``. Inside a task,
        ``ctx.step.trigger_and_wait`` waits without a pod."""
        deadline = None if timeout is None else time.monotonic() + timeout
        granted_by = time.monotonic() + ACCESS_GRACE_SECONDS
        delay = 0.25
        while True:
            try:
                done, result, _ = self.look()
            except RunFailed:
                raise
            except Exception as e:
                if not retryable(e, granted_by):
                    raise
                log.warning("reading TaskRun %s/%s: %s; retrying", self.namespace, self.name,
                            getattr(e, "reason", None) or e)
            else:
                if done:
                    return revive(result, self.task.result_model if self.task is not None else None)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"TaskRun {self.namespace}/{self.name} did not finish within {timeout}s")
            pause = delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic()))
            time.sleep(pause)
            delay = min(delay * 2, poll_interval)

    def cancel(self) -> None:
        """Cancels the run (``spec.cancel: true``). Needs patch on taskruns, which task pods do not
        have by default."""
        _custom().patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name,
                                                 {"spec": {"cancel": True}},
                                                 _content_type="application/merge-patch+json")


# -- triggering --------------------------------------------------------------------------------------

def trigger(task: TaskRef, payload: Any = None, *, delay: DurationLike | None = None,
            idempotency_key: str | None = None, idempotency_key_scope: KeyScope | None = None,
            idempotency_key_ttl: DurationLike | None = None, tags: Iterable[str] | None = None,
            namespace: str | None = None, machine: Machine | dict[str, Any] | str | None = None,
            concurrency_key: str | None = None, priority: int | None = None,
            debounce: DebounceLike | None = None, _waited: bool = False) -> RunHandle:
    """Creates a TaskRun of ``task`` (a @task function or a task id) and returns its handle.

    ``delay``: start no sooner than this (seconds, timedelta or "5m"). ``machine``: a preset name
    or Machine that overrides the Task's.

    ``idempotency_key``: at most one run per task and key. Triggering again returns the key's run
    (``.wait()`` waits for it, and two callers racing get the one run), until the key is released:
    its run failed or timed out, or ``idempotency_key_ttl`` (the Task's idempotencyKeyTTL, 30 days,
    when None) passed since it was created. Then a new run is made. ``idempotency_key_scope``:
    inside a task, keys are the triggering run's by default (``"run"``): the same key in two runs
    makes two children. ``"attempt"``: each attempt's own (a retry triggers again). ``"global"``:
    the key alone, as outside a task.

    Flow control (the Task's ``concurrency``, ``throttle`` and ``overlap`` say what they do):
    ``concurrency_key``: the key its Task's per-key limits count by (a tenant, a user).
    ``priority``: seconds ahead in line (-86400 to 86400): it waits as if created that much earlier.
    ``debounce``: a :class:`~kubetasks.api.flow.Debounce` or a dict ``{"key", "delay",
    "max_delay", "mode"}``: runs of one key close together become one run. A bad value raises
    ValueError or TypeError before anything is created.

    Raises :class:`IdempotencyConflict` when the key's run name is held by a run that is not this
    trigger's: another task or payload, or not made by ``trigger`` with this key.
    """
    key = scoped_key(idempotency_key, idempotency_key_scope, os.environ) if idempotency_key else None
    return _trigger(task, payload, key, True, namespace, delay=delay, idempotency_key_ttl=idempotency_key_ttl,
                    tags=tags, machine=machine, concurrency_key=concurrency_key, priority=priority,
                    debounce=debounce, inherit_version=_waited)


def trigger_child(task: TaskRef, payload: Any, key: str, **options: Any) -> RunHandle:
    """A durable wait's child (runtime.waits, runtime.any_of), named after ``key`` as given (the
    run's and the step's already). A child of the key that failed is the child all the same: the
    wait reads it by that name, and a parent never runs a child again. It runs its parent's
    locked version when it is of the parent's Task (core.version)."""
    return _trigger(task, payload, key, False, None, inherit_version=True, **options)


def _trigger(task: TaskRef, payload: Any, key: str | None, rerun_released: bool, namespace: str | None,
             **options: Any) -> RunHandle:
    from kubetasks.runtime.kube import default_namespace

    task_id = task_id_of(task)
    ns = namespace or default_namespace()
    body = taskrun_manifest(task_id, payload_of(task, payload), namespace=ns, idempotency_key=key,
                            parent_run=os.environ.get(protocol.ENV_RUN) or None,
                            instance=os.environ.get(protocol.ENV_INSTANCE) or None, **options)
    traced = caller_annotations()  # the caller's span, when it has one (runtime.tracing)
    if traced:
        body["metadata"]["annotations"] = {**body["metadata"].get("annotations", {}), **traced}
    place_payload(body["spec"], ns)  # a large payload goes to the store (runtime.payloads)
    name = _create(body, key, rerun_released)
    return RunHandle(name, ns, task if isinstance(task, TaskLike) else None)


KeyScope = Literal["run", "attempt", "global"]
KEY_LIMIT = 256  # characters of spec.idempotencyKey (api.taskrun)


def scoped_key(key: str, scope: KeyScope | None, env: Mapping[str, str]) -> str:
    """The idempotency key a run is given: inside a task (``env`` names its run), the triggering
    run's own by default, as Trigger.dev scopes them: ``<run uid>/<key>``, or
    ``<run uid>/<attempt>/<key>`` for ``"attempt"``. ``"global"``, and any key outside a task: as given."""
    run_uid = env.get(protocol.ENV_RUN_UID)
    scope = scope or ("run" if run_uid else "global")
    if scope not in ("run", "attempt", "global"):
        raise ValueError(f"idempotency_key_scope must be 'run', 'attempt' or 'global', not {scope!r}")
    if scope == "global":
        return key
    if not run_uid:
        raise ValueError(f"idempotency_key_scope={scope!r} needs a task run to scope the key to: outside a task, "
                         "keys are global")
    scoped = f"{run_uid}/{key}" if scope == "run" else f"{run_uid}/{env.get(protocol.ENV_ATTEMPT, '')}/{key}"
    if len(scoped) > KEY_LIMIT:
        raise ValueError(f"idempotency key {key[:40]!r}... is {len(scoped)} characters scoped to its {scope} "
                         f"({scoped[:len(scoped) - len(key)]!r} before it); the limit is {KEY_LIMIT}")
    return scoped


CHAIN_LIMIT = 100  # runs of one key that released it, followed to the one that holds it now


def _create(body: dict[str, Any], key: str | None, rerun_released: bool = True, tries: int = 3) -> str:
    """Creates the run; with a key, a run already holding its name is returned only when it is this
    trigger's (:func:`idempotent_mismatch`). One that released the key (core.dedup.key_released:
    it failed, or the key's TTL passed) has a successor, named after it (naming.successor_run_name):
    that one is created, or returned when a racing trigger made it first."""
    from kubernetes.client.exceptions import ApiException

    api, ns = _custom(), body["metadata"]["namespace"]
    gone = 0
    for _ in range(CHAIN_LIMIT):
        try:
            created = api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        except ApiException as e:
            if e.status != 409 or not key:
                raise
        else:
            log.info("triggered TaskRun %s/%s", ns, created["metadata"]["name"])
            return str(created["metadata"]["name"])
        name, task_id = body["metadata"]["name"], body["spec"]["taskRef"]
        try:
            existing = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                gone += 1
                if gone < tries:
                    continue  # deleted since: create it again
                raise IdempotencyConflict(ns, name, task_id, key, f"was deleted and taken again {tries} times "
                                          "while being triggered") from e
            if e.status == 403:
                raise IdempotencyConflict(ns, name, task_id, key, "may not be read here, so it cannot be "
                                          "verified as this trigger's run") from e
            raise
        if rerun_released and key_released(existing, datetime.now(timezone.utc)):
            body = {**body, "metadata": {**body["metadata"],
                                         "name": successor_run_name(task_id, key, str(existing["metadata"]["uid"]))}}
            log.info("TaskRun %s/%s released idempotency key %r (%s): trying %s", ns, name, key,
                     (existing.get("status") or {}).get("phase"), body["metadata"]["name"])
            continue
        reason = idempotent_mismatch(existing, body)
        if reason:
            raise IdempotencyConflict(ns, name, task_id, key, reason)
        log.info("TaskRun %s/%s exists for idempotency key %r", ns, name, key)
        return name
    raise IdempotencyConflict(ns, body["metadata"]["name"], body["spec"]["taskRef"], key or "",
                              f"is one of {CHAIN_LIMIT} runs of the key that released it")


def trigger_and_wait(task: TaskRef, payload: Any = None, *, timeout: float | None = None, **options: Any) -> Any:
    """Triggers a run and waits for its result (see :meth:`RunHandle.wait`). Inside a run of the
    same Task, the child runs its parent's locked version (core.version)."""
    return trigger(task, payload, _waited=True, **options).wait(timeout=timeout)


def batch_trigger(task: TaskRef, payloads: Iterable[Any], *, idempotency_key: str | None = None,
                  **options: Any) -> list[RunHandle]:
    """Triggers one run per payload. With ``idempotency_key``, item i uses ``"<key>:<i>"``, so
    repeating the batch triggers nothing new. Other options (``concurrency_key``, ``priority``,
    ``debounce``...) as :func:`trigger`, the same for every item; they are checked once, before
    the first create, so a bad one creates nothing."""
    flow_spec(**{k: options[k] for k in ("concurrency_key", "priority", "debounce") if k in options})
    handles = []
    for index, payload in enumerate(payloads):
        key = f"{idempotency_key}:{index}" if idempotency_key else None
        handles.append(trigger(task, payload, idempotency_key=key, **options))
    return handles
