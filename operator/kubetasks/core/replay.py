"""Replays (``kubetasks replay``): a new run of a run's Task that starts from copies of its step records.

A replay names its original in ``spec.replayOf`` (name and uid). Before its first attempt the
operator seeds the replay's checkpoint ConfigMap with the original's records it reuses
(:func:`reused_records`): by default every completed step, so only the step that failed (and what
follows it) runs again; ``fromStep`` keeps only the records completed before that step; ``fresh``
none. The original is only read. A reused output kept in the object store is copied into the
replay's own prefix (core.step_grants.replayed_path) and its record names the copy: the replay's
pods reach their own run's blobs only, and the copy lives and goes with the replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from kubetasks.api.common import GROUP, VERSION
from kubetasks.api.taskrun import Phase, ReplayOf, TaskRun
from kubetasks.core.naming import LABEL_INSTANCE, LABEL_TASK, MAX_SUBDOMAIN, fit_name
from kubetasks.core.step_grants import judge_step_ref, replayed_path
from kubetasks.core.trigger_policy import Refusal
from kubetasks.protocol import SCOPE_SEPARATOR, STATUS_STEPS_LIMIT, Checkpoint, configmap_key, parse_checkpoints

SOURCE_MISSING = "ReplaySourceMissing"
INVALID_REPLAY = "InvalidReplay"
KEPT_SPEC = ("tags", "concurrencyKey", "machine")  # what a replay keeps of its original's spec, with its payload
RANDOM_SUFFIX = 5  # characters the API server appends to a generateName
# Only a finished run is replayed: an unfinished one's step records may still change.
REPLAYABLE_PHASES = frozenset(p.value for p in Phase if p.finished)


class NotReplayable(ValueError):
    """A run that cannot be replayed as asked; the message says why."""


# The new run (built by the CLI and the dashboard alike) ----------------------------------------

def replay_name(original: str) -> str:
    """The generateName of a replay of ``original``: ``<original>-replay-``, shortened (with a hash
    of the original's name) so that the API server's suffix keeps it a valid name."""
    return fit_name(original, "-replay", MAX_SUBDOMAIN - RANDOM_SUFFIX - 1) + "-"


def replay_taskrun(original: Mapping[str, Any], *, payload: Any = None, from_step: str | None = None,
                   fresh: bool = False, spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A new TaskRun that replays ``original`` (the TaskRun object). ``payload``: instead of the
    original's (None keeps it); ``spec``: more spec fields (idempotency key, delay, priority)."""
    meta, old = original.get("metadata") or {}, original.get("spec") or {}
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k in (LABEL_TASK, LABEL_INSTANCE)}
    replay_of: dict[str, Any] = {"name": meta["name"], "uid": meta["uid"]}
    if from_step is not None:
        replay_of["fromStep"] = from_step
    if fresh:
        replay_of["fresh"] = True
    new: dict[str, Any] = {"taskRef": old["taskRef"], **{k: old[k] for k in KEPT_SPEC if old.get(k) is not None}}
    if payload is not None:
        new["payload"] = payload
    elif old.get("payloadRef") is not None:  # kept in the store: the replay names the same blob
        new["payloadRef"] = old["payloadRef"]
    elif old.get("payload") is not None:
        new["payload"] = old["payload"]
    new.update(spec or {})
    new["replayOf"] = replay_of
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskRun",
            "metadata": {"generateName": replay_name(meta["name"]), "labels": labels}, "spec": new}


def check_replayable(original: Mapping[str, Any], from_step: str | None) -> None:
    """NotReplayable when ``original`` cannot be replayed as asked: not finished, or ``from_step``
    is no step it completed (as far as its status, which lists at most 200, can tell)."""
    name = original["metadata"]["name"]
    status = original.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase not in REPLAYABLE_PHASES:
        raise NotReplayable(f"taskrun {name} is {phase}: only a finished run can be replayed (cancel it first)")
    steps = [str(s.get("name")) for s in status.get("steps") or []]
    if from_step is not None and from_step not in steps and len(steps) < STATUS_STEPS_LIMIT:
        listed = ", ".join(steps[:10]) + (", ..." if len(steps) > 10 else "") if steps else "none"
        raise NotReplayable(f"taskrun {name} completed no step {from_step!r} (its completed steps: {listed}); "
                            "without --from-step the replay resumes at the step that failed")


