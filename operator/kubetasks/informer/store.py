"""The operator's view of one kind of object, with the semantics of client-go's informer store.

- A (re)list *replaces* the contents: objects that are gone produce a synthesized delete, so a
  watch that resumed after 410 Gone, or a periodic resync, leaves nothing stale behind.
- An event never rolls an object back: one whose resourceVersion is older than the stored one,
  or than the last list (which already reflects it), is dropped. (resourceVersions are opaque in general; the API server's are etcd revisions, and
  comparing them is what its own watch cache does. A version that is not a number is taken as new.)
- The reconcilers' own writes enter only as the API server returned them and only when newer
  than the stored version, so a status patch is visible to the next decision (read-your-writes)
  and the watch event of that write then finds nothing newer. A write never resurrects an
  object the store has seen deleted.
- Indexes answer "the runs of this Task" and "the Jobs of this run (by owner UID)" without scans.

Every change is passed to ``on_change(old, new)`` (None for a creation or a deletion). The
store is used from the event loop only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

Key = tuple[str, str]  # (namespace, name)
Body = dict[str, Any]
Indexer = Callable[[Body], Iterable[Hashable]]
Listener = Callable[[Body | None, Body | None], None]


def key_of(body: Body) -> Key:
    meta = body["metadata"]
    return meta.get("namespace") or "", meta["name"]


def version(body: Body | None) -> int | None:
    """The resourceVersion as a number, None when absent or not a number."""
    raw = ((body or {}).get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        return None


def newer(candidate: Body, stored: Body | None) -> bool:
    """Whether ``candidate`` may replace ``stored``: not when it is an older version of it."""
    if stored is None:
        return True
    new, old = version(candidate), version(stored)
    return new is None or old is None or new >= old


def same_version(candidate: Body, stored: Body) -> bool:
    """The very version stored: the watch event of a write ``written`` already put in the store
    (waking its listeners again would repeat a reconcile that has nothing new to see)."""
    at = version(candidate)
    return at is not None and at == version(stored)


def uid_of(body: Body | None) -> str | None:
    return ((body or {}).get("metadata") or {}).get("uid")


class Store:
    def __init__(self, kind: str, slim: Callable[[Body], Body] = lambda b: b,
                 indexers: dict[str, Indexer] | None = None) -> None:
        self.kind = kind
        self._slim = slim
        self._objects: dict[Key, Body] = {}
        self._indexers = indexers or {}
        self._indexes: dict[str, dict[Hashable, set[Key]]] = {name: defaultdict(set) for name in self._indexers}
        self.listeners: list[Listener] = []
        self.synced = False  # True once the first list is in
        self._floor: dict[str | None, int] = {}  # namespace (None: all) -> resourceVersion of its last list

    def __len__(self) -> int:
        return len(self._objects)

    def slim(self, body: Body) -> Body:
        """The part of an object the store keeps. Its feeders (the reflector, in its own thread,
        so a large list is never held whole) slim what they pass to ``event`` and ``replace``."""
        return self._slim(body)

    def __contains__(self, key: Key) -> bool:
        return key in self._objects

    def get(self, key: Key) -> Body | None:
        return self._objects.get(key)

    def keys(self) -> list[Key]:
        return list(self._objects)

    def by(self, index: str, value: Hashable) -> list[Body]:
        return [self._objects[k] for k in self._indexes[index].get(value, ()) if k in self._objects]

    # What the watch says ----------------------------------------------------------------
    def event(self, type_: str, body: Body) -> None:
        """Applies a watch event (ADDED, MODIFIED, DELETED) of a slimmed object; stale ones are dropped."""
        key = key_of(body)
        old = self._objects.get(key)
        if self._before_last_list(body, key[0]):
            return
        if type_ == "DELETED":
            if old is not None and uid_of(old) == uid_of(body):  # not a newer object of that name
                self._remove(key, old)
            return
        if old is not None and uid_of(old) == uid_of(body) and (not newer(body, old) or same_version(body, old)):
            return
        self._put(key, old, body)

    def replace(self, bodies: Iterable[Body], namespace: str | None = None, resource_version: str | None = None) -> None:
        """A full list of slimmed objects (of one namespace, or of all) at ``resource_version``: the
        store becomes exactly it; what vanished is deleted (with its last known state, as client-go's
        DeletedFinalStateUnknown)."""
        listed_at = version({"metadata": {"resourceVersion": resource_version}})
        if listed_at is not None:
            self._floor[namespace] = listed_at
        listed: dict[Key, Body] = {}
        for body in bodies:
            listed[key_of(body)] = body
        for key in [k for k in self._objects if k not in listed and namespace in (None, k[0])]:
            self._remove(key, self._objects[key])
        for key, body in listed.items():
            old = self._objects.get(key)
            if old is None or uid_of(old) != uid_of(body) or (version(body) != version(old) and newer(body, old)):
                self._put(key, old, body)
        self.synced = True

    def _before_last_list(self, body: Body, namespace: str) -> bool:
        at = version(body)
        floors = [f for ns, f in self._floor.items() if ns in (None, namespace)]
        return at is not None and bool(floors) and at < max(floors)

    # What the reconcilers wrote -----------------------------------------------------------
    def written(self, body: Body) -> None:
        """The API server's answer to our own write of an object the store holds."""
        body = self._slim(body)
        key = key_of(body)
        old = self._objects.get(key)
        if old is not None and uid_of(old) == uid_of(body) and version(body) != version(old) and newer(body, old):
            self._put(key, old, body)

    # -------------------------------------------------------------------------------------
    def _put(self, key: Key, old: Body | None, new: Body) -> None:
        if old is not None and uid_of(old) != uid_of(new):
            self._remove(key, old)  # another object under the same name: the old one is gone
            old = None
        if old is not None:
            self._unindex(key, old)
        self._objects[key] = new
        for name, indexer in self._indexers.items():
            for value in indexer(new):
                self._indexes[name][value].add(key)
        self._notify(old, new)

    def _remove(self, key: Key, old: Body) -> None:
        self._unindex(key, old)
        del self._objects[key]
        self._notify(old, None)

    def _unindex(self, key: Key, body: Body) -> None:
        for name, indexer in self._indexers.items():
            for value in indexer(body):
                keys = self._indexes[name].get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indexes[name][value]

    def _notify(self, old: Body | None, new: Body | None) -> None:
        for listener in self.listeners:
            listener(old, new)
