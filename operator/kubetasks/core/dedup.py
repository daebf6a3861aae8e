"""Idempotency keys, decided once by the API server: the first run to create the key's claim
(a ConfigMap with a name derived from the Task and key) is the one that runs.

Sorting the runs one has seen cannot decide this alone: two runs created at the same moment may
each see only itself. Create-if-absent of one deterministically named object is arbitrated by the
API server, whatever the timing and however many operators there are. But reconciles run in
parallel, so of runs of one key that the operator does see together (a file of them applied, a
burst of triggers), a run waits while one created before it has yet to claim, for half a minute
at most (:func:`claims_first`): the first created holds the key, as a user reading the file expects.

The claim also holds the digest of its run's payload, so that a run of the same key with another
payload says so when it ends Duplicate (anyone who may create runs can take a key first), without
reading the holder or its payload: the claim is read anyway.

A key is held for a while, not for ever (:func:`key_released`): until its holder fails or times
out, or until its TTL (idempotencyKeyTTL, from the holder's creation) has passed. Then the next
run of the key takes the claim over, and runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Container, Iterable
from datetime import datetime, timedelta
from typing import Any

from kubetasks.api.durations import parse_duration
from kubetasks.api.task import Task
from kubetasks.api.taskrun import Phase, TaskRun
from kubetasks.api.times import api_time, parse_time
from kubetasks.core.debounce import UNSTAMPED
from kubetasks.core.naming import LABEL_MANAGED_BY, LABEL_TASK, MANAGER, fit_name, label_value
from kubetasks.protocol import canonical

LABEL_CLAIM = "kubetasks.io/idempotency-claim"
CLAIM_PAYLOAD = "payloadSha256"  # the claim's key for its run's payload digest
SHOWN = 12  # hex digits of a digest shown in a message
# How long a run waits for one of its key created before it to claim the key: past it, a claim
# that cannot be made (its reconcile keeps failing) holds no one else up.
CLAIM_ORDER_WINDOW = timedelta(seconds=30)


def claim_name(task_ref: str, key: str) -> str:
    digest = hashlib.sha256(f"{task_ref}\0{key}".encode()).hexdigest()[:16]
    return fit_name(task_ref, f"-key-{digest}", 253)


def render_claim(run: TaskRun) -> dict[str, Any]:
    """The claim of ``run``'s key: owned by the run, so the key is free again once it is deleted."""
    assert run.spec.idempotency_key is not None
    uid = str(run.metadata.get("uid", ""))
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": claim_name(run.spec.task_ref, run.spec.idempotency_key), "namespace": run.namespace,
                         "labels": {LABEL_MANAGED_BY: MANAGER, LABEL_CLAIM: "true", LABEL_TASK: label_value(run.spec.task_ref)},
                         "ownerReferences": [{"apiVersion": run.api_version, "kind": "TaskRun", "name": run.name,
                                              "uid": uid, "controller": True, "blockOwnerDeletion": False}]},
            "data": {"run": run.name, "uid": uid, CLAIM_PAYLOAD: run_payload_digest(run)}}


