"""Retry delays: exponential, linear or fixed, bounded and optionally jittered."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from kubetasks.api.common import RetryPolicy
from kubetasks.api.durations import parse_duration
from kubetasks.api.task import Task
from kubetasks.api.taskrun import TaskRun


def effective_retry(run: TaskRun, task: Task | None) -> RetryPolicy:
    """The run's own retry policy, else its Task's."""
    return run.spec.retry or (task.spec.retry if task else RetryPolicy())


def retry_delay(policy: RetryPolicy, failures: int, seed: str = "") -> timedelta:
    """Delay before the attempt that follows the ``failures``-th failure (1-based).

    Jitter is drawn from a generator seeded by ``seed`` (the run's uid and attempt), so a
    restarted operator computes the same delay.
    """
    if failures < 1:
        raise ValueError("failures counts from 1")
    base = parse_duration(policy.min_delay).total_seconds()
    if policy.backoff == "exponential":
        delay = base * policy.factor ** (failures - 1)
    elif policy.backoff == "linear":
        delay = base * (1 + policy.factor * (failures - 1))
    else:
        delay = base
    delay = min(delay, parse_duration(policy.max_delay).total_seconds())
    if policy.jitter:
        delay *= 1 + policy.jitter * (2 * random.Random(f"{seed}:{failures}").random() - 1)
    return timedelta(seconds=max(delay, 0.0))


def next_attempt_at(policy: RetryPolicy, failures: int, failed_at: datetime, seed: str = "") -> datetime:
    return failed_at + retry_delay(policy, failures, seed)


def schedule(policy: RetryPolicy) -> list[timedelta]:
    """All delays a run may wait through, for docs and the CLI."""
    return [retry_delay(policy, n) for n in range(1, policy.max_attempts)]
