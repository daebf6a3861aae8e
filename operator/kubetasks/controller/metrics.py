"""Prometheus metrics of the operator (prometheus-client: the reference client)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from kubetasks.api.taskrun import AttemptRecord, Phase, TaskRunStatus

RUNS_STARTED = Counter("kubetasks_runs_started_total", "Runs whose first attempt started", ["task"])
RUNS_FINISHED = Counter("kubetasks_runs_finished_total", "Runs that finished, by phase", ["task", "phase"])
ATTEMPTS_STARTED = Counter("kubetasks_attempts_started_total", "Attempts (Jobs) created", ["task"])
RUN_DURATION = Histogram("kubetasks_run_duration_seconds", "Wall time of finished runs", ["task"],
                         buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600))
ATTEMPT_DURATION = Histogram("kubetasks_attempt_duration_seconds", "Wall time of finished attempts, by outcome",
                             ["task", "reason"],
                             buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600))
RECONCILE_SECONDS = Histogram("kubetasks_reconcile_seconds", "Time to reconcile one object", ["kind"],
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
# A first attempt's Job: from the wake-up that let it start (the TaskRun's watch event as the
# reflector read it off the wire, or the timer, or the event that freed its slot) to its POST being
# sent: the hand-off to the event loop, the queue and the reconcile. The API server's own time to
# create it, and the watch that shows it, come after.
JOB_START_LATENCY = Histogram("kubetasks_job_start_latency_seconds",
                              "Wake-up of a run (its watch event as read, a timer, a freed slot) to its first Job's POST being sent",
                              ["task"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                                 5, 10, 30))
QUEUE_DEPTH = Gauge("kubetasks_queue_depth", "Keys waiting in the operator's work queues", ["queue"])
FINISHED_RUN_ERRORS = Counter("kubetasks_finished_run_errors_total",
                              "Errors met on finished runs (reaping a Job, deleting the run at its TTL, creating a hook run): "
                              "each a Warning Event; the run's outcome stands", ["task"])
HOOK_RUNS = Counter("kubetasks_hook_runs_total",
                    "Hook runs created for finished runs, by the finished run's Task and the hook "
                    "(onSuccess, onFailure, onComplete)", ["task", "hook"])
QUEUED_RUNS = Gauge("kubetasks_queued_runs", "Runs waiting for a concurrency slot", ["task"])
SLOT_LEAKS_REPAIRED = Counter("kubetasks_slot_leaks_repaired_total",
                              "Slots a run was still counted in after it stopped holding them (a missed change), "
                              "let go when the limit was next looked at", ["reason"])
QUEUE_FULL_REFUSALS = Counter("kubetasks_queue_full_refusals_total",
                              "Runs refused because their TaskQueue had maxWaiting runs waiting: at create "
                              "(the admission webhook) or at their first reconcile (QueueFull)", ["where"])
KEPT_LOG_BYTES = Gauge("kubetasks_kept_log_bytes", "Bytes of attempts' logs kept in ConfigMaps", ["namespace"])
KEPT_LOGS = Gauge("kubetasks_kept_logs", "Attempts' logs kept in ConfigMaps", ["namespace"])
KEPT_LOG_EVICTIONS = Counter("kubetasks_kept_log_evictions_total",
                             "Kept logs deleted, oldest first, to keep a namespace within its budget", ["namespace"])

# Refreshed by each sweep of the object store (controller.blob_gc), from its listing.
STORE_OBJECTS = Gauge("kubetasks_store_objects", "Blobs of runs in the object store, as of its last sweep", ["namespace"])
STORE_BYTES = Gauge("kubetasks_store_bytes", "Bytes of runs' blobs in the object store, as of its last sweep",
                    ["namespace"])


def phase_changed(task: str, new: Phase, old: str, status: TaskRunStatus) -> None:
    if new == Phase.RUNNING and old in (Phase.PENDING, Phase.DELAYED, Phase.QUEUED, ""):
        RUNS_STARTED.labels(task).inc()
    if new.finished:
        RUNS_FINISHED.labels(task, new.value).inc()
        if status.start_time and status.completion_time:
            RUN_DURATION.labels(task).observe((status.completion_time - status.start_time).total_seconds())


def newly_finished(old_status: dict[str, Any], new: TaskRunStatus) -> list[AttemptRecord]:
    """Attempts that have a completion time in ``new`` and had none in ``old_status`` (wire form)."""
    done_before = {a.get("attempt") for a in old_status.get("attempts") or [] if a.get("completionTime")}
    return [a for a in new.attempts if a.completion_time and a.start_time and a.attempt not in done_before]


def attempts_finished(task: str, old_status: dict[str, Any], new: TaskRunStatus) -> None:
    for a in newly_finished(old_status, new):
        if a.completion_time and a.start_time:  # always, by newly_finished; says so to mypy
            seconds = (a.completion_time - a.start_time).total_seconds()
            ATTEMPT_DURATION.labels(task, a.reason or "Unknown").observe(seconds)
