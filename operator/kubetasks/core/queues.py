"""A TaskQueue, decided: when it is full (``maxWaiting``) and what its status says (pure).

A queue is full when ``maxWaiting`` runs already wait for it and its slots are all taken: its
runs, running and waiting, number ``limit + maxWaiting``. A run created then is refused at
create (the operator's admission webhook), and one that got past an operator that could not say
(the webhook fails open) fails ``QueueFull`` at its first reconcile, unless it already waits in
line: a run accepted into the line is never turned out of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubetasks.api.flow import Holder, TaskQueueSpec, TaskQueueStatus
from kubetasks.api.taskrun import Phase
from kubetasks.core.trigger_policy import Refusal

QUEUE_FULL = "QueueFull"


def full_message(name: str, waiting: int, max_waiting: int) -> str:
    runs = "run" if waiting == 1 else "runs"
    return (f'TaskQueue "{name}" has {waiting} {runs} waiting, its maxWaiting: '
            "create the run later, or raise maxWaiting")


def queue_full(name: str, spec: TaskQueueSpec | None, running: int, waiting: int) -> str | None:
    """Why one more run may not join the queue, or None: ``running`` hold its slots and ``waiting``
    wait for them (counting the creates allowed that the operator has not seen yet)."""
    if spec is None or spec.max_waiting is None:
        return None  # no queue (its runs wait for it to exist), or no bound
    if waiting < spec.max_waiting or running + waiting < spec.limit + spec.max_waiting:
        return None
    return full_message(name, max(waiting - max(spec.limit - running, 0), spec.max_waiting), spec.max_waiting)


def refuse_create(name: str, spec: TaskQueueSpec | None, running: int, waiting: int, unseen: int) -> str | None:
    """The admission webhook's answer to a new run of a Task that names queue ``name``: the
    ``unseen`` creates it allowed that the watch has not shown yet count as waiting, so a burst
    of creates cannot all slip in before the first of them is seen."""
    return queue_full(name, spec, running, waiting + unseen)


def in_line(status: Mapping[str, Any]) -> bool:
    """The run was let wait (its status said so) or started: it is never refused for a full queue."""
    phase = status.get("phase") or Phase.PENDING.value
    return bool(status.get("waitingFor")) or int(status.get("attempt") or 0) > 0 or phase != Phase.PENDING.value


def refuse_first(name: str, spec: TaskQueueSpec | None, running: int, waiting: int,
                 status: Mapping[str, Any]) -> Refusal | None:
    """At a run's first reconcile: QueueFull when ``waiting`` runs let into the line before it
    still wait and the queue is full (it got past a webhook that failed open)."""
    if in_line(status):
        return None
    message = queue_full(name, spec, running, waiting)
    return Refusal(QUEUE_FULL, message) if message else None


def queue_status(old: Mapping[str, Any], generation: int | None, holders: Iterable[Holder],
                 waiting: int) -> dict[str, Any]:
    """The TaskQueue's status as the operator writes it (conditions are left as they are)."""
    status = TaskQueueStatus.model_validate(old) if old else TaskQueueStatus()
    status.holders = sorted(holders, key=lambda h: (h.run, h.uid))
    status.running, status.waiting = len(status.holders), waiting
    status.observed_generation = generation
    out: dict[str, Any] = status.to_api()
    return out
