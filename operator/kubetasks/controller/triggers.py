"""A child run's trigger limits, read from the operator's cache (core.trigger_limits decides).

Its depth comes from its parent as the cache holds it (the parent's ``status.triggerDepth``, or
its ancestors walked up), its rank among its siblings from the cache's index by ``parentRun``:
no request to the API server per run.
"""

from __future__ import annotations

from collections.abc import Callable

from kubetasks.api.task import Task
from kubetasks.api.taskrun import TaskRun
from kubetasks.controller.cache import Body, Cache
from kubetasks.core.trigger_limits import Link, depth_limit, depth_of, older_siblings, refuse_runaway, root_of
from kubetasks.core.trigger_policy import Refusal


def link(run: TaskRun | Body) -> Link:
    """What a run's trigger depth is read from."""
    if isinstance(run, TaskRun):
        return Link(run.name, run.spec.parent_run, run.status.trigger_depth)
    spec, status = run.get("spec") or {}, run.get("status") or {}
    depth = status.get("triggerDepth")
    return Link(run["metadata"]["name"], spec.get("parentRun"), depth if isinstance(depth, int) else None)


def ancestors(cache: Cache, namespace: str) -> Callable[[str], Link | None]:
    def ancestor(name: str) -> Link | None:
        body = cache.runs.get((namespace, name))
        return link(body) if body is not None else None
    return ancestor


def runaway(cache: Cache, child: TaskRun, parent: TaskRun, parent_task: Task, cap: int) -> Refusal | None:
    """Why ``child`` may not run for its depth or its parent's budget, or None. Sets its
    ``status.triggerDepth`` (one more than its parent's), for the status written next."""
    ns = child.namespace
    child.status.trigger_depth = depth_of(link(parent), ancestors(cache, ns), depth_limit(parent_task, cap)) + 1
    siblings = [(str(b["metadata"].get("creationTimestamp", "")), b["metadata"]["name"])
                for b in cache.children_of(ns, parent.name) if b["metadata"]["name"] != child.name]
    older = older_siblings((str(child.metadata.get("creationTimestamp", "")), child.name), siblings)
    return refuse_runaway(child.status.trigger_depth, older, parent.name, parent_task, cap)


def root_run(cache: Cache, run: TaskRun, cap: int) -> Body | None:
    """The run at the root of ``run``'s chain (the furthest ancestor the cache holds), not itself."""
    root = root_of(link(run), ancestors(cache, run.namespace), cap + 1)
    return cache.runs.get((run.namespace, root)) if root != run.name else None
