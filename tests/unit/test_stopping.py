"""A task pod told to stop (runtime.stopping, runtime.entry): SIGTERM interrupts the task, its
``finally`` blocks run, on_cancel runs when the run was cancelled, and a decided outcome stands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from kubetasks import protocol
from kubetasks.protocol import Report
from kubetasks.runtime import Context, MemoryStore, Stopped
from kubetasks.runtime.checkpoints import Checkpoints
from kubetasks.runtime.entry import Invocation, run_attempt
from kubetasks.runtime.lifecycle import Hooks
from kubetasks.runtime.stopping import run_cancelled

REPO = Path(__file__).resolve().parents[2]


def stopped(payload, ctx):
    raise Stopped("the pod was told to stop (SIGTERM) before the task ended")  # as the handler does


def attempt(body, hooks, cancelled):
    ctx = Context.local({"n": 1})
    return run_attempt(body, ctx.payload, ctx, hooks, Invocation(entrypoint=None, payload=None, retries_left=0),
                       Checkpoints(MemoryStore()), cancelled=lambda: cancelled)


def every_hook(calls: list[str]) -> Hooks:
    def hook(name):
        return lambda *args: calls.append(name)

    def middleware(payload, ctx, next):
        calls.append("mw")
        try:
            return next()
        finally:
            calls.append("mw:finally")

    return Hooks.of(middleware=middleware, catch_error=hook("catch"), on_success=hook("success"),
                    on_failure=hook("failure"), on_complete=hook("complete"), on_cancel=[hook("cancel"), hook("cancel2")])


def test_a_cancelled_run_stopped_mid_task_runs_on_cancel_and_no_ending_hook():
    calls: list[str] = []
    ended = attempt(stopped, every_hook(calls), cancelled=True)
    assert calls == ["mw", "mw:finally", "cancel", "cancel2"]  # no catch_error, on_failure, on_complete
    assert ended.report.outcome == "failed" and ended.report.error_type == "Stopped"
    assert ended.code == protocol.EXIT_RETRYABLE and ended.report.traceback is None


def test_a_pod_stopped_for_another_reason_runs_no_on_cancel():
    calls: list[str] = []
    ended = attempt(stopped, every_hook(calls), cancelled=False)  # maxDuration, an eviction
    assert calls == ["mw", "mw:finally"]
    assert ended.report.error_type == "Stopped"


def test_an_on_cancel_that_raises_is_logged_and_the_next_one_runs(caplog):
    calls: list[str] = []
    hooks = every_hook(calls)
    hooks.on_cancel.insert(0, lambda payload, ctx: 1 / 0)
    attempt(stopped, hooks, cancelled=True)
    assert calls[-2:] == ["cancel", "cancel2"]
    assert "on_cancel hook" in caplog.text and "ZeroDivisionError" in caplog.text


def test_a_sigterm_after_the_task_returned_leaves_its_success():
    calls: list[str] = []
    hooks = every_hook(calls)
    hooks.on_success.insert(0, lambda payload, output, ctx: stopped(payload, ctx))
    ended = attempt(lambda payload, ctx: {"ok": True}, hooks, cancelled=True)
    assert ended.report.outcome == "succeeded" and ended.report.result == {"ok": True}
    assert "cancel" not in calls


def reader(run=None, status=None):
    def read(namespace, name):
        if status:
            raise ApiException(status=status, reason="said so")
        return run
    return read


@pytest.mark.parametrize("read, uid, cancelled", [
    (reader({"metadata": {"uid": "u"}, "spec": {"cancel": True}}), "u", True),
    (reader({"metadata": {"uid": "u"}, "spec": {}}), "u", False),
    (reader({"metadata": {"uid": "u"}, "spec": {}}), None, False),  # no uid to compare (a local run)
    (reader({"metadata": {"uid": "another"}, "spec": {}}), "u", True),  # deleted, and made again under its name
    (reader({"metadata": {"uid": "u", "deletionTimestamp": "2026-12-06T00:00:00Z"}}), "u", True),
    (reader(status=404), "u", True),  # deleted
    (reader(status=403), "u", True),  # deleted with the Role that let the pod read it
    (reader(status=500), "u", False),  # cannot tell: no on_cancel on a guess
])
def test_whether_the_run_was_cancelled(read, uid, cancelled):
    assert run_cancelled(read, "ns", "r", uid) is cancelled


TASK = '''
import asyncio, sys, time
from pathlib import Path
from kubetasks.runtime import on_cancel

@on_cancel
def cancelled(payload, ctx):
    print("on_cancel ran", file=sys.stderr)

def run(payload, ctx):
    try:
        Path(payload["ready"]).write_text("ready")
        time.sleep(60)
    except Exception:
        print("swallowed by except Exception", file=sys.stderr)
        return "swallowed"
    finally:
        print("finally ran", file=sys.stderr)

async def run_async(payload, ctx):
    try:
        Path(payload["ready"]).write_text("ready")
        await asyncio.sleep(60)
    finally:
        print("finally ran", file=sys.stderr)
'''


# The same tasks inside an async middleware (runtime.bridge: it runs on the attempt's event loop,
# in a thread of its own, and hands the task back to the main thread, where SIGTERM lands).
TASK_IN_ASYNC_MIDDLEWARE = TASK + '''
from kubetasks.runtime import middleware

@middleware
async def closing(payload, ctx, next):
    try:
        return await next()
    finally:
        print("middleware finally ran", file=sys.stderr)
'''


@pytest.mark.parametrize("source", [TASK, TASK_IN_ASYNC_MIDDLEWARE], ids=["plain", "in-async-middleware"])
@pytest.mark.parametrize("function", ["run", "run_async"])
def test_a_sigterm_stops_the_task_at_once_and_its_report_says_so(tmp_path, function, source):
    (tmp_path / "sleepy.py").write_text(source)
    ready, log = tmp_path / "ready", tmp_path / "termination-log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(tmp_path)]),
           protocol.ENV_ENTRYPOINT: f"sleepy:{function}", protocol.ENV_PAYLOAD: f'{{"ready": "{ready}"}}',
           "KUBETASKS_TERMINATION_LOG": str(log), "KUBECONFIG": str(tmp_path / "none")}  # no API server to ask
    for name in (protocol.ENV_CHECKPOINTS, "KUBERNETES_SERVICE_HOST"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "kubetasks.runtime"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)  # not the sleep's 60 s
    assert proc.returncode == protocol.EXIT_RETRYABLE, err
    assert "finally ran" in err and "swallowed" not in err, err
    assert ("middleware finally ran" in err) == (source is TASK_IN_ASYNC_MIDDLEWARE), err
    assert "on_cancel ran" not in err and "could not read TaskRun" in err, err  # cannot tell: no hook
    report = Report.decode(log.read_text())
    assert report.outcome == "failed" and report.error_type == "Stopped", report
