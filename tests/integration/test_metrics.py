"""The operator's Prometheus metrics, scraped from the running operator after real runs."""

from __future__ import annotations

import pytest

from tests.conftest import VERSIONS, apply, run_until_finished, scrape, wait_until

pytestmark = pytest.mark.cluster


def value(metrics: dict, family: str, sample: str, **labels: str) -> float:
    return sum(s.value for s in metrics.get(family, [])
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def test_runs_attempts_queues_reconciles_and_api_requests_are_measured(namespace, operator):
    def task(name: str, script: str) -> dict:
        return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
                "spec": {"image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never",
                         "command": ["python3", "-c", script], "machine": {"preset": "micro"},
                         "retry": {"maxAttempts": 2, "minDelay": "1s"}}}

    apply([task("metrics-ok", "print('ok')"), task("metrics-bad", "raise SystemExit(3)")], namespace)
    assert run_until_finished(namespace, "ok-1", "metrics-ok") == "Succeeded"
    assert run_until_finished(namespace, "bad-1", "metrics-bad") == "Failed"

    # Metrics are updated after the status write that a test sees: poll briefly.
    m = wait_until("the failed run counted", lambda: (m := scrape(operator.metrics_port)) and value(
        m, "kubetasks_runs_finished", "kubetasks_runs_finished_total", task="metrics-bad", phase="Failed") and m,
        timeout=10)
    assert value(m, "kubetasks_runs_finished", "kubetasks_runs_finished_total", task="metrics-ok",
                 phase="Succeeded") == 1
    assert value(m, "kubetasks_runs_started", "kubetasks_runs_started_total", task="metrics-ok") == 1
    assert value(m, "kubetasks_attempts_started", "kubetasks_attempts_started_total", task="metrics-bad") == 2
    attempts = "kubetasks_attempt_duration_seconds"
    assert value(m, attempts, f"{attempts}_count", task="metrics-bad", reason="Error") == 2
    assert value(m, attempts, f"{attempts}_count", task="metrics-ok", reason="Succeeded") == 1
    assert value(m, "kubetasks_run_duration_seconds", "kubetasks_run_duration_seconds_count", task="metrics-ok") == 1
    assert value(m, "kubetasks_reconcile_seconds", "kubetasks_reconcile_seconds_count", kind="taskrun") > 0
    posts = value(m, "kubetasks_api_requests", "kubetasks_api_requests_total", method="POST", resource="jobs")
    assert posts >= 3
    took = "kubetasks_api_request_duration_seconds"  # each request timed, the watches left out
    assert posts - 2 <= value(m, took, f"{took}_count", method="POST", resource="jobs") <= posts  # less any in flight
    assert value(m, took, f"{took}_count", method="GET", resource="jobs") < value(
        m, "kubetasks_api_requests", "kubetasks_api_requests_total", method="GET", resource="jobs")
    assert "kubetasks_queue_depth" in m and "kubetasks_queued_runs" in m
