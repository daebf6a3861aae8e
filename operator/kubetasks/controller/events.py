"""Dispatching TaskEvents: one run per subscribed Task (core.events decides which and how), then
deleting the event once it is older than the retention.

Level-triggered: until the event's ``status.dispatchedAt`` is written, every reconcile creates
each subscriber's run under its deterministic name; a run that exists already (a crash between
the creates and the status write, a restart, a resend) is a 409 and counts as made when its labels
and annotation say it is this event's. A TaskRun under that name that is not is left alone, with
a Warning Event on the TaskEvent. Subscribers are the Tasks the store holds when the event is
dispatched: a Task created after that never sees the event.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from kubetasks import kube
from kubetasks.api.task import Task
from kubetasks.controller.cache import Body, Cache, Key, uid_of
from kubetasks.controller.conflicts import write_status
from kubetasks.core.events import expires_at, is_run_of, render_event_run, subscribers, too_large

log = logging.getLogger(__name__)

DEFAULT_RETENTION = timedelta(hours=24)


class EventReconciler:
    def __init__(self, cache: Cache, api: ModuleType | Any = kube) -> None:
        self.cache = cache
        self.api = api
        self.retention = DEFAULT_RETENTION  # chart value events.retention; 0 keeps events

    async def _call(self, fn: str, *args: Any) -> Any:
        return await asyncio.to_thread(getattr(self.api, fn), *args)

    async def reconcile(self, key: Key) -> datetime | None:
        body = self.cache.events.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        expiry = expires_at(body, self.retention)
        if expiry is not None and datetime.now(timezone.utc) >= expiry:
            # Only the event seen: one re-sent under its name meanwhile is a 409, kept.
            await self._call("delete", kube.TASKEVENTS, key[0], key[1], uid_of(body))
            return None
        if not (body.get("status") or {}).get("dispatchedAt"):
            await self._dispatch(key, body)
        return expiry  # looked at again then, to delete it

    def _tasks(self, namespace: str, event: str) -> list[Task]:
        tasks = []
        for body in self.cache.subscribers(namespace, event):
            if body["metadata"].get("deletionTimestamp"):
                continue
            try:
                tasks.append(Task.model_validate(body))
            except ValidationError:
                continue  # its own reconcile says what is wrong with it
        return tasks

    async def _dispatch(self, key: Key, body: Body) -> None:
        spec = body.get("spec") or {}
        event, id_ = str(spec.get("event", "")), str(spec.get("id", ""))
        runs: list[str] = []
        message = too_large(body)
        if message is None:
            chosen = await asyncio.to_thread(subscribers, self._tasks(key[0], event), event, id_, spec.get("data"))
            for task, error in chosen:
                if error is not None:
                    await self._warn(body, "FilterFailed", f"Task {task.name}: its filter failed on this event, "
                                                           f"so it does not run: {error}"[:1024])
                    continue
                name = await self._start(body, task)
                if name:
                    runs.append(name)
        else:
            await self._warn(body, "EventTooLarge", message)
        patch: dict[str, Any] = {"runs": runs, "dispatchedAt": datetime.now(timezone.utc).isoformat()}
        if message:
            patch["message"] = message
        await write_status(self.api, self.cache.events, kube.TASKEVENTS, key, uid_of(body) or "",
                           body["metadata"].get("resourceVersion"), patch)
        log.info("event %s/%s (%s, id %s): started %s", key[0], key[1], event, id_, ", ".join(runs) or "nothing")

    async def _start(self, body: Body, task: Task) -> str | None:
        wanted = render_event_run(task, body)
        name = wanted["metadata"]["name"]
        try:
            created, existing = await self._call("create_or_get", wanted)
        except Exception as e:
            if kube.is_transient(e):
                raise  # the queue retries with backoff
            # Refused for good (a 403, a webhook's refusal: a full TaskQueue): the other
            # subscribers still run, and the event says which did not.
            await self._warn(body, "RunNotCreated", f"Task {task.name}: the run {name} could not be created: "
                                                    f"{kube.error_line(e)}"[:1024])
            return None
        if created or (existing is not None and is_run_of(existing, wanted)):
            return str(name)
        await self._warn(body, "RunNameTaken", f"Task {task.name}: TaskRun {name} holds the name of this event's run "
                                               "but is not it (its labels or annotation differ): not started")
        return None

    async def _warn(self, body: Body, reason: str, message: str) -> None:
        log.warning("event %s: %s: %s", body["metadata"].get("name"), reason, message)
        try:
            await self._call("post_event", body, "Warning", reason, message)
        except Exception:  # an Event is a courtesy: never fail a dispatch over one
            log.warning("could not post event %s on TaskEvent %s", reason, body["metadata"].get("name"), exc_info=True)