# The operator's side: may it start, and from which records ------------------------------------

def replay_refusal(run: TaskRun, original: Mapping[str, Any] | None) -> Refusal | None:
    """Why the replay cannot start from its original (``original``: the run of that name, as the
    cache holds it); None when it can, or the run is no replay. A ``fresh`` replay needs nothing
    of the original and is never refused."""
    source = run.spec.replay_of
    if source is None or source.fresh:
        return None
    meta = (original or {}).get("metadata") or {}
    if original is None or meta.get("uid") != source.uid:
        gone = "does not exist" if original is None else f"is another run now (uid {meta.get('uid')}, not {source.uid})"
        return Refusal(SOURCE_MISSING, f"run {source.name!r}, which this run replays, {gone}: its step records "
                                       "cannot be reused (replay with --fresh to run every step again)")
    task_ref = (original.get("spec") or {}).get("taskRef")
    if task_ref != run.spec.task_ref:
        return Refusal(INVALID_REPLAY, f"run {source.name!r} is a run of Task {task_ref!r}, not {run.spec.task_ref!r}: "
                                       "a replay reuses the step records of a run of its own Task only")
    return None


def _within(key: str, step: str) -> bool:
    return key == step or key.startswith(step + SCOPE_SEPARATOR)


def reused_records(data: Mapping[str, str] | None, replay: ReplayOf) -> list[Checkpoint]:
    """The original's records (its checkpoint ConfigMap's ``data``) the replay starts from: the
    completed ones (a sleep or wait not over is not reused: the replay sleeps or waits anew), those
    completed before ``fromStep`` or any step nested in it when it names one that completed
    (a parent completes after its children: it is not reused either), none when ``fresh``."""
    if replay.fresh:
        return []
    done = [r for r in parse_checkpoints(data).values() if r.completed]
    step = replay.from_step
    marks = [r.completed_at for r in done if step is not None and _within(r.key, step) and r.completed_at]
    if not marks:  # no fromStep, or one that never completed (the step that failed): all that did
        return sorted(done, key=lambda r: r.key)
    cut = min(marks)
    return sorted((r for r in done if r.completed_at and r.completed_at < cut), key=lambda r: r.key)


def blob_copies(records: list[Checkpoint], namespace: str, original_uid: str, replay_uid: str,
                store_url: str | None) -> dict[str, tuple[str, str]]:
    """Source uri -> (path of the original's blob, path of the replay's copy), for each reused
    record whose output is in the store. Only a ref that names a step output of the original in
    this store is copied (core.step_grants judges it, as for the original's own grants): any other
    is left as it was written, and the replay's grant refuses it as it would the original's."""
    if store_url is None:
        return {}
    copies: dict[str, tuple[str, str]] = {}
    for record in records:
        if record.result_ref is None:
            continue
        judged = judge_step_ref(record.result_ref, namespace, original_uid, store_url)
        if judged.path is not None:
            copies[judged.uri] = (judged.path, replayed_path(namespace, replay_uid, judged.uri))
    return copies


def seed_data(records: list[Checkpoint], copies: Mapping[str, tuple[str, str]], store_url: str | None) -> dict[str, str]:
    """The replay's checkpoint ConfigMap data: each reused record under its key, a copied blob's
    ref naming the copy (same size and sha256: the bytes are the same)."""
    data: dict[str, str] = {}
    for record in records:
        uri = (record.result_ref or {}).get("uri")
        if isinstance(uri, str) and uri in copies and store_url is not None:
            record = replace(record, result_ref={**(record.result_ref or {}),
                                                 "uri": f"{store_url.rstrip('/')}/{copies[uri][1]}"})
        data[configmap_key(record.key)] = record.encode()
    return data
