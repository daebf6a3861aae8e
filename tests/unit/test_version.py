"""Version locking (core.version): the snapshot a run takes as its first attempt starts, the Job
rendered from it, the version a restarted operator finds on a Job, and a child's inheritance."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from kubetasks.api.task import Task
from kubetasks.api.taskrun import TaskRun
from kubetasks.cli.describe import describe_lines
from kubetasks.core.naming import ANNOTATION_TASK_VERSION, LABEL_ATTEMPT
from kubetasks.core.plan import World, plan_run
from kubetasks.core.render import render_job
from kubetasks.core.version import (
    MAX_KEPT, image_version, inherited, job_annotations, kept, locked_task, snapshot, version_from_jobs,
)
from kubetasks.runtime.trigger import taskrun_manifest

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def task(image: str = "reg.io/app:a", generation: int = 1, **spec: Any) -> Task:
    return Task.model_validate({"metadata": {"name": "t", "namespace": "ns", "generation": generation},
                                "spec": {"image": image, "entrypoint": "app.tasks:main", **spec}})


def run(name: str = "r", task_ref: str = "t", status: dict[str, Any] | None = None, **spec: Any) -> TaskRun:
    return TaskRun.model_validate({"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
                                   "spec": {"taskRef": task_ref, **spec}, "status": status or {}})


def image_of(job: dict[str, Any]) -> str:
    return job["spec"]["template"]["spec"]["containers"][0]["image"]


@pytest.mark.parametrize("image, shown", [
    ("reg.io/app:1.4", "1.4"), ("reg.io:5000/team/app:dev-abc", "dev-abc"), ("localhost:5000/app", "latest"),
    ("app@sha256:" + "ab" * 32, "sha256:" + "ab" * 6), ("reg.io/app:1@sha256:" + "cd" * 32, "sha256:" + "cd" * 6),
])
def test_a_version_is_called_by_its_digest_or_its_tag(image, shown):
    assert image_version(image) == shown


def test_a_locked_task_renders_the_jobs_of_the_version_it_was_locked_to():
    a = snapshot(task(env=[{"name": "MODE", "value": "a"}], maxDuration="1m", retry={"maxAttempts": 4}))
    deployed = task("reg.io/app:b", generation=2, env=[{"name": "MODE", "value": "b"}], maxDuration="1h",
                    retry={"maxAttempts": 1}, machine={"preset": "large-1x"}, allowTrigger=["other"])
    locked = locked_task(deployed, a)
    job = render_job(run(), locked, 2, version=a)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert image_of(job) == "reg.io/app:a" and {"name": "MODE", "value": "a"} in container["env"]
    assert job["spec"]["activeDeadlineSeconds"] == 60 and container["resources"]["limits"]["cpu"] != "4"
    assert locked.spec.retry.max_attempts == 4
    assert locked.spec.allow_trigger == ["other"]  # what its pods may do is the Task's as it is now
    assert json.loads(job["metadata"]["annotations"][ANNOTATION_TASK_VERSION])["specHash"] == a.spec_hash
    assert locked_task(deployed, None) is deployed
    assert snapshot(deployed).spec_hash != a.spec_hash
    assert snapshot(locked).spec_hash == a.spec_hash  # the locked Task is that version, field for field


def test_the_first_attempt_locks_the_version_in_the_write_that_records_it():
    plan = plan_run(World(now=NOW, run=run(), task=task()))
    assert plan.start_attempt == 1
    version = plan.status.task_version
    assert version is not None and version.spec.image == "reg.io/app:a" and version.generation == 1
    assert version.version == "a" and plan.status.attempts[0].task_generation == 1


def test_a_retry_keeps_the_version_its_run_locked():
    first = plan_run(World(now=NOW, run=run(), task=task()))
    status = first.status.to_api() | {"phase": "Retrying", "attempt": 1, "nextRetryAt": "2025-12-31T00:00:00Z"}
    later = run(status=status)
    deployed = locked_task(task("reg.io/app:b", generation=2), later.status.task_version)
    plan = plan_run(World(now=NOW, run=later, task=deployed))
    assert plan.start_attempt == 2 and plan.status.task_version == first.status.task_version
    assert plan.status.attempts[-1].task_generation == 1  # the generation it runs, not the Task's now


def test_a_restart_finds_the_version_on_the_job_its_lost_status_write_named():
    a = snapshot(task())
    job = render_job(run(), task(), 1, version=a)
    job["metadata"]["labels"][LABEL_ATTEMPT] = "1"
    assert version_from_jobs([job], task("reg.io/app:b", generation=2)) == a
    assert version_from_jobs([], task()) is None
    assert version_from_jobs([{"metadata": {"annotations": {ANNOTATION_TASK_VERSION: "not json"}}}], task()) is None


def test_a_large_version_is_kept_on_the_job_as_its_hash_and_found_while_the_task_matches():
    big = task(env=[{"name": f"V{i}", "value": "x" * 100} for i in range(40)])
    text = job_annotations(snapshot(big))[ANNOTATION_TASK_VERSION]
    short = kept(text)
    assert len(text) > MAX_KEPT >= len(short) and "spec" not in json.loads(short)
    job = {"metadata": {"labels": {LABEL_ATTEMPT: "1"}, "annotations": {ANNOTATION_TASK_VERSION: short}}}
    assert version_from_jobs([job], big) == snapshot(big)
    assert version_from_jobs([job], task()) is None  # the Task changed since: not known


def test_a_child_of_the_same_task_inherits_its_parents_version_only_when_it_asks():
    a = snapshot(task())
    parent = run("p", status={"taskVersion": a.to_api(), "attempt": 1, "phase": "Waiting"})
    child = run("c", parentRun="p", inheritVersion=True)
    got = inherited(child, parent)
    assert got is not None and got.spec == a.spec and got.inherited_from == "p"
    assert inherited(run("c", parentRun="p"), parent) is None  # a plain trigger: the latest
    assert inherited(run("c", "other", parentRun="p", inheritVersion=True), parent) is None  # another Task
    assert inherited(child, run("p")) is None  # the parent has no version (yet)
    plan = plan_run(World(now=NOW, run=child, task=locked_task(task("reg.io/app:b"), got), version=got))
    assert plan.status.task_version == got and plan.status.task_version.spec.image == "reg.io/app:a"


def test_the_sdk_asks_for_its_parents_version_for_the_children_it_waits_for_only():
    plain = taskrun_manifest("t", None, namespace="ns", parent_run="p")
    waited = taskrun_manifest("t", None, namespace="ns", parent_run="p", inherit_version=True)
    assert "inheritVersion" not in plain["spec"] and waited["spec"]["inheritVersion"] is True
    assert "inheritVersion" not in taskrun_manifest("t", None, namespace="ns", inherit_version=True)["spec"]


def test_describe_shows_the_version():
    body = {"metadata": {"name": "r"}, "spec": {"taskRef": "t"},
            "status": {"taskVersion": snapshot(task()).to_api()}}
    line = dict(describe_lines(body))["Version"]
    assert line.startswith("a (reg.io/app:a, spec ") and "Task generation 1" in line


def test_trigger_and_wait_inside_a_run_asks_for_the_parents_version_trigger_does_not(monkeypatch):
    from kubetasks import protocol
    import importlib

    sdk = importlib.import_module("kubetasks.runtime.trigger")

    made: list[dict[str, Any]] = []
    monkeypatch.setattr(sdk, "_create", lambda body, key, rerun: made.append(body) or "child")
    monkeypatch.setattr(sdk.RunHandle, "wait", lambda self, timeout=None: "done")
    monkeypatch.setenv(protocol.ENV_RUN, "p")
    monkeypatch.setenv(protocol.ENV_NAMESPACE, "ns")
    assert sdk.trigger_and_wait("t", {"n": 1}) == "done"
    sdk.trigger("t", {"n": 2})
    assert [b["spec"].get("inheritVersion") for b in made] == [True, None]
    assert made[0]["spec"]["parentRun"] == "p"
