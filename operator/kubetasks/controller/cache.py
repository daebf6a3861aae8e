"""An in-memory view of the objects the operator watches, fed by kopf events.

Only the fields the reconcilers read are kept (no managedFields, no pod specs), so memory stays
small at thousands of runs. Secondary indexes answer "the Jobs of this run" and "the runs of
this Task" without API calls.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from kubetasks.core.naming import LABEL_RUN

Key = tuple[str, str]  # (namespace, name)
Body = dict[str, Any]

_META_KEYS = ("name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp", "labels",
              "annotations", "deletionTimestamp", "ownerReferences")


def slim(body: Any, spec: bool = True) -> Body:
    """A plain-dict copy with the parts the controller uses."""
    meta = body.get("metadata") or {}
    out: Body = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                 "metadata": {k: meta[k] for k in _META_KEYS if meta.get(k) is not None}}
    if spec and body.get("spec") is not None:
        out["spec"] = dict(body["spec"])
    if body.get("status") is not None:
        out["status"] = dict(body["status"])
    return out


def key_of(body: Body) -> Key:
    meta = body["metadata"]
    return meta["namespace"], meta["name"]


class Cache:
    def __init__(self) -> None:
        self.tasks: dict[Key, Body] = {}
        self.runs: dict[Key, Body] = {}
        self.jobs: dict[Key, Body] = {}
        self._jobs_by_run: dict[Key, set[str]] = defaultdict(set)
        self._runs_by_task: dict[Key, set[str]] = defaultdict(set)
        # Termination records of finished attempts' task containers, by Job uid: read once.
        self.terminations: dict[str, list[Body]] = {}

    # Tasks -------------------------------------------------------------------------------
    def put_task(self, body: Body) -> None:
        self.tasks[key_of(body)] = slim(body)

    def drop_task(self, key: Key) -> None:
        self.tasks.pop(key, None)

    # TaskRuns ----------------------------------------------------------------------------
    def put_run(self, body: Body) -> None:
        key = key_of(body)
        old = self.runs.get(key)
        if old is not None:
            self._runs_by_task[(key[0], old["spec"]["taskRef"])].discard(key[1])
        self.runs[key] = slim(body)
        self._runs_by_task[(key[0], body["spec"]["taskRef"])].add(key[1])

    def drop_run(self, key: Key) -> None:
        old = self.runs.pop(key, None)
        if old is not None:
            self._runs_by_task[(key[0], old["spec"]["taskRef"])].discard(key[1])

    def runs_of_task(self, namespace: str, task: str) -> list[Body]:
        names = self._runs_by_task.get((namespace, task), ())
        return [self.runs[(namespace, n)] for n in names if (namespace, n) in self.runs]

    # Jobs --------------------------------------------------------------------------------
    def put_job(self, body: Body) -> Key | None:
        """Stores a Job; returns the key of its TaskRun."""
        slimmed = slim(body, spec=False)
        run = (slimmed["metadata"].get("labels") or {}).get(LABEL_RUN)
        if not run:
            return None
        key = key_of(slimmed)
        self.jobs[key] = slimmed
        self._jobs_by_run[(key[0], run)].add(key[1])
        return key[0], run

    def drop_job(self, key: Key) -> Key | None:
        old = self.jobs.pop(key, None)
        if old is None:
            return None
        run = (old["metadata"].get("labels") or {}).get(LABEL_RUN)
        self.terminations.pop(old["metadata"].get("uid", ""), None)
        if not run:
            return None
        self._jobs_by_run[(key[0], run)].discard(key[1])
        return key[0], run

    def jobs_of_run(self, key: Key) -> list[Body]:
        names = self._jobs_by_run.get(key, ())
        return [self.jobs[(key[0], n)] for n in names if (key[0], n) in self.jobs]
