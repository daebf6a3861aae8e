"""kubetasks dev: its dev instance, the environment and observation of an attempt run as a process,
and a run decided by core.plan through the runner's loop against a fake API (no cluster)."""

from __future__ import annotations

import copy
import hashlib
import io
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from rich.console import Console

from kubetasks import kube, protocol
from kubetasks.api.storage import BlobRef
from kubetasks.api.task import Task
from kubetasks.api.taskrun import TaskRun
from kubetasks.cli import dev as cli_dev
from kubetasks.cli import main as cli
from kubetasks.core.children import JOB_LOST
from kubetasks.core.dev import (DEV_IMAGE, NOT_IN_DEV, attempt_env, dev_instance, instance_problem, lost_attempts,
                                observe_process, taken_tasks, with_result_ref)
from kubetasks.core.naming import LABEL_INSTANCE, checkpoint_name
from kubetasks.core.render import render_job
from kubetasks.core.result_refs import REFUSED, UNREADABLE, Judged, Place, configmap_uri, judge_ref
from kubetasks.protocol import Report, result_key

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
T1 = T0 + timedelta(seconds=3)
INSTANCE = "dev-jane"


def test_the_dev_instance_is_the_user_name_as_a_label_value():
    assert dev_instance("jane") == "dev-jane"
    assert dev_instance("Jane Doe@corp") == "dev-jane-doe-corp"
    assert dev_instance("---") == "dev-user"
    long = dev_instance("x" * 100)
    assert len(long) <= 63 and instance_problem(long, None) is None


def test_an_instance_an_operator_runs_or_that_is_no_label_value_is_refused():
    assert instance_problem("dev-jane", "tests-1") is None
    assert "an operator's" in (instance_problem("tests-1", "tests-1") or "")
    assert "not a label value" in (instance_problem("", None) or "")
    assert "not a label value" in (instance_problem("dev jane", None) or "")
    assert "not a label value" in (instance_problem("-dev", None) or "")


def task_body(name: str = "greet", instance: str | None = INSTANCE, **spec: Any) -> dict[str, Any]:
    labels = {LABEL_INSTANCE: instance} if instance else {}
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task",
            "metadata": {"name": name, "namespace": "ns", "uid": "task-uid", "generation": 1, "labels": labels},
            "spec": {"image": DEV_IMAGE, "entrypoint": "tasks:greet", **spec}}


def test_tasks_another_instance_runs_are_taken_not_applied_over():
    live = {"a": None, "b": task_body("b"), "c": task_body("c", None), "d": task_body("d", "team-b")}
    assert taken_tasks(live, INSTANCE) == ["task/c (instance default)", "task/d (instance team-b)"]


def run_body(name: str = "greet-1", uid: str = "run-uid", payload: Any = None, status: Any = None) -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "1", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {LABEL_INSTANCE: INSTANCE}},
            "spec": {"taskRef": "greet", **({"payload": payload} if payload is not None else {})},
            "status": status or {}}


