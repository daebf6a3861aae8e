"""Operator instances: which objects an instance sees, and how the label travels from a Task or a
run to everything made for it."""

from datetime import datetime, timezone

from kubetasks import protocol
from kubetasks.api import Task, TaskRun
from kubetasks.cli.main import new_taskrun
from kubetasks.controller.cron import render_scheduled_run
from kubetasks.core.naming import LABEL_INSTANCE, instance_of, instance_selector
from kubetasks.core.render import render_job, render_payload, render_run_identity
from kubetasks.runtime.trigger import taskrun_manifest


def test_an_instance_selects_its_own_label_and_the_default_selects_the_unlabelled():
    assert instance_selector("tests-1") == "kubetasks.io/instance=tests-1"
    assert instance_selector(None) == instance_selector("") == "!kubetasks.io/instance"
    assert instance_of({"metadata": {"labels": {LABEL_INSTANCE: "a"}}}) == "a"
    assert instance_of({"metadata": {}}) is instance_of({}) is None


def objects(instance: str | None):
    labels = {LABEL_INSTANCE: instance} if instance else {}
    task = Task.model_validate({"metadata": {"name": "t", "namespace": "ns", "uid": "t-uid", "labels": labels},
                                "spec": {"image": "i:1", "entrypoint": "m:f"}})
    run = TaskRun.model_validate({"metadata": {"name": "r", "namespace": "ns", "uid": "r-uid", "labels": labels},
                                  "spec": {"taskRef": "t"}})
    return task, run


def test_a_runs_job_pods_and_identity_carry_its_instance_and_its_pods_know_it():
    task, run = objects("blue")
    job = render_job(run, task, 1)
    assert job["metadata"]["labels"][LABEL_INSTANCE] == "blue"
    assert job["spec"]["template"]["metadata"]["labels"][LABEL_INSTANCE] == "blue"
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[protocol.ENV_INSTANCE] == "blue"  # the runs it triggers go to the same operator
    assert all(o["metadata"]["labels"][LABEL_INSTANCE] == "blue"
               for o in [*render_run_identity(run, task), render_payload(run, task)] if o)


def test_the_default_instance_labels_nothing():
    task, run = objects(None)
    job = render_job(run, task, 1)
    assert LABEL_INSTANCE not in job["metadata"]["labels"]
    env = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert protocol.ENV_INSTANCE not in env


def test_scheduled_cli_and_sdk_runs_inherit_the_instance():
    task, _ = objects("blue")
    tick = datetime(2026, 11, 29, 9, 0, tzinfo=timezone.utc)
    assert render_scheduled_run(task, "t-1", tick)["metadata"]["labels"][LABEL_INSTANCE] == "blue"
    assert LABEL_INSTANCE not in render_scheduled_run(objects(None)[0], "t-1", tick)["metadata"]["labels"]
    body = task.model_dump(by_alias=True, exclude_none=True)
    assert new_taskrun(body, None)["metadata"]["labels"][LABEL_INSTANCE] == "blue"
    assert taskrun_manifest("t", 1, namespace="ns", instance="blue")["metadata"]["labels"][LABEL_INSTANCE] == "blue"
    assert LABEL_INSTANCE not in taskrun_manifest("t", 1, namespace="ns")["metadata"]["labels"]
