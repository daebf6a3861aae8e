"""Time-limited grants to a run's own blobs: task pods never hold the store's credentials.

- **Upload** (an attempt's result): before an SDK attempt's Job, the operator signs a PUT of that
  attempt's own result path (api.storage.result_path) and puts it in a Secret owned by the run,
  mounted read-only into the attempt's pod at protocol.GRANT_DIR. A Secret, not a ConfigMap: the
  built-in ``view`` role reads ConfigMaps and Jobs (an env var), not Secrets. Mounted, not read
  through the API: the kubelet mounts it, so the run's account needs no rule for it, and the
  operator needs only ``create`` on Secrets (granting ``get`` in the run's Role would require the
  operator to hold ``get`` on every Secret). Named by ``generateName``: nobody can squat the name
  the Job mounts, and the operator never reads a Secret back.
- **Download** (a finished child's result, for its parent's pods): a presigned GET in a ConfigMap
  owned by the child (core.naming.result_grant_name) that the parent's access Role names
  (core.render.render_parent_access). Whoever may read the namespace's ConfigMaps could read the
  child's result there, as they can read ConfigMap-held results and checkpoints anyway.

Each URL expires after the attempt's ``maxDuration`` plus a margin (:data:`MARGIN` by default,
``KUBETASKS_STORAGE_GRANT_MARGIN_SECONDS``), and never later than :data:`LONGEST` (what S3's
presigned URLs allow) for a Task without one.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from kubetasks.api.durations import parse_duration
from kubetasks.api.storage import BlobRef
from kubetasks.api.taskrun import TaskRun
from kubetasks.api.times import format_time
from kubetasks.core.naming import fit_name, job_name, result_grant_name
from kubetasks.core.render import owner_reference, run_labels, uid
from kubetasks import protocol

MARGIN = timedelta(minutes=10)  # the pod's start, the upload itself, clocks apart
LONGEST = timedelta(days=7)
MAX_GENERATE_PREFIX = 52  # the API server adds 5 characters; a Secret's name may be 253, kept short


def grant_lifetime(max_duration: str | None, margin: timedelta = MARGIN) -> timedelta:
    if not max_duration:
        return LONGEST
    return min(parse_duration(max_duration) + margin, LONGEST)


def grant_margin(value: str | None) -> timedelta:
    """KUBETASKS_STORAGE_GRANT_MARGIN_SECONDS: how long a grant outlives its attempt's maxDuration
    (the pod's start and the upload come on top of the run time); at least 1 s."""
    return timedelta(seconds=max(1.0, float(value))) if value else MARGIN


def result_grant_data(put_url: str, uri: str, threshold: int, expires: datetime) -> dict[str, str]:
    """The upload of an attempt's result, in its grant."""
    return {protocol.GRANT_PUT_URL: put_url, protocol.GRANT_URI: uri, protocol.GRANT_THRESHOLD: str(threshold),
            protocol.GRANT_EXPIRES: format_time(expires)}


def render_grant(run: TaskRun, task_id: str, attempt: int, data: dict[str, str]) -> dict[str, Any]:
    """The Secret of an attempt's grants (mounted at protocol.GRANT_DIR): its result's upload, its
    payload's GET (controller.payloads), its step outputs' slots, its tokens' run key."""
    prefix = fit_name(job_name(run.name, attempt), "-grant-", MAX_GENERATE_PREFIX)
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"generateName": prefix, "namespace": run.namespace, "labels": run_labels(run, task_id),
                         "ownerReferences": [owner_reference(run)]},
            "stringData": data}


def render_child_result_grant(child: TaskRun, get_url: str, ref: BlobRef, expires: datetime) -> dict[str, Any]:
    """The ConfigMap that gives a parent's pods a presigned GET of its child's result blob."""
    meta = {"name": result_grant_name(child.name, uid(child)), "namespace": child.namespace,
            "labels": run_labels(child, child.spec.task_ref), "ownerReferences": [owner_reference(child)]}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "immutable": True,
            "data": {"url": get_url, "uri": ref.uri, "sha256": ref.sha256, "size": str(ref.size),
                     protocol.GRANT_EXPIRES: format_time(expires)}}
