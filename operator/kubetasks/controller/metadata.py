"""Copying ctx.metadata into TaskRun status (core.metadata decides; this reads and remembers).

A pod writes its document into its own checkpoint ConfigMap and labels the ConfigMap with the
document's digest (protocol.METADATA_LABEL). An informer holds the metadata of just those
ConfigMaps (labelled ones, metadata only), so a changed digest wakes the run, which reads the
ConfigMap once per digest. What a run adds to its ancestors travels in its own status
(ancestorMetadata); an ancestor folds its descendants' current contributions from the store, so
no count depends on having seen every change. Status writes of metadata are coalesced to one per
COALESCE_SECONDS per run; the one that finishes a run is never held back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubetasks import kube
from kubetasks.api.taskrun import TaskRun
from kubetasks.controller.cache import Body, Cache, Key, key_of, run_uid_label
from kubetasks.core.metadata import (
    METADATA_LIMIT, MetadataDoc, ancestor_parts, fold, parse_doc, size_of, storable, too_large_message,
)
from kubetasks.core.naming import checkpoint_name
from kubetasks.core.plan import Event
from kubetasks.informer.reflector import Reflector, Timing
from kubetasks.protocol import METADATA_KEY, METADATA_LABEL, metadata_digest

COALESCE_SECONDS = 1.0
MAX_DEPTH = 100  # links followed up or down a trigger chain (the operator caps chains far lower)
TOO_LARGE = "MetadataTooLarge"


def digest_of(body: Body | None) -> str | None:
    return ((body or {}).get("metadata") or {}).get("labels", {}).get(METADATA_LABEL)


def ancestors_to_wake(cache: Cache, old: Body | None, new: Body | None) -> list[Key]:
    """A run whose contributions (status.ancestorMetadata) changed wakes its parent and every
    ancestor above it (one of them is its root)."""
    if (((old or {}).get("status") or {}).get("ancestorMetadata")
            == ((new or {}).get("status") or {}).get("ancestorMetadata")):
        return []
    body = new or old
    assert body is not None
    namespace, keys = key_of(body)[0], list[Key]()
    parent = (body.get("spec") or {}).get("parentRun")
    while parent and len(keys) < MAX_DEPTH and (namespace, parent) not in keys:
        keys.append((namespace, parent))
        parent = ((cache.runs.get((namespace, parent)) or {}).get("spec") or {}).get("parentRun")
    return keys


@dataclass(frozen=True)
class Decided:
    metadata: dict[str, Any] | None
    ancestors: dict[str, Any] | None
    due: float | None = None  # seconds until a change held back may be written

    def set_on(self, status: Any) -> None:
        status.metadata, status.ancestor_metadata = self.metadata, self.ancestors


class MetadataCopier:
    def __init__(self, cache: Cache, call: Callable[..., Awaitable[Any]],
                 event: Callable[[Body, Event], Awaitable[None]]) -> None:
        self.cache = cache
        self._call = call
        self._event = event
        self.store = cache.checkpoints  # the labels of checkpoints with metadata
        self.coalesce_seconds = COALESCE_SECONDS
        self._own: dict[str, tuple[str | None, MetadataDoc | None]] = {}  # run uid -> (digest read, its document)
        self._written_at: dict[str, float] = {}  # run uid -> when its metadata was last written (monotonic)
        self._warned: dict[str, str] = {}  # run uid -> the oversize last told in an Event

    def start(self, scopes: list[str | None], selector: str, loop: asyncio.AbstractEventLoop,
              timing: Timing) -> list[Reflector]:
        reflectors = [Reflector(self.store, kube.CONFIGMAP_METADATA, ns, f"{METADATA_LABEL},{selector}", loop, timing)
                      for ns in scopes]
        for reflector in reflectors:
            reflector.start()
        return reflectors

    def run_of(self, configmap: Body) -> Body | None:
        uids = run_uid_label(configmap)
        return self.cache.run_by_uid(uids[0]) if uids else None

    def forget(self, uid: str) -> None:
        self._own.pop(uid, None)
        self._written_at.pop(uid, None)
        self._warned.pop(uid, None)

    def seen(self, uid: str, data: dict[str, str] | None) -> None:
        """The checkpoint ConfigMap's data, read by the reconcile for its steps: no second read."""
        if data is not None:
            text = data.get(METADATA_KEY)
            self._own[uid] = (metadata_digest(text) if text else None, parse_doc(text))

    async def _own_doc(self, run: TaskRun, uid: str) -> tuple[MetadataDoc | None, str | None]:
        """(the run's own document, why it is refused): read once per digest the informer shows."""
        name = checkpoint_name(run.name, uid)  # a label another run's pod put on its own ConfigMap counts for nothing
        digest = next((digest_of(c) for c in self.store.by("run", uid) if c["metadata"].get("name") == name), None)
        known = self._own.get(uid)
        if digest is not None and (known is None or known[0] != digest):
            data = await self._call("get_configmap_data", run.namespace, name)
            text = (data or {}).get(METADATA_KEY)
            if text and len(text.encode()) > METADATA_LIMIT:
                return (known[1] if known else None), too_large_message(len(text.encode()))
            self.seen(uid, data or {})
        known = self._own.get(uid)
        return (known[1] if known else None), None

    def contributions(self, run: TaskRun) -> list[tuple[str, Any]]:
        """Its descendants' parts that apply to ``run``: its children's parent parts, and when it is
        the root of its chain, every descendant's root part."""
        is_root = not run.spec.parent_run
        parts: list[tuple[str, Any]] = []
        level, seen = [run.name], {run.name}
        for depth in range(1, MAX_DEPTH + 1):
            following = []
            for name in level:
                for child in self.cache.children_of(run.namespace, name):
                    child_name = child["metadata"]["name"]
                    if child_name in seen:
                        continue
                    seen.add(child_name)
                    following.append(child_name)
                    parts += ancestor_parts(child_name, (child.get("status") or {}).get("ancestorMetadata"),
                                            direct_child=depth == 1, root=is_root)
            if not is_root or not following:
                break
            level = following
        return parts

    async def decide(self, run: TaskRun, uid: str, status: Any, finishing: bool, body: Body) -> Decided:
        """What ``status.metadata`` and ``status.ancestorMetadata`` should be now (``status``: the
        TaskRunStatus about to be written), or, within COALESCE_SECONDS of the last write, how
        long until they may be written."""
        own, refused = await self._own_doc(run, uid)
        if refused:
            await self._warn(body, uid, refused)
        own = own or MetadataDoc()
        parts = self.contributions(run)
        if not run.spec.parent_run and own.root:  # the root of its own chain
            parts.append((run.name, own.root))
        metadata = storable(fold(own.own, parts)) or None  # as the status will read back
        ancestors = storable(own.ancestors()) or None
        if metadata is not None and size_of(metadata) > METADATA_LIMIT:
            await self._warn(body, uid, too_large_message(size_of(metadata)))
            metadata = status.metadata
        if metadata == status.metadata and ancestors == status.ancestor_metadata:
            return Decided(metadata, ancestors)
        wait = self._written_at.get(uid, float("-inf")) + self.coalesce_seconds - time.monotonic()
        if wait > 0 and not finishing:
            return Decided(status.metadata, status.ancestor_metadata, wait)  # written with a later write
        self._written_at[uid] = time.monotonic()
        return Decided(metadata, ancestors)

    async def _warn(self, body: Body, uid: str, message: str) -> None:
        if self._warned.get(uid) != message:
            self._warned[uid] = message
            await self._event(body, Event("Warning", TOO_LARGE, message))

