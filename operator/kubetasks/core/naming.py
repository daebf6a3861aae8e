"""Deterministic names of the objects kubetasks creates, so a restarted operator finds, rather
than duplicates, what it made before."""

from __future__ import annotations

import hashlib
from datetime import datetime

LABEL_TASK = "kubetasks.io/task"
LABEL_RUN = "kubetasks.io/run"
LABEL_RUN_UID = "kubetasks.io/run-uid"  # children are found by their owner's UID, never by name alone
LABEL_ATTEMPT = "kubetasks.io/attempt"
LABEL_SCHEDULED = "kubetasks.io/scheduled"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "kubetasks"
ANNOTATION_SCHEDULED_AT = "kubetasks.io/scheduled-at"

MAX_NAME = 63  # Job and pod names end up in label values, which are capped at 63 characters.


def fit_name(base: str, suffix: str, limit: int = MAX_NAME) -> str:
    """``base + suffix``, shortened with a stable hash of base when too long."""
    if len(base) + len(suffix) <= limit:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-.')}-{digest}{suffix}"


def label_value(name: str) -> str:
    """A name as a label value (at most 63 characters, alphanumeric at both ends): object names may
    be 253 long. Longer names keep a prefix and a stable hash of the whole."""
    return fit_name(name, "")


def job_name(run: str, attempt: int, uid: str | None = None) -> str:
    """``<run>-<attempt>``; qualified by the run's UID when another object holds that name (a Job
    left by a deleted run of the same name, say)."""
    return fit_name(run, f"-{uid[:8]}-{attempt}" if uid else f"-{attempt}")


def checkpoint_name(run: str, uid: str) -> str:
    """ConfigMap that holds a run's step checkpoints. Qualified by the run's UID: a run re-created
    under the same name never finds the old one's checkpoints, nor anyone's object squatting it."""
    return fit_name(run, f"-{uid[:8]}-steps", 253)


def run_identity_name(run: str, uid: str) -> str:
    """ServiceAccount, Role and RoleBinding that give a run's pods access to its checkpoints only."""
    return fit_name(run, f"-{uid[:8]}-run", 253)


def scheduled_run_name(task: str, tick: datetime) -> str:
    """One name per Task and tick, as the CronJob controller does (unix minutes)."""
    return fit_name(task, f"-{int(tick.timestamp()) // 60}")


def idempotent_run_name(task: str, key: str) -> str:
    """Name of a run triggered with an idempotency key: the same key always maps to one object."""
    return fit_name(task, "-" + hashlib.sha256(f"{task}\0{key}".encode()).hexdigest()[:10])
