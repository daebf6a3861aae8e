"""TaskQueues, carried out (core.queues decides): the runs refused for a full queue at create
(the admission webhook's memory) and at their first reconcile, and the holders of a limit.

- Creates: the webhook answers from memory, no request. A create it allowed counts as waiting
  until the watch shows the run (or ``UNSEEN_SECONDS``: another admission refused it, say), so a
  burst of creates is counted as it comes, not as the watch catches up.
- First reconciles: the webhook fails open, so the run reconciler asks too (QueueAdmission is
  held by it; the operator's webhook uses the same one).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from kubetasks.api.flow import Holder
from kubetasks.controller import metrics
from kubetasks.controller.cache import Body, key_of, uid_of
from kubetasks.controller.flow import FlowControl
from kubetasks.core.queues import in_line, refuse_create, refuse_first
from kubetasks.core.wakeups import unfinished
from kubetasks.core.trigger_policy import Refusal

log = logging.getLogger(__name__)
UNSEEN_SECONDS = 30.0  # an allowed create the watch has not shown by then was not made


def _queue_of(flow: FlowControl, namespace: str, task: str) -> str | None:
    spec = flow.task_spec(namespace, task)
    return spec.queue if spec is not None else None


def holders(flow: FlowControl, namespace: str, limit_id: str) -> list[Holder]:
    """The runs holding the limit's slots, by name and uid (with their concurrency key)."""
    out = []
    for uid in flow.holders(namespace, limit_id):
        body = flow.cache.run_by_uid(uid)
        if body is not None:
            out.append(Holder(run=key_of(body)[1], uid=uid, key=(body.get("spec") or {}).get("concurrencyKey")))
    return out


def task_holders(flow: FlowControl, namespace: str, task: str) -> list[Holder]:
    """A Task's holders: of its total limit, or of its key limits when it has perKey only."""
    spec = flow.task_spec(namespace, task)
    concurrency = spec.concurrency if spec is not None else None
    if concurrency is None:
        return []
    if concurrency.limit:
        return holders(flow, namespace, f"Task/{task}")
    keys = {(r.get("spec") or {}).get("concurrencyKey") or "" for r in flow.cache.runs_of_task(namespace, task)}
    return [h for key in sorted(keys) for h in holders(flow, namespace, f"Task/{task}/key/{key}")]


class QueueAdmission:
    """Who may join a full queue's line, from the operator's memory: the webhook's answer to a
    create, and the first reconcile's (a run that got past a webhook that failed open).

    The line a first reconcile counts is the runs it let in (or whose status says they are in
    line, after a restart) that still wait: decided one run at a time, with no await between the
    count and the run's being counted, so runs reconciled side by side cannot all get in."""

    def __init__(self, flow: FlowControl, clock: Any = time.monotonic) -> None:
        self.flow = flow
        self.clock = clock
        self._unseen: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)  # (ns, queue) -> uid -> deadline
        self._let_in: dict[tuple[str, str], set[str]] = defaultdict(set)  # (ns, queue) -> uids let into its line
        flow.cache.runs.listeners.append(self._run_changed)

    def _run_changed(self, old: Body | None, new: Body | None) -> None:
        body = new if new is not None else old
        assert body is not None
        uid = uid_of(body) or ""
        if new is not None and old is None:
            for unseen in self._unseen.values():
                unseen.pop(uid, None)
        queue = _queue_of(self.flow, key_of(body)[0], (body.get("spec") or {}).get("taskRef", ""))
        if not queue:
            return
        line = self._let_in[(key_of(body)[0], queue)]
        if new is None or not unfinished(new):
            line.discard(uid)
        elif in_line(new.get("status") or {}):
            line.add(uid)  # let in before (by this process, or by the one before a restart)

    def first_reconcile(self, body: Body | None) -> Refusal | None:
        """QueueFull for a run, at its first reconcile, that its full queue has no room in line for."""
        if body is None:
            return None
        ns, uid = key_of(body)[0], uid_of(body) or ""
        name = _queue_of(self.flow, ns, (body.get("spec") or {}).get("taskRef", ""))
        if not name:
            return None
        lid, line = f"TaskQueue/{name}", self._let_in[(ns, name)]
        holding = set(self.flow.holders(ns, lid))
        waiting = sum(1 for u in line if u != uid and u not in holding and self.flow.waits(u))
        refusal = refuse_first(name, self.flow.queue_spec(ns, name), len(holding), waiting, body.get("status") or {})
        if refusal is not None:
            metrics.QUEUE_FULL_REFUSALS.labels("reconcile").inc()
        elif unfinished(body):
            line.add(uid)
        return refusal

    def unseen(self, namespace: str, queue: str) -> int:
        pending = self._unseen.get((namespace, queue), {})
        now = self.clock()
        for uid in [u for u, deadline in pending.items() if deadline < now]:
            del pending[uid]
        return len(pending)

    def review(self, request: dict[str, Any]) -> str | None:
        """None to allow the create; else why it is refused."""
        obj = request.get("object") or {}
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        ns = meta.get("namespace") or request.get("namespace") or ""
        queue = _queue_of(self.flow, ns, str(spec.get("taskRef") or ""))
        if not queue:
            return None
        lid = f"TaskQueue/{queue}"
        refused = refuse_create(queue, self.flow.queue_spec(ns, queue), len(self.flow.holders(ns, lid)),
                                self.flow.waiting(ns, lid), self.unseen(ns, queue))
        if refused is None and not request.get("dryRun"):
            uid = meta.get("uid") or request.get("uid") or ""
            if self.flow.cache.run_by_uid(uid) is None:
                self._unseen[(ns, queue)][uid] = self.clock() + UNSEEN_SECONDS
        if refused:
            metrics.QUEUE_FULL_REFUSALS.labels("create").inc()
        return refused
