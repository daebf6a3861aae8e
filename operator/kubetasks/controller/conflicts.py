"""A write refused for its preconditions, and what follows.

The reconcilers' writes to a TaskRun or a Task name the object's UID, and the resourceVersion
the write was decided from (:func:`kubetasks.kube.guarded`). The API server answers 409 Conflict
when the object under that name is not that one any more: deleted and re-created (``kubectl
replace --force``, a GitOps tool), or changed since it was read (a user's edit, another writer).
Nothing of the refused write landed, so nothing is undone: the object is read again and the
decision made again on what it is now. A conflict is an expected race, never a failure of the
object, and it costs requests only when it happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, NoReturn

from kubetasks import kube
from kubetasks.controller.queue import Requeue
from kubetasks.informer.store import Key, Store, uid_of

# A reconciler's way to the API: ``await call("patch_spec", ...)`` runs that function of kube.py
# (or of the fake API in the unit tests) off the event loop, with the reconciler's timeout.
Call = Callable[..., Awaitable[Any]]

# A name that holds another object now: the watch shows it (and wakes its key) soon; looked at
# again after this long all the same.
WATCH_CATCH_UP = 2.0


async def decide_again(api: ModuleType | Any, store: Store, resource: kube.Resource, key: Key, uid: str) -> NoReturn:
    """After a 409 on a guarded write of the object ``uid`` at ``key``: reads it, puts what the
    API server answered in the store (only a newer version of the same object, as a write's
    answer: never another object behind the watch's back) and asks for it to be decided again."""
    found = await asyncio.to_thread(api.get, resource, key[0], key[1])
    if found is None:
        raise Requeue(WATCH_CATCH_UP, f"{store.kind} deleted while it was being written: the watch will say so")
    if uid_of(found) != uid:
        raise Requeue(WATCH_CATCH_UP, f"{store.kind} re-created under its name while it was being written: "
                                      "the new one is decided on once the watch shows it")
    store.written(found)
    raise Requeue(0, f"{store.kind} changed since it was read: deciding again on what it is now")


async def write_status(api: ModuleType | Any, store: Store, resource: kube.Resource, key: Key, uid: str,
                       decided_at: str | None, patch: dict[str, Any]) -> dict[str, Any] | None:
    """Merge-patches ``patch`` onto the status of the object ``uid`` at ``key`` as it was when the
    patch was decided (its resourceVersion ``decided_at``), and puts the answer in the store (a
    write's answer, never behind the watch's back). None when the object is gone; on a 409 it is
    decided again (:func:`decide_again`); any other error is raised as it is."""
    try:
        updated: dict[str, Any] | None = await asyncio.to_thread(
            api.patch_status, resource.plural, key[0], key[1], patch, uid, decided_at)
    except Exception as e:
        if kube.is_conflict(e):
            await decide_again(api, store, resource, key, uid)
        raise
    if updated is not None:
        store.written(updated)
    return updated


async def cancel_run(call: Call, namespace: str, name: str, uid: str | None,
                     resource_version: str | None = None) -> bool:
    """Asks the run ``uid`` at ``name`` to cancel (``spec.cancel``; its own reconcile ends it),
    only as it was at ``resource_version`` when given. False when nothing of that run's is there to
    cancel: deleted (404), or the name holds another run now (the uid precondition: 422; without a
    resourceVersion a 409 can say only that). A 409 on the resourceVersion is the caller's to
    decide on (:func:`decide_again`)."""
    try:
        await call("patch_spec", kube.TASKRUNS.plural, namespace, name, {"spec": {"cancel": True}}, uid,
                   resource_version)
    except Exception as e:
        if kube.is_status(e, 404, 422) or (resource_version is None and kube.is_conflict(e)):
            return False
        raise
    return True
