"""In-pod middleware, lifecycle hooks and retried blocks on the real cluster (about 45 s)
(examples/python/kubetasks_examples/lifecycle.py). Each hook appends "<attempt>:<hook>" to the
run's metadata, which the operator copies into status.metadata: the order and count of every hook
over a whole run is read from the API, outside the pods. A cancelled run's hooks print instead."""

from __future__ import annotations

import subprocess

import pytest

from kubetasks.core.naming import LABEL_RUN
from tests.conftest import KUBECONFIG, KUBECTL, apply, kubectl, wait_until
from tests.integration.test_cli import cli
from tests.integration.test_runtime import sdk_task
from tests.integration.test_taskruns import FINISHED, status, taskrun, wait_phase

pytestmark = pytest.mark.cluster
MODULE = "kubetasks_examples.lifecycle"
EACH = ["global-middleware", "middleware", "on_start_attempt", "run"]


def hooks(attempt: int, *ending: str) -> list[str]:
    return [f"{attempt}:{h}" for h in [*EACH, *ending]]


def test_hooks_run_in_order_once_per_attempt_and_a_block_retries_inside_its_attempt(namespace, operator):
    apply([sdk_task("hooked", f"{MODULE}:hooked", retry={"maxAttempts": 3, "minDelay": "1s", "maxDelay": "1s"}),
           sdk_task("retried-block", f"{MODULE}:retried_block", retry={"maxAttempts": 1}),
           taskrun("fails-once", "hooked", payload={"succeed_on": 2}),
           taskrun("skips-retrying", "hooked", payload={"succeed_on": 9, "skip": True}),
           taskrun("success-hook-raises", "hooked", payload={"success_hook_raises": True}),
           taskrun("block", "retried-block", payload={"failures": 2}),
           taskrun("always-fails", "hooked", payload={"succeed_on": 9})], namespace)

    once = wait_phase(namespace, "fails-once", FINISHED, timeout=120)
    assert once["phase"] == "Succeeded" and once["attempt"] == 2, once
    # attempt 1 failed with attempts left: catch_error, but no on_failure nor on_complete
    assert once["metadata"]["hooks"] == hooks(1, "catch_error") + hooks(2, "on_success", "on_complete"), once

    skipped = wait_phase(namespace, "skips-retrying", FINISHED, timeout=60)
    assert skipped["phase"] == "Failed" and skipped["attempt"] == 1, skipped  # maxAttempts is 3
    assert "skip retrying" in skipped["conditions"][0]["message"]
    assert skipped["metadata"]["hooks"] == hooks(1, "catch_error", "on_failure", "on_complete"), skipped

    raised = wait_phase(namespace, "success-hook-raises", FINISHED, timeout=60)
    assert raised["phase"] == "Succeeded" and raised["attempt"] == 1, raised
    assert raised["metadata"]["hooks"] == hooks(1, "on_success", "on_complete"), raised  # on_complete ran all the same
    logged = cli("logs", "success-hook-raises", "-n", namespace, "--attempt", "1").stdout
    assert "WARNING" in logged and "on_success fails on purpose" in logged and "the outcome stands" in logged, logged

    block = wait_phase(namespace, "block", FINISHED, timeout=60)
    assert block["phase"] == "Succeeded" and block["attempt"] == 1, block
    assert block["result"] == {"tries": 3, "attempt": 1}  # two failed tries, then success, in one attempt
    assert len(block["attempts"]) == 1
    logged = cli("logs", "block", "-n", namespace, "--attempt", "1").stdout
    assert "try 1/5 failed" in logged and "try 2/5 failed" in logged and "try 3/5" not in logged, logged

    # on_failure once, after the last of 3 attempts: the operator told each pod how many may follow
    spent = wait_phase(namespace, "always-fails", FINISHED, timeout=90)
    assert spent["phase"] == "Failed" and spent["attempt"] == 3, spent
    assert spent["metadata"]["hooks"] == (hooks(1, "catch_error") + hooks(2, "catch_error")
                                          + hooks(3, "catch_error", "on_failure", "on_complete")), spent