def payload_digest(payload: Any) -> str:
    """The sha256 of a payload's JSON as the API server gives it back, keys sorted, compact, UTF-8
    (``jq -cjS . | sha256sum`` computes the same for payloads of strings, integers and booleans)."""
    text = json.dumps(canonical(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def run_payload_digest(run: TaskRun) -> str:
    """The run's payload digest: a payload kept in the store (spec.payloadRef) by its ref's sha256,
    of the bytes uploaded (the operator does not read them to compare)."""
    return run.spec.payload_ref.sha256 if run.spec.payload_ref is not None else payload_digest(run.spec.payload)


def claim_payload(claim: dict[str, Any]) -> str | None:
    """The payload digest a claim holds; None for a claim made before claims held one."""
    digest = (claim.get("data") or {}).get(CLAIM_PAYLOAD)
    return digest if isinstance(digest, str) and digest else None


def duplicate_message(run: TaskRun, holder: str, holder_payload: str | None) -> str:
    """Why ``run`` ends Duplicate of ``holder``; when their payloads differ (``holder_payload`` is
    the holder's digest, from its claim), it says so: the holder's result is not this payload's."""
    said = f"idempotency key {run.spec.idempotency_key!r} is held by TaskRun {holder!r}"
    mine = run_payload_digest(run)
    if holder_payload is None or holder_payload == mine:
        return f"{said}: this run does not run"
    return (f"{said}, whose payload differs from this run's (sha256 {holder_payload[:SHOWN]}... there, "
            f"{mine[:SHOWN]}... here): this run does not run, and the result of {holder!r} is not this payload's")


def claim_holder(claim: dict[str, Any]) -> tuple[str, str]:
    """(name, uid) of the run that holds a claim; ("", "") when the claim is no claim a run made:
    anyone who may create ConfigMaps can take the name, so its data counts only when the run it
    names is also the claim's controller, as :func:`render_claim` makes it."""
    data = claim.get("data") or {}
    name, uid = str(data.get("run", "")), str(data.get("uid", ""))
    owners = [ref for ref in (claim.get("metadata") or {}).get("ownerReferences") or [] if ref.get("controller")]
    if not uid or not owners or (owners[0].get("kind"), owners[0].get("name"), owners[0].get("uid")) != ("TaskRun", name, uid):
        return "", ""
    return name, uid


def holds_key(holder: dict[str, Any], run: TaskRun) -> bool:
    """Whether ``holder``, the run a claim names, is a run of ``run``'s Task with its key: a claim
    that names any other run (one made to look like a claim) decides nothing for this key."""
    spec = holder.get("spec") or {}
    return spec.get("taskRef") == run.spec.task_ref and spec.get("idempotencyKey") == run.spec.idempotency_key


# A run that ended so releases its key at once: the key's work was not done (Trigger.dev's rule).
# Succeeded and Cancelled runs keep it until its TTL.
RELEASED_BY = frozenset({Phase.FAILED, Phase.TIMED_OUT})


def key_expiry(run: TaskRun, task: Task) -> datetime | None:
    """When ``run``'s hold on its key ends: its creation plus its own idempotencyKeyTTL, or its
    Task's. None for a run with no key, or not created yet."""
    created = parse_time(run.metadata.get("creationTimestamp"))
    if not run.spec.idempotency_key or created is None:
        return None
    return created + parse_duration(run.spec.idempotency_key_ttl or task.spec.idempotency_key_ttl)


def key_released(holder: dict[str, Any], now: datetime) -> bool:
    """Whether the run ``holder`` (an object as the API server gives it) no longer holds its key:
    it failed or timed out, or the time its status gives for the key's release has come."""
    status = holder.get("status") or {}
    if status.get("phase") in RELEASED_BY:
        return True
    expires = parse_time(status.get("idempotencyKeyExpiresAt"))
    return expires is not None and now >= expires


def _created(run: dict[str, Any]) -> tuple[datetime, int]:
    """The order the API server created runs in: creationTimestamp, in whole seconds, then the
    resourceVersion, which for a run yet to claim is still its creation's (nothing writes a run
    before its claim; a run written since goes later in its second)."""
    meta = run.get("metadata") or {}
    version = str(meta.get("resourceVersion", ""))
    return api_time(meta.get("creationTimestamp")) or UNSTAMPED, int(version) if version.isdigit() else 0


def claims_first(run: dict[str, Any], rivals: Iterable[dict[str, Any]], claimed: Container[str],
                 now: datetime) -> str | None:
    """The name of the run ``run`` waits for before it claims its key, or None to claim now.

    ``rivals`` are the unfinished runs of its Task and key that the operator knows of; ``claimed``
    the uids of runs known to have claimed. It waits for a rival created before it, at most
    CLAIM_ORDER_WINDOW ago, that has yet to claim, while no run is known to hold the key (once
    one does, the claim answers at once: a burst of one key is no chain of waits)."""
    me = _created(run)
    first: tuple[tuple[datetime, int], str] | None = None
    for rival in rivals:
        meta, status = rival.get("metadata") or {}, rival.get("status") or {}
        if meta.get("uid") == (run.get("metadata") or {}).get("uid"):
            continue
        if meta.get("uid") in claimed or status.get("idempotencyKeyExpiresAt"):
            return None
        created = _created(rival)
        if created < me and not status.get("attempt") and not (rival.get("spec") or {}).get("cancel") \
                and now - created[0] < CLAIM_ORDER_WINDOW and (first is None or created < first[0]):
            first = created, str(meta.get("name", ""))
    return first[1] if first else None
