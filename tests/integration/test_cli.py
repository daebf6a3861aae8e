"""The kubetasks CLI against the real cluster: run --wait, runs, describe, logs, cancel, errors."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kubetasks import list_runs
from tests.conftest import KUBECONFIG, KUBECTL, KWOK_PLACEMENT, REPO, TASK_IMAGE, VERSIONS, apply, get, wait_until
from tests.integration.test_runtime import sdk_task
from tests.integration.test_taskruns import status, task, taskrun, wait_phase

pytestmark = pytest.mark.cluster


def cli_env(columns: int = 200) -> dict[str, str]:
    # The venv's bin first: its kubectl-kubetasks plugin and the kubetasks the completion scripts call.
    path = os.pathsep.join([str(Path(sys.executable).parent), str(Path(KUBECTL).parent), os.environ.get("PATH", "")])
    return {**os.environ, "KUBECONFIG": KUBECONFIG, "PYTHONPATH": str(REPO / "operator"), "COLUMNS": str(columns),
            "PATH": path}


def cli(*args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubetasks.cli.main", *args], env=cli_env(columns),
                          capture_output=True, text=True, timeout=300)


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


def test_cancel_and_runs_by_task_tag_and_phase(namespace, operator):
    runs = {"t1": ["nightly"], "t2": ["nightly", "eu"], "u1": []}
    apply([{"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "sleepy"},
            "spec": {"image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never",
                     "command": ["python3", "-c", "import time; time.sleep(600)"], "machine": {"preset": "micro"}}},
           *[{"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
              "spec": {"taskRef": "sleepy", "tags": tags}} for name, tags in runs.items()]], namespace)

    done = cli("cancel", "--task", "sleepy", "--tag", "nightly", "-n", namespace)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["taskrun/t1 cancel requested", "taskrun/t2 cancel requested",
                                        "2 cancels requested (of sleepy tagged nightly)"], done.stdout
    for name in ("t1", "t2"):
        wait_until(f"{name} Cancelled", lambda: status(namespace, name).get("phase") == "Cancelled", timeout=60)
    untagged = get("taskrun", "u1", namespace)
    assert not untagged["spec"]["cancel"] and untagged.get("status", {}).get("phase") != "Cancelled", untagged

    assert cli("runs", "sleepy", "--phase", "Cancelled", "-n", namespace, "-o", "name").stdout == "t1\nt2\n"
    cancelled = list_runs("sleepy", phase="Cancelled", namespace=namespace)  # the SDK, with the same filter
    assert [h.name for h in cancelled] == ["t1", "t2"] and cancelled[0].status()["phase"] == "Cancelled"
    assert cli("runs", "--phase", "active", "--since", "1h", "-n", namespace, "-o", "name").stdout == "u1\n"

    wait_until("u1 Running", lambda: status(namespace, "u1").get("phase") == "Running", timeout=60)
    done = cli("cancel", "--task", "sleepy", "--phase", "Queued", "-n", namespace)
    assert done.returncode == 0 and "No unfinished runs of sleepy in phase Queued to cancel." in done.stderr, done
    done = cli("cancel", "--task", "sleepy", "--phase", "Running", "-n", namespace)  # the finished two: not asked again
    assert done.stdout.splitlines() == ["taskrun/u1 cancel requested",
                                        "1 cancel requested (of sleepy in phase Running)"], done.stdout
    wait_until("u1 Cancelled", lambda: status(namespace, "u1").get("phase") == "Cancelled", timeout=60)
    done = cli("cancel", "--task", "sleepy", "-n", namespace)
    assert done.returncode == 0 and "No unfinished runs of sleepy to cancel." in done.stderr, done
    assert cli("runs", "--phase", "active", "-n", namespace, "-o", "name").stdout == ""

    # The tagged two again, by tag: their replays keep the tag, and a second call replays nothing more.
    done = cli("replay", "--tag", "nightly", "--phase", "Cancelled", "--rate", "10/s", "-n", namespace)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "2 replays created", (done.stdout, done.stderr)
    done = cli("replay", "--tag", "nightly", "--phase", "Cancelled", "-n", namespace)
    assert "No Cancelled runs tagged nightly in the last 24h to replay." in done.stderr, done
    replays = [h.name for h in list_runs(tag="nightly", phase="active", since="1h", namespace=namespace)]
    assert len(replays) == 2 and all(r.startswith(("t1-replay-", "t2-replay-")) for r in replays), replays
    done = cli("cancel", "--tag", "nightly", "-n", namespace)
    assert done.stdout.splitlines()[-1] == "2 cancels requested (tagged nightly)", done.stdout


def test_errors_are_one_line_with_a_non_zero_exit(namespace, crds):
    assert "not found" in one_line_error(cli("describe", "nope", "-n", namespace)).lower()
    assert "ghost" in one_line_error(cli("run", "ghost", "-n", namespace))
    done = cli("run", "ghost", "--payload", "{oops", "-n", namespace)
    assert done.returncode != 0 and "payload" in done.stderr.lower() and "Traceback" not in done.stderr


ERROR_LINES = ["could not write the report", "while writing /data/out/report.parquet to the volume",
               "after 3 tries: disk full"]


def test_describe_of_a_failed_run_with_a_multiline_error_fits_80_columns(namespace, operator):
    # A task that really runs (on the real node) and fails with a three-line message, at once (exit 78).
    apply([sdk_task("report", "kubetasks_examples.flaky:flaky", machine={"preset": "micro"}),
           taskrun("report-1", "report", payload={"abort": "\n".join(ERROR_LINES)})], namespace)
    s = wait_phase(namespace, "report-1", {"Failed", "Succeeded"}, timeout=240)
    assert s["phase"] == "Failed" and s["error"]["message"].endswith("\n".join(ERROR_LINES)), s

    done = cli("describe", "report-1", "-n", namespace, columns=80)
    assert done.returncode == 0, done.stderr
    lines = [line.rstrip() for line in done.stdout.splitlines()]
    assert max(len(line) for line in lines) <= 80, done.stdout
    # The label column holds, and each line of the error is whole, in the value column.
    assert "Phase:            Failed" in lines and "Task:             report" in lines, done.stdout
    error = next(i for i, line in enumerate(lines) if line.startswith("Error:            AbortTaskRun: attempt 1"))
    first = " ".join(line[18:] for line in lines[error:error + 2])  # wrapped once, in the value column
    assert first.endswith(f"(exit code 78): {ERROR_LINES[0]}") and not lines[error + 1][:18].strip(), done.stdout
    assert lines[error + 2:error + 4] == [" " * 18 + line for line in ERROR_LINES[1:]], done.stdout
    assert "  kubetasks.runtime.errors.AbortTaskRun: could not write the report" in lines  # the traceback
    attempt = next(i for i, line in enumerate(lines) if line.split()[:3] == ["1", "Error", "78"])
    assert lines[attempt + 1].strip() == f"AbortTaskRun: {ERROR_LINES[0]}", done.stdout  # its message, under its row
    assert len(lines) < 50, done.stdout  # never a column one character wide


def test_the_cli_is_a_kubectl_plugin(namespace, operator):
    apply([task("quick", "pass", **KWOK_PLACEMENT), taskrun("quick-1", "quick")], namespace)
    wait_phase(namespace, "quick-1", "Succeeded", timeout=120)
    env = cli_env()
    env.pop("KUBECONFIG")  # kubectl's flag, handed to the plugin
    done = subprocess.run([KUBECTL, "kubetasks", "runs", "-n", namespace, "--kubeconfig", KUBECONFIG], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^quick-1\s+quick\s+Succeeded\s+1\b", done.stdout, re.M), done.stdout
    # The flags before the command too.
    context = subprocess.run([KUBECTL, "--kubeconfig", KUBECONFIG, "config", "current-context"], capture_output=True,
                             text=True, timeout=30).stdout.strip()
    done = subprocess.run([KUBECTL, "kubetasks", "--kubeconfig", KUBECONFIG, "--context", context, "-n", namespace,
                           "runs", "-o", "name"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "quick-1\n", (done.stdout, done.stderr)
    done = subprocess.run([KUBECTL, "kubetasks", "runs", "--context", "no-such-context"], env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "no-such-context" in done.stderr, done.stderr

    # Bash completion of run names, from the API, in the namespace the line names.
    script = f"""
        source <(kubetasks completion bash)
        COMP_LINE="kubetasks describe -n {namespace} qu"; COMP_POINT=${{#COMP_LINE}}
        _python_argcomplete kubetasks; echo "${{COMPREPLY[*]}}"
    """
    done = subprocess.run(["bash", "-c", script], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["quick-1"], (done.stdout, done.stderr)
    # And kubectl's own completion of the plugin (kubectl_complete-kubetasks).
    done = subprocess.run([KUBECTL, "__complete", "kubetasks", "describe", "-n", namespace, "qu"], env=cli_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["quick-1", ":4"], (done.stdout, done.stderr)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_runs_watch_keeps_a_live_table(namespace, operator):
    apply([task("quick", "pass", **KWOK_PLACEMENT), taskrun("before", "quick")], namespace)
    wait_phase(namespace, "before", "Succeeded", timeout=120)
    # A pseudo-terminal: rich draws the live table, redrawn in place, as on a user's terminal.
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "kubetasks.cli.main", "runs", "--watch", "-n", namespace],
                            env={**cli_env(120), "LINES": "40"}, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the process ended
                return
            if not chunk:
                return
            seen.extend(chunk)

    def screen() -> str:
        return ANSI.sub("", seen.decode(errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until("the table with the earlier run", lambda: re.search(r"before\s+quick\s+Succeeded", screen()),
                   timeout=60)
        apply(taskrun("after", "quick"), namespace)
        wait_until("the new run's row", lambda: re.search(r"after\s+quick\s+\w+", screen()), timeout=60)
        wait_until("the new run's row updated", lambda: re.search(r"after\s+quick\s+Succeeded\s+1", screen()),
                   timeout=120)
        assert "NAME" in screen() and "Traceback" not in screen()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        reader.join(timeout=10)
        os.close(leader)


def test_runs_watch_piped_prints_a_line_per_change(namespace, operator):
    """Beside it, a watch of one phase shows the run only once it is in that phase."""
    apply(task("quick", "pass", **KWOK_PLACEMENT), namespace)
    watches = {"all": [], "succeeded": ["--phase", "Succeeded"]}
    procs = {name: subprocess.Popen([sys.executable, "-m", "kubetasks.cli.main", "runs", "-w", "-n", namespace, *flags],
                                    env=cli_env(120), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, flags in watches.items()}
    lines: dict[str, list[str]] = {name: [] for name in procs}

    def read(name: str) -> None:
        stdout = procs[name].stdout
        assert stdout is not None
        for line in stdout:
            lines[name].append(line)

    readers = [threading.Thread(target=read, args=(name,), daemon=True) for name in procs]
    for reader in readers:
        reader.start()
    try:
        for name in procs:
            wait_until(f"the header ({name})", lambda: any(line.split()[:2] == ["NAME", "TASK"] for line in lines[name]),
                       timeout=60)
        apply(taskrun("piped", "quick"), namespace)
        for name in procs:
            wait_until(f"the run's last change ({name})",
                       lambda: any(re.match(r"piped\s+quick\s+Succeeded", x) for x in lines[name]), timeout=120)
        # Earlier changes of the run came first, each on a line of its own; not in the phase's watch.
        assert any(re.match(r"piped\s+quick\s+(Pending|Running)", line) for line in lines["all"]), lines
        rows = {tuple(line.split()[:3]) for line in lines["succeeded"] if line.strip()} - {("NAME", "TASK", "PHASE")}
        assert rows == {("piped", "quick", "Succeeded")}, lines
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=30)
        for reader in readers:
            reader.join(timeout=10)
