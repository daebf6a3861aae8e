"""Triggering runs from Python: create a TaskRun, get a handle to wait on or cancel it.

Works from anywhere with Kubernetes access (a web app, a script, another task). Inside a running
task the new run records its parent (``spec.parentRun``). A retried attempt triggers again, so
inside tasks either pass an ``idempotency_key`` or trigger from within a step.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from kubetasks import protocol
from kubetasks.api.common import API_VERSION, GROUP, VERSION, Machine
from kubetasks.core.naming import LABEL_TASK, idempotent_run_name, label_value
from kubetasks.runtime.durations import DurationLike, duration_string
from kubetasks.runtime.encoding import encode_json, revive, to_json_value
from kubetasks.runtime.errors import RunFailed
from kubetasks.runtime.task import TaskDefinition, machine_of

log = logging.getLogger("kubetasks.runtime")

PLURAL = "taskruns"
FINISHED = ("Succeeded", "Failed", "Cancelled", "TimedOut")
TaskRef = TaskDefinition[Any, Any] | str
_TRANSIENT = (429, 500, 502, 503, 504)


# -- pure parts --------------------------------------------------------------------------------------

def task_id_of(task: TaskRef) -> str:
    if isinstance(task, TaskDefinition):
        return task.id
    if isinstance(task, str) and task:
        return task
    raise TypeError(f"a task is a @task function or a task id string, not {type(task).__name__}")


def payload_of(task: TaskRef, payload: Any) -> Any:
    """The JSON payload to send. With a @task that has a payload model, the payload is validated
    here, so a bad one fails in the caller rather than in a pod."""
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json")
    if isinstance(task, TaskDefinition) and task.payload_model is not None:
        task.payload_model.model_validate(payload)
    encode_json(payload, "payload")
    return to_json_value(payload, "payload")


def taskrun_manifest(task_id: str, payload: Any, *, namespace: str, delay: DurationLike | None = None,
                     idempotency_key: str | None = None, tags: Iterable[str] | None = None,
                     machine: Machine | dict[str, Any] | str | None = None,
                     parent_run: str | None = None) -> dict[str, Any]:
    """The TaskRun to create. With an idempotency key its name is derived from the key, so a second
    create with the same key is a 409 rather than a second run."""
    metadata: dict[str, Any] = {"namespace": namespace, "labels": {LABEL_TASK: label_value(task_id)}}
    if idempotency_key:
        metadata["name"] = idempotent_run_name(task_id, idempotency_key)
    else:
        metadata["generateName"] = f"{task_id}-"
    spec: dict[str, Any] = {"taskRef": task_id, "payload": payload}
    if delay is not None:
        spec["delay"] = duration_string(delay)
    if idempotency_key:
        spec["idempotencyKey"] = idempotency_key
    if tags:
        spec["tags"] = [str(t) for t in tags]
    size = machine_of(machine)
    if size is not None:
        spec["machine"] = size.to_api()
    if parent_run:
        spec["parentRun"] = parent_run
    return {"apiVersion": API_VERSION, "kind": "TaskRun", "metadata": metadata, "spec": spec}


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


class RunHandle:
    """A TaskRun that was triggered: its name, status and result."""

    def __init__(self, name: str, namespace: str, task: TaskDefinition[Any, Any] | None = None) -> None:
        self.name = name
        self.namespace = namespace
        self.task = task

    @property
    def id(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"RunHandle({self.namespace}/{self.name})"

    def get(self) -> dict[str, Any]:
        """The whole TaskRun object."""
        return dict(_custom().get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name))

    def status(self) -> dict[str, Any]:
        """The TaskRun's status (phase, attempt, result, error...); {} before the operator saw it."""
        return dict(self.get().get("status") or {})

    def wait(self, timeout: float | None = None, poll_interval: float = 5.0) -> Any:
        """Waits until the run finishes and returns its result (validated into the task's return
        model, if any); raises RunFailed when it failed, was cancelled or timed out, and
        TimeoutError after ``timeout`` seconds. Polls with GET (all a task pod may do), starting
        fast and backing off to ``poll_interval``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay, phase = 0.25, None
        while True:
            try:
                status = self.status()
            except Exception as e:
                if not _transient(e):
                    raise
                log.warning("reading TaskRun %s/%s: %s; retrying", self.namespace, self.name, e)
            else:
                phase = status.get("phase")
                done, result = finished_result(self.name, status)
                if done:
                    model = self.task.result_model if self.task is not None else None
                    return revive(result, model)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"TaskRun {self.namespace}/{self.name} did not finish within {timeout}s "
                                   f"(phase {phase or 'unknown'})")
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
            idempotency_key: str | None = None, tags: Iterable[str] | None = None, namespace: str | None = None,
            machine: Machine | dict[str, Any] | str | None = None) -> RunHandle:
    """Creates a TaskRun of ``task`` (a @task function or a task id) and returns its handle.

    ``delay``: start no sooner than this (seconds, timedelta or "5m"). ``idempotency_key``: at most
    one run per task and key; triggering again returns the existing run. ``machine``: a preset
    name or Machine that overrides the Task's.
    """
    from kubernetes.client.exceptions import ApiException

    from kubetasks.runtime.kube import default_namespace

    task_id = task_id_of(task)
    ns = namespace or default_namespace()
    body = taskrun_manifest(task_id, payload_of(task, payload), namespace=ns, delay=delay,
                            idempotency_key=idempotency_key, tags=tags, machine=machine,
                            parent_run=os.environ.get(protocol.ENV_RUN) or None)
    definition = task if isinstance(task, TaskDefinition) else None
    try:
        created = _custom().create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    except ApiException as e:
        if e.status == 409 and idempotency_key:
            log.info("TaskRun %s/%s exists for idempotency key %r", ns, body["metadata"]["name"], idempotency_key)
            return RunHandle(body["metadata"]["name"], ns, definition)
        raise
    name = created["metadata"]["name"]
    log.info("triggered TaskRun %s/%s", ns, name)
    return RunHandle(name, ns, definition)


def trigger_and_wait(task: TaskRef, payload: Any = None, *, timeout: float | None = None, **options: Any) -> Any:
    """Triggers a run and waits for its result (see :meth:`RunHandle.wait`)."""
    return trigger(task, payload, **options).wait(timeout=timeout)


def batch_trigger(task: TaskRef, payloads: Iterable[Any], *, idempotency_key: str | None = None,
                  **options: Any) -> list[RunHandle]:
    """Triggers one run per payload. With ``idempotency_key``, item i uses ``"<key>:<i>"``, so
    repeating the batch triggers nothing new."""
    handles = []
    for index, payload in enumerate(payloads):
        key = f"{idempotency_key}:{index}" if idempotency_key else None
        handles.append(trigger(task, payload, idempotency_key=key, **options))
    return handles
