"""The dashboard's view of Tasks and TaskRuns: a list and a watch made with the user's own
credentials (the operator's informer machinery, :class:`Store` and :class:`Reflector`), so the
API server decides what the pages may show, as it does for ``kubectl get``.

Scope: every namespace when the user may list Tasks and TaskRuns cluster-wide, else one namespace
(``-n``, or the kubeconfig context's); a namespace the user cannot read is simply absent.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from kubetasks import kube
from kubetasks.informer.reflector import DECODE_DEPTH, DECODE_STACK_BYTES, Reflector
from kubetasks.informer.store import Body, Store

# Kept of an object: what the lists and the Task pages read. A run's page reads the whole run from
# the API server, so the store keeps no payload, result, error, steps, attempts or metadata (most of a run's size).
_META_KEYS = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "labels", "deletionTimestamp")
_RUN_SPEC_DROPPED = ("payload",)
_RUN_STATUS_DROPPED = ("result", "error", "steps", "attempts", "checkpoint", "metadata", "ancestorMetadata")


def slim(body: Body) -> Body:
    meta = body.get("metadata") or {}
    out: Body = {"metadata": {k: meta[k] for k in _META_KEYS if meta.get(k) is not None}}
    for part in ("spec", "status"):
        if isinstance(body.get(part), dict):
            out[part] = body[part]
    return out


def slim_run(body: Body) -> Body:
    out = slim(body)
    if "spec" in out:
        out["spec"] = {k: v for k, v in out["spec"].items() if k not in _RUN_SPEC_DROPPED}
    if "status" in out:
        out["status"] = {k: v for k, v in out["status"].items() if k not in _RUN_STATUS_DROPPED}
    return out


def _task_of(run: Body) -> Iterable[Hashable]:
    return [(run["metadata"].get("namespace", ""), (run.get("spec") or {}).get("taskRef", ""))]


def allow_deep_json() -> None:
    """Lets this process's threads decode JSON as deep as the API server takes (10,000 levels: a
    payload, say), as the reflectors' own threads do: the decoder recurses once per level. For every
    thread started afterwards (the dashboard's executor reads whole runs); the stack is address space
    reserved, not memory used."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), DECODE_DEPTH))
    threading.stack_size(DECODE_STACK_BYTES)


class ScopeError(Exception):
    """The user may list Tasks and TaskRuns nowhere the dashboard could show."""


@dataclass(frozen=True)
class Scope:
    namespace: str | None  # None: every namespace
    note: str  # shown on the list pages

    @property
    def everywhere(self) -> bool:
        return self.namespace is None


def may_list(api: Any, namespace: str | None) -> bool:
    """Whether the user may list Tasks and TaskRuns in ``namespace`` (None: all): a list of one of
    each, as the user. False on 403; other errors (unreachable, 401) are raised."""
    for resource in (kube.TASKRUNS, kube.TASKS):
        try:
            api.list_page(resource, namespace, limit=1)
        except Exception as e:
            if kube.is_status(e, 403):
                return False
            raise
    return True


def choose_scope(can_list: Callable[[str | None], bool], namespace: str) -> Scope:
    """All namespaces when the user may list there, else ``namespace``; ScopeError when neither."""
    if can_list(None):
        return Scope(None, "all namespaces")
    if can_list(namespace):
        return Scope(namespace, f"namespace {namespace} only (you may not list TaskRuns in all namespaces)")
    raise ScopeError(f"you may not list TaskRuns and Tasks in all namespaces, nor in namespace {namespace}: "
                     "the dashboard shows what `kubectl get taskruns` shows you (name another namespace with -n)")


class Informers:
    """Tasks and TaskRuns, kept current by a reflector each, read on the event loop."""

    def __init__(self, scope: Scope, label_selector: str = "") -> None:
        self.scope = scope
        self.label_selector = label_selector
        self.tasks = Store("Task", slim)
        self.runs = Store("TaskRun", slim_run, {"task": _task_of})
        self.reflectors: list[Reflector] = []

    def runs_of_task(self, namespace: str, task: str) -> list[Body]:
        return self.runs.by("task", (namespace, task))

    def all_runs(self) -> list[Body]:
        return [b for b in (self.runs.get(k) for k in self.runs.keys()) if b is not None]

    def namespaces(self) -> set[str]:
        if self.scope.namespace is not None:
            return {self.scope.namespace}
        return {ns for ns, _ in self.tasks.keys()} | {ns for ns, _ in self.runs.keys()}

    async def start(self, timeout: float = 120.0) -> None:
        """Lists and watches both kinds; returns once both have their first list."""
        loop = asyncio.get_running_loop()
        for store, resource in ((self.tasks, kube.TASKS), (self.runs, kube.TASKRUNS)):
            reflector = Reflector(store, resource, self.scope.namespace, self.label_selector, loop)
            self.reflectors.append(reflector)
            reflector.start()
        await asyncio.wait_for(asyncio.gather(*(r.synced.wait() for r in self.reflectors)), timeout)

    def stop(self) -> None:
        for reflector in self.reflectors:
            reflector.stop()
