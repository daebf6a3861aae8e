"""The kubetasks CLI against the real cluster: run --wait, runs, describe, logs, cancel, errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import KUBECONFIG, REPO, TASK_IMAGE, VERSIONS, apply, wait_until
from tests.integration.test_taskruns import status

pytestmark = pytest.mark.cluster


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": KUBECONFIG, "PYTHONPATH": str(REPO / "operator"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "kubetasks.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_run_wait_list_describe_logs_and_cancel(namespace, operator):
    apply([
        {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "hello"},
         "spec": {"image": TASK_IMAGE, "imagePullPolicy": "Never", "entrypoint": "kubetasks_examples.hello:hello",
                  "env": [{"name": "PYTHONPATH", "value": "/app/operator:/app/examples/python"}],
                  "machine": {"preset": "micro"}}},
        {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "sleepy"},
         "spec": {"image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never",
                  "command": ["python3", "-c", "import time; time.sleep(600)"], "machine": {"preset": "micro"}}},
    ], namespace)

    done = cli("run", "hello", "--payload", '{"name": "CLI"}', "--wait", "-n", namespace)
    assert done.returncode == 0, done.stderr
    run = re.search(r"taskrun/(\S+) created", done.stdout).group(1)
    assert f"taskrun/{run} Succeeded" in done.stdout and '"Hello, CLI!"' in done.stdout

    table = cli("runs", "hello", "-n", namespace).stdout
    assert table.split()[:3] == ["NAME", "TASK", "PHASE"], table
    assert re.search(rf"^{run}\s+hello\s+Succeeded\s+1\b", table, re.M), table

    described = cli("describe", run, "-n", namespace).stdout
    assert re.search(r"Phase:\s+Succeeded", described) and f"{run}-1" in described, described
    assert '"Hello, CLI!"' in described

    logs = cli("logs", run, "-n", namespace, "--attempt", "1").stdout
    assert f"run {run} attempt 1" in logs, logs

    sleepy = re.search(r"taskrun/(\S+) created", cli("run", "sleepy", "-n", namespace).stdout).group(1)
    wait_until(f"{sleepy} Running", lambda: status(namespace, sleepy).get("phase") == "Running", timeout=120)
    done = cli("cancel", sleepy, "-n", namespace)
    assert done.returncode == 0 and "cancel requested" in done.stdout, done.stderr
    wait_until(f"{sleepy} Cancelled", lambda: status(namespace, sleepy).get("phase") == "Cancelled", timeout=60)
    assert "already finished (Cancelled)" in one_line_error(cli("cancel", sleepy, "-n", namespace))
    assert "timed out after 2s" in one_line_error(cli("run", "sleepy", "--wait", "--timeout", "2", "-n", namespace))


def test_errors_are_one_line_with_a_non_zero_exit(namespace, crds):
    assert "not found" in one_line_error(cli("describe", "nope", "-n", namespace)).lower()
    assert "ghost" in one_line_error(cli("run", "ghost", "-n", namespace))
    done = cli("run", "ghost", "--payload", "{oops", "-n", namespace)
    assert done.returncode != 0 and "payload" in done.stderr.lower() and "Traceback" not in done.stderr
