"""Task hooks: creating the runs a finished run's outcome fires (core.hooks decides which, and
what they are told).

Level-triggered: every reconcile of a finished run calls :meth:`HookRuns.fire`, which does
nothing (no request) once the run's ``status.hooks`` says each hook fired, as the store shows it.
Otherwise it reads the whole run (the store keeps no result or error of a finished run), creates
each hook run not yet fired under its deterministic name, and records them as fired. A crash,
a refused status write or a restart between the create and the record costs a 409 on the
next try, never a second hook run. An error creating one is raised as :class:`HookFailed` (the
reconciler posts it as a Warning Event, counts it, and tries again later): the run's outcome
stands, and so does its status.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubetasks import kube
from kubetasks.api.task import Task
from kubetasks.api.taskrun import HookRecord, TaskRun
from kubetasks.controller import metrics
from kubetasks.controller.cache import Body, Key, uid_of
from kubetasks.controller.conflicts import Call
from kubetasks.core.hooks import is_hook_of, render_hook_run, to_fire
from kubetasks.core.plan import Event

log = logging.getLogger(__name__)
HOOK_FIRED = "HookFired"
HOOK_FAILED = "HookFailed"

WriteStatus = Callable[[Key, str, dict[str, Any], str | None], Awaitable[Body | None]]
PostEvent = Callable[[Body, Event], Awaitable[None]]


class HookFailed(Exception):
    """A hook run could not be created for a reason a retry soon will not mend (a 403, a webhook's
    refusal, its name held by a TaskRun that is not it)."""

    reason = HOOK_FAILED


class HookRuns:
    def __init__(self, call: Call, write_status: WriteStatus, event: PostEvent) -> None:
        self._call = call
        self._write_status = write_status
        self._event = event

    async def fire(self, key: Key, run: TaskRun, uid: str, task: Task | None) -> None:
        """Makes sure every hook the finished ``run`` (as the store shows it) fires exists, once."""
        if not to_fire(run, task):
            return
        body = await self._call("get", kube.TASKRUNS, key[0], key[1])
        if body is None or uid_of(body) != uid:
            return  # deleted or re-created meanwhile: the watch tells
        whole = TaskRun.model_validate(body)
        todo = to_fire(whole, task)
        if not todo:
            return  # recorded meanwhile: the store lags behind
        created = [record for record in todo if await self._create(whole, uid, record)]
        fired = [h.model_copy(update={"fired": True}) if h in todo else h for h in whole.status.hooks or []]
        decided_at = str(whole.metadata.get("resourceVersion") or "") or None
        if await self._write_status(key, uid, {"hooks": [h.to_api() for h in fired]}, decided_at) is None:
            return
        for record in created:
            log.info("%s/%s: %s: created the run %s of Task %s", key[0], key[1], record.kind, record.run, record.task)
            await self._event(body, Event("Normal", HOOK_FIRED,
                                          f"{record.kind}: created the run {record.run} of Task {record.task}"))

    async def _create(self, run: TaskRun, uid: str, record: HookRecord) -> bool:
        """True when this call created the hook run; False when it existed (an earlier try made it,
        and it may be gone since). A TaskRun under its name that is not it is never taken for it."""
        what = f"{record.kind}: the run {record.run} of Task {record.task}"
        try:
            created, existing = await self._call("create_or_get", render_hook_run(run, record))
        except Exception as e:
            if kube.is_transient(e):
                raise  # the queue retries with backoff
            raise HookFailed(f"{what} could not be created: {kube.error_line(e)}") from e
        if created:
            metrics.HOOK_RUNS.labels(run.spec.task_ref, record.kind).inc()
            return True
        if existing is not None and not is_hook_of(existing, uid, record.kind):
            raise HookFailed(f"{what} could not be created: a TaskRun that is not this run's {record.kind} hook "
                             "holds the name (delete it, and the hook fires)")
        return False