def test_an_attempt_gets_the_environment_of_its_pod_but_what_only_a_pod_can_have():
    task = Task.model_validate(task_body(env=[{"name": "GREETING", "value": "hi"},
                                              {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]))
    job = render_job(TaskRun.model_validate(run_body()), task, 2, retries_left=1)
    env, missing = attempt_env(job)
    assert env[protocol.ENV_RUN] == "greet-1" and env[protocol.ENV_RUN_UID] == "run-uid"
    assert env[protocol.ENV_ATTEMPT] == "2" and env[protocol.ENV_RETRIES_LEFT] == "1"
    assert env[protocol.ENV_ENTRYPOINT] == "tasks:greet" and env[protocol.ENV_NAMESPACE] == "ns"
    assert env[protocol.ENV_INSTANCE] == INSTANCE  # the runs it triggers are the dev instance's too
    assert env[protocol.ENV_CHECKPOINTS] == checkpoint_name("greet-1", "run-uid")
    assert env["GREETING"] == "hi" and "TOKEN" not in env
    assert missing == ["TOKEN"]


def report(**fields: Any) -> str:
    return Report(**fields).encode()


def test_a_process_end_is_observed_as_a_pod_end_would_be():
    ok = observe_process(1, "j-1", T0, T1, 0, report(outcome="succeeded", result={"n": 1}))
    assert (ok.state, ok.reason, ok.exit_code, ok.report.result) == ("succeeded", "Completed", 0, {"n": 1})
    assert (ok.start_time, ok.completion_time, ok.job_name) == (T0, T1, "j-1")
    failed = observe_process(1, "j-1", T0, T1, 1, report(outcome="failed", error_type="ValueError", error_message="no"))
    assert (failed.state, failed.reason, failed.exit_code, failed.report.error_message) == ("failed", "Error", 1, "no")
    assert observe_process(1, "j", T0, T1, 78, None).state == "failed"
    forged = observe_process(1, "j", T0, T1, 0, report(outcome="failed", error_message="x"))
    assert (forged.state, forged.reason) == ("failed", protocol.INVALID_REPORT)
    sleeping = observe_process(1, "j", T0, T1, 0, report(outcome="sleeping", wake_at=T1))
    assert (sleeping.state, sleeping.report.wake_at) == ("sleeping", T1)
    killed = observe_process(1, "j", T0, T1, -9, None)
    assert (killed.state, killed.exit_code) == ("failed", 137)
    assert observe_process(1, "j", T0, T1, -15, None, timed_out=True).state == "timed_out"
    assert observe_process(1, "j", T0, T1, 0, None).state == "succeeded"  # no report: no result


def test_a_durable_wait_fails_for_good_saying_dev_mode_cannot_resume_it():
    obs = observe_process(1, "j", T0, T1, 0, report(outcome="waiting"))
    assert (obs.state, obs.reason, obs.exit_code) == ("failed", NOT_IN_DEV, protocol.EXIT_PERMANENT)
    assert "not supported by kubetasks dev" in (obs.report.error_message or "")


def kept_ref(data: bytes) -> dict[str, Any]:
    return {"uri": configmap_uri(checkpoint_name("greet-1", "run-uid"), result_key(1)), "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def test_a_result_kept_in_the_configmap_is_believed_only_when_its_bytes_match():
    data = b'"' + b"x" * 5000 + b'"'
    obs = observe_process(1, "j", T0, T1, 0, report(outcome="succeeded", result_ref=kept_ref(data)))
    judged = judge_ref(obs.report.result_ref, "ns", "greet-1", "run-uid", 1, None)
    assert with_result_ref(obs, judged, data).result_ref == BlobRef.model_validate(kept_ref(data))
    changed = with_result_ref(obs, judged, b'"y"')
    assert (changed.state, changed.reason) == ("failed", UNREADABLE)
    refused = with_result_ref(obs, Judged(refusal="not its own place"), None)
    assert (refused.state, refused.reason, refused.report.error_message) == ("failed", REFUSED, "not its own place")
    assert isinstance(judged.place, Place)


def test_an_attempt_a_stopped_dev_process_left_running_is_lost():
    status = {"phase": "Running", "attempt": 2,
              "attempts": [{"attempt": 2, "jobName": "greet-1-2", "startTime": "2026-01-01T00:00:00Z"}]}
    run = TaskRun.model_validate(run_body(status=status))
    [(n, obs)] = lost_attempts(run, {}).items()
    assert (n, obs.state, obs.reason, obs.job_name) == (2, "failed", JOB_LOST, "greet-1-2")
    assert lost_attempts(run, {2: obs}) == {}
    assert lost_attempts(TaskRun.model_validate(run_body()), {}) == {}


class FakeApi:
    """A TaskRun, its Task and its checkpoints, with resourceVersion preconditions as the API server has."""

    def __init__(self, task: dict[str, Any], run: dict[str, Any]) -> None:
        self.task, self.run = task, run
        self.events: list[tuple[str, str]] = []
        self.created: list[str] = []

    def get(self, resource: Any, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.task if resource is kube.TASKS else self.run
        return copy.deepcopy(found) if found["metadata"]["name"] == name else None

    def get_configmap_data(self, namespace: str, name: str) -> dict[str, str] | None:
        return {} if name in self.created else None

    def create_or_get(self, obj: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        self.created.append(obj["metadata"]["name"])
        return True, obj

    def patch_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any], uid: str | None = None,
                     resource_version: str | None = None, old: dict[str, Any] | None = None) -> dict[str, Any]:
        meta = self.run["metadata"]
        assert uid == meta["uid"] and old is not None
        if resource_version != meta["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        status = {k: v for k, v in {**self.run["status"], **patch}.items() if v is not None}
        self.run = {**self.run, "status": status,
                    "metadata": {**meta, "resourceVersion": str(int(meta["resourceVersion"]) + 1)}}
        return copy.deepcopy(self.run)

    def post_event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((reason, message))


def fake(monkeypatch: pytest.MonkeyPatch, api: FakeApi) -> None:
    for fn in ("get", "get_configmap_data", "create_or_get", "patch_status", "post_event"):
        monkeypatch.setattr(kube, fn, getattr(api, fn))


def runner() -> cli_dev.DevRunner:
    quiet = Console(file=io.StringIO())
    r = cli_dev.DevRunner("ns", INSTANCE, Path("."), [], quiet, quiet)
    r._changed["run-uid"] = threading.Event()
    return r


def test_a_run_fails_then_succeeds_as_the_operator_would_decide_it(monkeypatch):
    api = FakeApi(task_body(retry={"maxAttempts": 3, "minDelay": "0s"}), run_body(payload={"name": "x"}))
    fake(monkeypatch, api)
    dev = runner()
    ends = {1: observe_process(1, "greet-1-1", T0, T1, 1, report(outcome="failed", error_type="E", error_message="boom")),
            2: observe_process(2, "greet-1-2", T0, T1, 0, report(outcome="succeeded", result="hello x"))}
    started: list[tuple[int, int, str]] = []

    def attempt(run: TaskRun, task: Task, n: int, left: int, body: dict[str, Any]) -> Any:
        started.append((n, left, body["status"]["phase"]))  # the status says Running before the process starts
        return ends[n]

    monkeypatch.setattr(dev, "_attempt", attempt)
    seen: dict[int, Any] = {}
    waits = []
    for _ in range(10):
        wait = dev._step("greet-1", "run-uid", seen)
        if wait is None:
            break
        waits.append(wait)
    status = api.run["status"]
    assert status["phase"] == "Succeeded" and status["result"] == "hello x"
    assert started == [(1, 2, "Running"), (2, 1, "Running")]
    assert [(a["attempt"], a["reason"]) for a in status["attempts"]] == [(1, "Error"), (2, "Succeeded")]
    assert status["taskVersion"]["version"] == "dev"  # what `kubectl get taskruns` shows for a dev run
    assert api.created == [checkpoint_name("greet-1", "run-uid")] * 2
    assert [r for r, _ in api.events] == ["AttemptFailed", "Succeeded"]
    assert dev._step("greet-1", "run-uid", seen) is None  # finished: nothing more


def test_a_durable_sleep_waits_until_its_wake_time(monkeypatch):
    api = FakeApi(task_body(), run_body())
    fake(monkeypatch, api)
    dev = runner()
    wake = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=30)
    monkeypatch.setattr(dev, "_attempt", lambda run, task, n, left, body: observe_process(
        n, "j", T0, T1, 0, report(outcome="sleeping", wake_at=wake)))
    seen: dict[int, Any] = {}
    assert dev._step("greet-1", "run-uid", seen) == 0.0  # attempt 1 ran and slept
    wait = dev._step("greet-1", "run-uid", seen)
    assert api.run["status"]["phase"] == "Sleeping" and 20 < (wait or 0) <= 30


def test_dev_refuses_a_context_an_operator_instance_and_a_task_it_would_take(tmp_path, capsys, monkeypatch):
    path = tmp_path / "dev_unit_tasks.py"
    path.write_text("from kubetasks import task\n@task\ndef dev_unit_greet(): return 1\n")
    monkeypatch.setattr(kube, "use_context", lambda context: None)
    assert cli.main(["dev", str(path), "--context", "other"]) == 1
    assert "takes no --context" in capsys.readouterr().err
    monkeypatch.setenv("KUBETASKS_INSTANCE_ID", "tests-1")
    assert cli.main(["dev", str(path), "--instance", "tests-1", "-n", "ns"]) == 1
    assert "an operator's" in capsys.readouterr().err
    applied: list[str] = []
    monkeypatch.setattr(kube, "get", lambda resource, ns, name: task_body(name, None))
    monkeypatch.setattr(kube, "apply", lambda *a, **k: applied.append("x"))
    assert cli.main(["dev", str(path), "--instance", "dev-jane", "-n", "ns"]) == 1
    assert capsys.readouterr().err.strip() == ("error: another instance runs task/dev-unit-greet (instance default): "
                                               "kubetasks dev would take it over; use a namespace of your own (-n)")
    assert applied == []


def test_an_attempt_is_stopped_when_its_run_is_cancelled_or_its_max_duration_passes(monkeypatch):
    cancelled = run_body()
    cancelled["spec"]["cancel"] = True
    monkeypatch.setattr(kube, "get", lambda resource, ns, name: cancelled)
    dev = runner()
    run = TaskRun.model_validate(run_body())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dev._changed["run-uid"].set()  # the watch saw the run change
    started = time.monotonic()
    assert dev._wait(sleeper, run, None, 5) is False
    assert sleeper.returncode is not None and time.monotonic() - started < 10
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert dev._wait(sleeper, run, 0.2, 5) is True  # maxDuration: timed out
    assert sleeper.returncode is not None


def test_an_api_error_while_an_attempt_runs_leaves_it_running(monkeypatch):
    def away(resource: Any, ns: str, name: str) -> Any:
        raise ApiException(status=503, reason="Service Unavailable")

    monkeypatch.setattr(kube, "get", away)
    dev = runner()
    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    dev._changed["run-uid"].set()
    assert dev._wait(quick, TaskRun.model_validate(run_body()), None, 5) is False
    assert quick.returncode == 0  # it ended on its own, not stopped
