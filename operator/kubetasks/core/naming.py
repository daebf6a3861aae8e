"""Deterministic names of the objects kubetasks creates, so a restarted operator finds, rather
than duplicates, what it made before."""

from __future__ import annotations

import hashlib
import re
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

LABEL_TASK = "kubetasks.io/task"
LABEL_RUN = "kubetasks.io/run"
LABEL_RUN_UID = "kubetasks.io/run-uid"  # children are found by their owner's UID, never by name alone
LABEL_ATTEMPT = "kubetasks.io/attempt"
LABEL_SCHEDULED = "kubetasks.io/scheduled"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
# Which operator instance acts on a Task or TaskRun (as Argo's --instanceid): an operator started
# with an id acts only on objects labelled with it; one without, only on unlabelled objects. The
# label passes from a run to its Job and pods, and from a Task to its scheduled runs.
LABEL_INSTANCE = "kubetasks.io/instance"
MANAGER = "kubetasks"
ANNOTATION_SCHEDULED_AT = "kubetasks.io/scheduled-at"
# sha256 of (task, idempotency key, payload), set by the SDK's trigger on the runs it names after a key.
ANNOTATION_TRIGGER = "kubetasks.io/idempotent-trigger"
# A hook run (core.hooks): which hook made it (onSuccess, onFailure, onComplete), and of which run.
LABEL_HOOK = "kubetasks.io/hook"
ANNOTATION_HOOK_OF = "kubetasks.io/hook-of"
ANNOTATION_HOOK_OF_UID = "kubetasks.io/hook-of-uid"
ANNOTATION_TASK_VERSION = "kubetasks.io/task-version"  # on a Job: the locked version it runs (core.version)

MAX_NAME = 63  # Job and pod names end up in label values, which are capped at 63 characters.
MAX_SUBDOMAIN = 253  # most object names: ConfigMaps, ServiceAccounts, TaskRuns


def instance_selector(instance: str | None) -> str:
    """The label selector of the objects an operator with ``instance`` (None or "": the default
    instance) acts on."""
    return f"{LABEL_INSTANCE}={instance}" if instance else f"!{LABEL_INSTANCE}"


def instance_of(body: Mapping[str, Any]) -> str | None:
    """The instance id an object is labelled with, or None."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    return str(labels.get(LABEL_INSTANCE) or "") or None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def fit_name(base: str, suffix: str, limit: int = MAX_NAME) -> str:
    """``base + suffix``, shortened with a stable hash of base when too long. ``base`` is an object
    name (a DNS-1123 subdomain), ``suffix`` starts with "-" and ends alphanumeric."""
    if len(base) + len(suffix) <= limit:
        return base + suffix
    keep = limit - len(suffix) - 9
    return f"{base[:keep].rstrip('-.')}-{_digest(base)}{suffix}"


def fit_label(base: str, suffix: str) -> str:
    """``base + suffix`` as a DNS-1123 label (at most 63 characters, no dots): the name of an object
    whose name becomes a label value and a host name, as a Job's does (its pods are labelled
    ``job-name`` and named after it). A subdomain with dots, or too long, keeps a dotless prefix
    and a stable hash of the whole base, so distinct bases stay distinct."""
    if "." not in base and len(base) + len(suffix) <= MAX_NAME:
        return base + suffix
    keep = MAX_NAME - len(suffix) - 9
    return f"{base[:keep].replace('.', '-').rstrip('-')}-{_digest(base)}{suffix}"


def label_value(name: str) -> str:
    """A name as a label value (at most 63 characters, alphanumeric at both ends): object names may
    be 253 long. Longer names keep a prefix and a stable hash of the whole."""
    return fit_name(name, "")


def job_name(run: str, attempt: int, uid: str | None = None) -> str:
    """``<run>-<attempt>``; qualified by the run's UID when another object holds that name (a Job
    left by a deleted run of the same name, say)."""
    return fit_label(run, f"-{uid[:8]}-{attempt}" if uid else f"-{attempt}")


def checkpoint_name(run: str, uid: str) -> str:
    """ConfigMap that holds a run's step checkpoints. Qualified by the run's UID: a run re-created
    under the same name never finds the old one's checkpoints, nor anyone's object squatting it."""
    return fit_name(run, f"-{uid[:8]}-steps", MAX_SUBDOMAIN)


def payload_name(run: str, uid: str) -> str:
    """ConfigMap that holds a run's payload file: immutable, and apart from its checkpoints, which
    its pods may write."""
    return fit_name(run, f"-{uid[:8]}-payload", MAX_SUBDOMAIN)


def result_grant_name(run: str, uid: str) -> str:
    """ConfigMap that holds a presigned GET of a finished run's result blob, for its parent's pods."""
    return fit_name(run, f"-{uid[:8]}-result", MAX_SUBDOMAIN)


def attempt_log_name(job_name: str) -> str:
    """ConfigMap that keeps an attempt's log after its pod is gone (core.logs). Named after the
    attempt's Job, which is unique per attempt (UID-qualified when the plain name was taken)."""
    return fit_name(job_name, "-log", MAX_SUBDOMAIN)


def run_identity_name(run: str, uid: str) -> str:
    """ServiceAccount, Role and RoleBinding that give a run's pods access to its checkpoints only."""
    return fit_name(run, f"-{uid[:8]}-run", MAX_SUBDOMAIN)


def scheduled_run_name(task: str, tick: datetime, task_uid: str | None = None) -> str:
    """One name per Task and tick, as the CronJob controller does (unix minutes). Qualified by the
    Task's UID when someone else's run holds the plain name (controller.cron)."""
    minutes = math.floor(tick.timestamp()) // 60  # floor: int() would put a second before 1970 in the next minute
    return fit_name(task, f"-{task_uid[:8]}-{minutes}" if task_uid else f"-{minutes}")


def idempotent_run_name(task: str, key: str) -> str:
    """Name of a run triggered with an idempotency key: the same key always maps to one object."""
    return fit_name(task, "-" + hashlib.sha256(f"{task}\0{key}".encode()).hexdigest()[:10])


def successor_run_name(task: str, key: str, released_by: str) -> str:
    """Name of the run of a key after the run ``released_by`` (its uid) released it (it failed, or
    the key's TTL passed): one name for every trigger that finds that run, so racing ones make one."""
    return idempotent_run_name(task, f"{key}\0{released_by}")


def token_name(run: str, uid: str, key: str) -> str:
    """The Waitpoint of step ``key``'s token in the run ``uid``: ``<run>-<key>-<hash>``, readable
    (the key's letters and digits, up to 20) and unique per run and key, so the pod that makes it
    again (a retried attempt) finds its own, and a run re-created under the name makes another."""
    slug = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")[:20].strip("-")
    digest = hashlib.sha256(f"{uid}\0{key}".encode()).hexdigest()[:8]
    return fit_name(run, f"-{slug}-{digest}" if slug else f"-{digest}", MAX_SUBDOMAIN)


def hook_run_name(run: str, uid: str, kind: str) -> str:
    """The run a finished run's hook ``kind`` (``onFailure``) creates: ``<run>-<uid8>-on-failure``.
    One name per run and hook, so a second create (a retry, a restarted operator) is a 409; the
    UID tells a run re-created under the same name apart, as its hooks fire again."""
    return fit_name(run, f"-{uid[:8]}-" + "".join(f"-{c.lower()}" if c.isupper() else c for c in kind), MAX_SUBDOMAIN)
