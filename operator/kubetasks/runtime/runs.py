"""Finding runs from code: :func:`list_runs` is ``kubetasks runs`` for a program (a backend, a
script, a notebook), with the same filters as the CLI and the dashboard
(:mod:`kubetasks.core.run_filter`), and a :class:`~kubetasks.runtime.trigger.RunHandle` for each
run found."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from kubetasks.api.common import GROUP, VERSION
from kubetasks.core.run_filter import PHASE_FILTERS, oldest_first, run_test
from kubetasks.runtime.durations import DurationLike, seconds_of
from kubetasks.runtime.trigger import PLURAL, RunHandle, TaskLike, TaskRef, _custom, task_id_of

PAGE = 500  # runs a list request asks for at once: a namespace of 10,000 runs is 20 requests


def list_runs(task: TaskRef | None = None, *, tag: str | None = None, phase: str | None = None,
              since: DurationLike | None = None, namespace: str | None = None) -> list[RunHandle]:
    """The runs of ``task`` (a @task function or a task id), tagged ``tag``, in ``phase`` (a phase
    such as "Failed" or "Queued", or "active" for every unfinished one, "finished" for every
    finished one), created within ``since`` (seconds, a timedelta or "24h") of now, each filter
    when given; in ``namespace`` (default: the pod's, else the kubeconfig context's), oldest first.

    ``handle.status()``, ``.wait()`` and ``.cancel()`` act on each. It needs list on taskruns, which
    task pods do not have (a pod reaches only its own run and its children): call it where your
    kubeconfig works, as ``trigger`` outside a task. A bad filter raises ValueError or TypeError
    before any request."""
    from kubetasks.runtime.kube import default_namespace

    if phase is not None and phase not in PHASE_FILTERS:
        raise ValueError(f"phase: {phase!r} is none of {', '.join(PHASE_FILTERS)}")
    task_id = task_id_of(task) if task is not None else ""
    after = datetime.now(timezone.utc) - timedelta(seconds=seconds_of(since)) if since is not None else None
    test = run_test(task=task_id, tag=tag or "", phase=phase or "", after=after)
    ns = namespace or default_namespace()
    found = [run for run in _every_run(ns) if test is None or test(run)]
    owner = task if isinstance(task, TaskLike) else None
    return [RunHandle(str(run["metadata"]["name"]), ns, owner) for run in oldest_first(found)]


def _every_run(namespace: str) -> list[dict[str, Any]]:
    """Every TaskRun of the namespace, a page at a time (one list would hold them all in one answer)."""
    api, token = _custom(), None
    runs: list[dict[str, Any]] = []
    while True:
        page = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, limit=PAGE, _continue=token)
        runs.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return runs