def test_a_cancelled_run_runs_its_on_cancel_hooks_in_its_pod_within_its_stop_grace_period(namespace, operator):
    """spec.cancel deletes the attempt's Job; the pod's SIGTERM interrupts the task, whose finally
    block runs, then the on_cancel hooks (global, then the task's), within the grace period: the
    Task's stopGracePeriod, else 5 s. Each run's on_cancel takes 6 s. What the containers printed is
    read as they print, from the kubelet."""
    apply([sdk_task("cancellable", f"{MODULE}:cancellable", stopGracePeriod="20s"),
           sdk_task("cancellable-short", f"{MODULE}:cancellable"),
           taskrun("cancel-me", "cancellable", payload={"linger": 6}),
           taskrun("cut-short", "cancellable-short", payload={"linger": 6})], namespace)
    runs = ("cancel-me", "cut-short")
    for run in runs:
        wait_until(f"{run} runs", lambda: "1:run" in ((status(namespace, run).get("metadata") or {})
                                                       .get("hooks") or []), timeout=90)
    logs = {run: subprocess.Popen([KUBECTL, "--kubeconfig", KUBECONFIG, "logs", "-f", "-n", namespace,
                                   "-l", f"{LABEL_RUN}={run}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for run in runs}
    printed = {}
    try:
        for run in runs:
            kubectl("patch", "taskrun", run, "-n", namespace, "--type", "merge", "-p", '{"spec": {"cancel": true}}')
        for run in runs:
            assert wait_phase(namespace, run, "Cancelled", timeout=30)["attempt"] == 1
            printed[run], _ = logs[run].communicate(timeout=40)  # the container ended: its log ends
    finally:
        for log in logs.values():
            log.kill()
    lines = {run: [line for line in printed[run].splitlines() if line[:2] == "1:"] for run in runs}
    # no catch_error, on_failure nor on_complete: they print nothing, and were not called
    assert lines["cancel-me"] == ["1:finally", "1:global-on_cancel", "1:on_cancel"], printed["cancel-me"]
    assert "the run was cancelled: on_cancel hooks run" in printed["cancel-me"], printed["cancel-me"]
    assert "Traceback" not in printed["cancel-me"], printed["cancel-me"]
    # killed 5 s after its SIGTERM, in the middle of its 6 s on_cancel
    assert lines["cut-short"] == ["1:finally", "1:global-on_cancel"], printed["cut-short"]


def test_a_durable_sleep_calls_on_wait_in_the_pod_it_ends_and_on_resume_in_the_next(namespace, operator):
    apply([sdk_task("napper", f"{MODULE}:napper"), taskrun("naps", "napper")], namespace)
    done = wait_phase(namespace, "naps", FINISHED, timeout=90)
    assert done["phase"] == "Succeeded" and done["attempt"] == 2, done  # the resumed pod is attempt 2
    assert done["metadata"]["hooks"] == ["1:global-middleware", "1:run", "1:on_wait:sleep:nap",
                                         "2:global-middleware", "2:run", "2:on_resume:sleep:nap", "2:after"], done


def test_async_middleware_hooks_and_steps_share_one_event_loop_in_the_pod(namespace, operator):
    apply([sdk_task("async-hooked", f"{MODULE}:async_hooked"), taskrun("async", "async-hooked")], namespace)
    done = wait_phase(namespace, "async", FINISHED, timeout=90)
    assert done["phase"] == "Succeeded", done
    # the client its async middleware made served its async on_start_attempt, the task and a step
    assert done["result"] == {"step": "got a step", "task": "got the task"}, done
    assert done["metadata"]["hooks"] == ["1:global-middleware", "1:async-middleware", "1:async-on_start_attempt",
                                         "1:run", "1:async-middleware:after", "1:async-heartbeat:closed"], done
