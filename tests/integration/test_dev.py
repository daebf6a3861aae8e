"""``kubetasks dev``: a TaskRun created while it runs is executed by it, on this machine, not by an
installed operator (no Job is ever made for it), with real retries, checkpoints and result in its
status; editing the module's file changes what the next run does, with no image and no restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import INSTANCE, KUBECONFIG, KUBECTL, REPO, get, kubectl, wait_until

pytestmark = pytest.mark.cluster

MODULE = '''
from kubetasks import task


@task(id="dev-greet", retry=3)
def greet(payload, ctx):
    shout = ctx.step.run("shout", lambda: payload["name"].upper())  # checkpointed in the run's ConfigMap
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails, so the retry policy runs")
    return {"greeting": "WORD " + shout, "attempt": ctx.attempt}
'''


def cli(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "kubetasks.cli.main", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO / "operator")})
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def finished(namespace: str, name: str) -> dict[str, Any] | None:
    status = get("taskrun", name, namespace).get("status") or {}
    return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled", "TimedOut") else None


def trigger(app: Path, namespace: str, name: str) -> tuple[str, dict[str, Any]]:
    """``kubetasks run`` (the run takes its Task's dev instance), and the run's status once finished."""
    out = cli("run", "dev-greet", "--payload", json.dumps({"name": name}), "-n", namespace, cwd=app)
    run = out.split()[0].removeprefix("taskrun/")
    return run, wait_until(f"{run} finished", lambda: finished(namespace, run), timeout=90)


def test_dev_runs_the_module_on_this_machine_and_an_edit_changes_the_next_run(operator, namespace, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "tasks.py").write_text(textwrap.dedent(MODULE).replace("WORD", "hello"))
    instance = f"dev-tests-{uuid.uuid4().hex[:6]}"
    assert instance != INSTANCE  # the session's operator runs its own instance only
    # Every Job made in the namespace while dev runs, seen as it is made (none is expected).
    jobs = subprocess.Popen([KUBECTL, "--kubeconfig", KUBECONFIG, "get", "jobs", "-n", namespace, "--watch", "-o", "name"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    log = (tmp_path / "dev.log").open("w+")
    dev = subprocess.Popen([sys.executable, "-m", "kubetasks.cli.main", "dev", "tasks.py", "--instance", instance,
                            "-n", namespace], cwd=app, stdout=log, stderr=subprocess.STDOUT,
                           env={**os.environ, "PYTHONPATH": str(REPO / "operator")})
    try:
        wait_until("the dev instance's Task", lambda: "dev-greet" in kubectl(
            "get", "tasks", "-n", namespace, "-l", f"kubetasks.io/instance={instance}", "-o", "name", check=False))
        task = get("task", "dev-greet", namespace)
        assert task["spec"]["entrypoint"] == "tasks:greet" and task["spec"]["image"] == "kubetasks-dev:dev"

        first, status = trigger(app, namespace, "ada")
        assert status["phase"] == "Succeeded", (status, dev_log(log))
        assert status["result"] == {"greeting": "hello ADA", "attempt": 2}
        assert [(a["attempt"], a["reason"]) for a in status["attempts"]] == [(1, "Error"), (2, "Succeeded")]
        assert "the first attempt fails" in status["attempts"][0]["message"]
        assert [s["name"] for s in status["steps"]] == ["shout"] and status["steps"][0]["attempt"] == 1
        assert status["taskVersion"]["version"] == "dev"
        body = get("taskrun", first, namespace)
        assert body["metadata"]["labels"]["kubetasks.io/instance"] == instance
        events = json.loads(kubectl("get", "events", "-n", namespace, "--field-selector",
                                    f"involvedObject.name={first}", "-o", "json"))["items"]
        assert sum(e["reason"] == "DevAttempt" for e in events) == 2

        # The edit: the next run imports the file as it is now (a fresh process per attempt).
        (app / "tasks.py").write_text(textwrap.dedent(MODULE).replace("WORD", "bonjour"))
        second, status = trigger(app, namespace, "grace")
        assert status["phase"] == "Succeeded", (status, dev_log(log))
        assert status["result"] == {"greeting": "bonjour GRACE", "attempt": 2}
        assert "reloaded: tasks.py changed" in dev_log(log)

        for run in (first, second):  # nothing of an operator's: no Job, now or ever
            uid = get("taskrun", run, namespace)["metadata"]["uid"]
            assert kubectl("get", "jobs", "-n", namespace, "-l", f"kubetasks.io/run-uid={uid}", "-o", "name") == ""
    finally:
        stop(dev)
        jobs.terminate()
    made, _ = jobs.communicate(timeout=15)
    assert made.strip() == "", f"Jobs were made for dev runs: {made}"
    assert dev.returncode == 0, dev_log(log)


def stop(dev: subprocess.Popen[Any]) -> None:
    """Ctrl-C, as a developer stops it; killed when it has not ended 15 s later."""
    dev.send_signal(signal.SIGINT)
    try:
        dev.wait(15)
    except subprocess.TimeoutExpired:
        dev.kill()


def dev_log(log: Any) -> str:
    log.flush()
    log.seek(0)
    return str(log.read())
