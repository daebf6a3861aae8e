"""Deleting the access objects of a finished run (core.render.access_to_drop decides which).

Each is read first and deleted only while its owner still owns it, with its uid as the delete's
precondition: an object re-created under the name meanwhile, or made by someone else, is left.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kubetasks import kube
from kubetasks.core.children import controlled_by
from kubetasks.informer.store import uid_of


async def drop_access(call: Callable[..., Awaitable[Any]], namespace: str, objects: list[tuple[str, str, str]]) -> None:
    for kind, name, owner in objects:
        resource = kube.RESOURCES[kind]
        existing = await call("get", resource, namespace, name)
        if existing is not None and controlled_by(existing, owner):
            await call("delete", resource, namespace, name, uid_of(existing))
