"""Tokens a waiting run waits for (``ctx.step.wait_for_token``), carried out (core.waits decides).

A run's pod makes its Waitpoint and writes a wait naming it, then ends its attempt. While the
Waitpoint is Waiting and its time is not up, the run waits (no pod). A token past ``expiresAt``
is written TimedOut here, only as it was read (its resourceVersion): a completion that landed
first wins. Once every token of the wait has an outcome, each outcome is written as a record of
its own in the run's checkpoint ConfigMap (protocol.TOKEN; the pod may not read Waitpoints),
before the next attempt starts: that attempt reads it, completes its wait and returns the data,
or raises TokenTimeout. The wait's record stays as the attempt that waited wrote it, so that
attempt still reads as one that waited when its pod is gone (core.observe.slept_by_checkpoint).
"""

from __future__ import annotations

import logging
from datetime import datetime

from kubetasks import kube
from kubetasks.api.taskrun import TaskRun
from kubetasks.api.times import format_time
from kubetasks.controller.cache import Body, Cache
from kubetasks.controller.conflicts import Call
from kubetasks.core.naming import checkpoint_name
from kubetasks.api.waitpoint import FINISHED
from kubetasks.core.waits import (
    expired, next_expiry, ours, token_outcome, token_phase, tokens_waiting,
)
from kubetasks.protocol import TOKEN, Checkpoint, configmap_key, parse_checkpoints

log = logging.getLogger(__name__)


class Tokens:
    def __init__(self, cache: Cache, call: Call) -> None:
        self.cache = cache
        self.call = call

    async def pending(self, run: TaskRun, uid: str, tokens: list[str], now: datetime,
                      ) -> tuple[list[str], datetime | None]:
        """Of the ``tokens`` a wait names (core.waits.tokens_in), those still to come (as wait
        entries), and when the first of them times out. A token past its expiry is timed out first."""
        if not tokens:
            return [], None
        known: dict[str, Body | None] = {n: self.cache.waitpoints.get((run.namespace, n)) for n in tokens}
        for name in [n for n in tokens if known[n] is None]:  # made since the watch last spoke
            known[name] = await self.call("get", kube.WAITPOINTS, run.namespace, name)
        for name in expired(tokens, known, now):
            if ours(known[name], run.name, uid):
                known[name] = await self._time_out(run.namespace, name, known[name] or {}, now)
        pending = tokens_waiting(run.name, uid, tokens, known)
        return [TOKEN + n for n in pending], next_expiry(pending, known)

    async def _time_out(self, namespace: str, name: str, body: Body, now: datetime) -> Body | None:
        """Writes the token TimedOut as it was read; a completion that landed meanwhile (409) stands."""
        status = {"phase": "TimedOut", "completedAt": format_time(now),
                  "message": f"not completed by {(body.get('spec') or {}).get('expiresAt')}"}
        try:
            answer: Body | None = await self.call("patch_status", kube.WAITPOINTS.plural, namespace, name, status,
                                                  None, (body.get("metadata") or {}).get("resourceVersion"))
        except Exception as e:
            if not kube.is_conflict(e):
                raise
            answer = await self.call("get", kube.WAITPOINTS, namespace, name)
        if answer is not None:
            self.cache.waitpoints.written(answer)
        log.info("%s/%s: token %s", namespace, name, (answer or {}).get("status", {}).get("phase", "gone"))
        return answer

    async def write_outcomes(self, run: TaskRun, uid: str, tokens: list[str], now: datetime,
                             checkpoints: dict[str, str] | None) -> None:
        """Writes the outcome of each of ``tokens`` that has one into the run's checkpoints, once
        (one already there stands), before the run's next attempt starts. A token still Waiting (a
        wait_any ended by another entry) has none: nobody waits for it any more. ``checkpoints``
        is the ConfigMap's data as the reconcile read it, after this operator's last write to it
        (a write drops the copy the reconciler keeps)."""
        configmap = checkpoint_name(run.name, uid)
        records = parse_checkpoints(checkpoints)
        data = {}
        for name in [n for n in tokens if TOKEN + n not in records]:
            found = await self.call("get", kube.WAITPOINTS, run.namespace, name)  # whole: the store keeps no data
            if ours(found, run.name, uid) and token_phase(found) not in FINISHED:
                continue
            outcome = token_outcome(name, found, run.name, uid)
            record = Checkpoint(key=TOKEN + name, kind="token", attempt=run.status.attempt, completed_at=now,
                                result=outcome)
            data[configmap_key(record.key)] = record.encode()
        if data:
            await self.call("merge_patch", kube.CONFIGMAPS, run.namespace, configmap, {"data": data})
            log.info("%s/%s: its wait for %s is over", run.namespace, run.name, ", ".join(tokens))
