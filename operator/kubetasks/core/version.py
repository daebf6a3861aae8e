"""Version locking: a run runs the Task as it was when its first attempt started.

Trigger.dev locks a run to the version it starts on; retries keep it, and a child its parent
waits for (triggerAndWait) takes the parent's. Here a version is the part of the Task's spec
that makes an attempt (api.version.LockedSpec), snapshotted into ``status.taskVersion`` by the
status write that records the first attempt (core.plan): no request of its own. Every later
attempt, retry and wake-up renders its Job from the locked Task (:func:`locked_task`).

Restart safety: the first Job is created before the status write that records it. The Job
carries the version as an annotation (:func:`job_annotations`, part of the create), so an
operator that died in between locks, from the Job it finds by the run's UID, the version the
Job actually ran (:func:`version_from_jobs`), not the Task as it is by then.

Children: a child its parent waits for (``spec.inheritVersion``, set by the SDK) takes the
parent's version when it runs the same Task (:func:`inherited`); a child of another Task takes
that Task's latest, as a plain trigger does: a version is one Task's spec, it says nothing of
another. A TaskRun's creator chooses no image: ``inheritVersion`` is a flag, and the version it
takes is the one the operator wrote on the parent run, of the same Task.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from kubetasks.api.task import EnvVar, Task
from kubetasks.api.taskrun import TaskRun
from kubetasks.api.version import LockedSpec, TaskVersion
from kubetasks.core.naming import ANNOTATION_TASK_VERSION, LABEL_ATTEMPT

Body = dict[str, Any]
# The Job's annotation holds the whole version up to this size (annotations are 256 KiB in all);
# beyond it (a Task with a large env), only the hash: a restart then locks the Task as it is
# if its hash still matches, else nothing until the next attempt starts.
MAX_ANNOTATION = 64 * 1024
# The operator's Job store keeps it up to this size, else its hash alone (a day of Jobs is held).
MAX_KEPT = 2048
DIGEST_SHOWN = 12


def image_version(image: str) -> str:
    """What a version is called: the reference's digest (``sha256:<12 hex>``) when it names one,
    else its tag (``latest`` when it has none, as a runtime pulls it)."""
    name, _, digest = image.partition("@")
    if digest:
        algorithm, _, hex_ = digest.partition(":")
        return f"{algorithm}:{hex_[:DIGEST_SHOWN]}"
    last = name.rsplit("/", 1)[-1]
    return last.partition(":")[2] or "latest"


def spec_hash(spec: LockedSpec) -> str:
    text = json.dumps(spec.to_api(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def snapshot(task: Task) -> TaskVersion:
    """The version of ``task`` as it is now."""
    fields = {name: getattr(task.spec, name) for name in LockedSpec.model_fields}
    spec = LockedSpec.model_validate({**fields, "env": [e.to_api() for e in task.spec.env]})
    generation = task.metadata.get("generation")
    return TaskVersion(version=image_version(spec.image), spec_hash=spec_hash(spec), spec=spec,
                       generation=generation if isinstance(generation, int) else None)


def locked_task(task: Task, version: TaskVersion | None) -> Task:
    """``task`` with the fields its run is locked to as they were (unchanged when not locked)."""
    if version is None:
        return task
    fields = {name: getattr(version.spec, name) for name in LockedSpec.model_fields}
    spec = task.spec.model_copy(update={**fields, "env": [EnvVar.model_validate(e) for e in version.spec.env]})
    return task.model_copy(update={"spec": spec})


def job_annotations(version: TaskVersion) -> dict[str, str]:
    """The annotation that tells, from a Job, the version it runs."""
    whole = json.dumps(version.to_api(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {ANNOTATION_TASK_VERSION: kept(whole, MAX_ANNOTATION)}


def kept(text: str, limit: int = MAX_KEPT) -> str:
    """A Job's version annotation as kept within ``limit`` bytes: whole, or its hash alone."""
    if len(text.encode()) <= limit:
        return text
    try:
        data = json.loads(text)
    except ValueError:
        return "{}"
    return json.dumps({"specHash": data.get("specHash"), "version": data.get("version")}) if isinstance(data, dict) else "{}"


def _attempt(job: Body) -> int:
    try:
        return int(((job.get("metadata") or {}).get("labels") or {}).get(LABEL_ATTEMPT, "0"))
    except ValueError:
        return 0


def version_from_jobs(jobs: Iterable[Body], task: Task | None) -> TaskVersion | None:
    """The version the run's earliest Job runs, from its annotation (``jobs``: the run's own, by
    its UID); one that holds only a hash is the Task as it is if the hash still matches. None when
    no Job tells."""
    for job in sorted(jobs, key=_attempt):
        text = ((job.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_TASK_VERSION)
        if not text:
            continue
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                return None
            if "spec" in data:
                return TaskVersion.model_validate(data)
        except (ValueError, ValidationError):
            return None
        now = snapshot(task) if task is not None else None
        return now if now is not None and now.spec_hash == data.get("specHash") else None
    return None


def inherited(run: TaskRun, parent: TaskRun | None) -> TaskVersion | None:
    """The parent's version, for a child that asks for it (``inheritVersion``) and runs the same
    Task as its parent; None otherwise (it takes its Task's latest)."""
    if not run.spec.inherit_version or parent is None or parent.spec.task_ref != run.spec.task_ref:
        return None
    if parent.metadata.get("namespace") != run.metadata.get("namespace"):
        return None
    version = parent.status.task_version
    if version is None:
        return None
    return version.model_copy(update={"inherited_from": parent.name})
