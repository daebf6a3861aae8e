"""Durable waits for child runs: ``ctx.step.trigger_and_wait`` and ``batch_trigger_and_wait``.

The first time the step is reached, the children are triggered (each with an idempotency key
made of this run's uid and the step's key, so a retried attempt finds the same runs rather than
making new ones), a ``wait`` record naming them is checkpointed, and the attempt ends: the run is
Waiting, with no pod. The operator starts the next attempt once every child has finished
(core.waits). That attempt replays the steps before this one, reads the children's outcomes,
completes the record with them and goes on; later attempts return them from the record.

The record is written after the triggers: a record proves its children were made. A crash
between the two leaves no record; the retry triggers again and finds the same runs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from kubetasks.core.naming import idempotent_run_name
from kubetasks.runtime.checkpoints import Checkpoint, Checkpoints
from kubetasks.runtime.encoding import revive
from kubetasks.runtime.errors import ChildFailed, DuplicateStepKey, RunFailed, WaitRequested
from kubetasks.runtime.trigger import RunHandle, TaskLike, TaskRef, task_id_of, trigger_child

log = logging.getLogger("kubetasks.runtime")
READ_TRIES = 5  # a child's read that fails (403/404 from a lagging cache, a busy API server) is tried again
NOT_FOUND = "NotFound"  # the phase a child deleted before it was read shows in ChildFailed


def child_keys(run_uid: str, scoped: str, count: int | None) -> list[str]:
    """The idempotency keys of a wait's children: one (``count`` None) or one per batch item."""
    base = f"{run_uid}:{scoped}"
    return [base] if count is None else [f"{base}:{i}" for i in range(count)]


def wait_for_children(checkpoints: Checkpoints, scoped: str, run_uid: str, attempt: int, now: datetime,
                      task: TaskRef, payloads: list[Any], batch: bool, options: dict[str, Any]) -> list[Any]:
    """The outcomes of the children of step ``scoped`` in order (their results, or ChildFailed for
    those that did not succeed), once they have all finished; until then the attempt ends
    (WaitRequested)."""
    if "idempotency_key" in options:
        raise TypeError("trigger_and_wait makes its children's idempotency keys (this run and the step's key): "
                        "pass none")
    if "namespace" in options:  # a child is a run that names its parent, in the parent's namespace
        raise TypeError("trigger_and_wait starts its children in the run's own namespace: pass no namespace")
    record = checkpoints.get(scoped)
    if record is not None and record.kind != "wait":
        raise DuplicateStepKey(f"step key {scoped!r} belongs to a {record.kind}, not a trigger_and_wait")
    model = task.result_model if isinstance(task, TaskLike) else None
    if record is not None and record.completed:
        log.info("step %s: its %s finished in attempt %d", scoped, _children(len(payloads)), record.attempt)
        return [child_outcome(o, model) for o in (record.result or {}).get("runs", [])]
    task_id = task_id_of(task)
    keys = child_keys(run_uid, scoped, len(payloads) if batch else None)
    names = [idempotent_run_name(task_id, k) for k in keys]
    if record is None:
        for payload, child_key in zip(payloads, keys):
            trigger_child(task, payload, child_key, **options)
        checkpoints.put(Checkpoint(key=scoped, kind="wait", attempt=attempt, started_at=now, waiting_on=tuple(names)))
        log.info("step %s: waiting for %s: %s", scoped, _children(len(names)), ", ".join(names[:5]))
        raise WaitRequested(scoped, names)
    namespace = _namespace()
    outcomes, pending = [], []
    for name in names:
        found = read_child(RunHandle(name, namespace))
        if found is None:
            pending.append(name)
        else:
            outcomes.append(found)
    if pending:  # woken early (an operator that could not read them all): the wait goes on
        if record.attempt != attempt:
            checkpoints.put(replace(record, attempt=attempt))
        log.info("step %s: %d of its children have not finished: waiting on", scoped, len(pending))
        raise WaitRequested(scoped, pending)
    began = record.started_at or now
    checkpoints.put(replace(record, attempt=attempt, completed_at=now, result={"runs": outcomes},
                            duration_seconds=max((now - began).total_seconds(), 0.0)))
    log.info("step %s: its %s finished", scoped, _children(len(names)))
    return [child_outcome(o, model) for o in outcomes]


def _children(n: int) -> str:
    return "child run" if n == 1 else f"{n} child runs"


def _namespace() -> str:
    from kubetasks.runtime.kube import default_namespace

    return default_namespace()


def read_child(handle: RunHandle) -> dict[str, Any] | None:
    """A finished child's outcome as the record keeps it, or None while it runs. A child that
    is not there (deleted) ends NotFound."""
    from kubetasks.runtime.trigger import _status_of, retryable

    for attempt in range(READ_TRIES):
        try:
            done, result, name = handle.look()
        except RunFailed as e:
            return {"run": e.run, "phase": e.phase, "error": e.error}
        except Exception as e:
            if attempt == READ_TRIES - 1 or not retryable(e, grace_until=math.inf):
                if _status_of(e) == 404:
                    return {"run": handle.name, "phase": NOT_FOUND,
                            "error": {"type": NOT_FOUND, "message": "the run was deleted before it was read"}}
                raise
            time.sleep(0.5 * 2 ** attempt)
        else:
            return {"run": name, "phase": "Succeeded", "result": result} if done else None
    return None  # pragma: no cover - the loop returns or raises


def child_outcome(outcome: dict[str, Any], model: Any) -> Any:
    if outcome.get("phase") == "Succeeded":
        return revive(outcome.get("result"), model)
    return ChildFailed(str(outcome.get("run")), str(outcome.get("phase")), outcome.get("error"))


def first_result(outcomes: list[Any]) -> Any:
    """trigger_and_wait's answer: the child's result, or its ChildFailed raised."""
    if isinstance(outcomes[0], ChildFailed):
        raise outcomes[0]
    return outcomes[0]


def all_results(outcomes: list[Any]) -> list[Any]:
    """batch_trigger_and_wait's answer: every result; the first failure raised with them all."""
    failed = next((o for o in outcomes if isinstance(o, ChildFailed)), None)
    if failed is not None:
        raise ChildFailed(failed.run, failed.phase, failed.error, results=outcomes)
    return outcomes
