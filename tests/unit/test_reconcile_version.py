"""Version locking through the reconciler, on the fake API: a deploy between attempts, and a
restart between the first Job and the status write that would have locked its version."""

from __future__ import annotations

import time

from tests.unit.test_reconcile_runs import NS, World, lose_the_next_status_write, task, taskrun

RETRY = {"maxAttempts": 3, "minDelay": "1s", "maxDelay": "1s"}


def image(w: World, job: str) -> str:
    return w.api.objects[("Job", NS, job)]["spec"]["template"]["spec"]["containers"][0]["image"]


def deploy(w: World, new_image: str) -> None:
    w.api.update("Task", NS, "t", spec={"image": new_image})
    w.api.deliver(w.op.cache)


def fail_and_retry(w: World, job: str) -> None:
    w.api.finish_job(NS, job, ok=False)
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Retrying"
    time.sleep(1.1)  # the retry policy's shortest delay
    w.settle("r")


def test_a_retry_after_a_deploy_runs_the_version_the_run_started_on():
    w = World(task(retry=RETRY), taskrun("r"))
    w.api.calls.clear()
    w.settle("r")
    assert [fn for fn, _ in w.api.calls if fn in ("create", "patch_status")].count("patch_status") == 1
    assert w.status("r")["taskVersion"]["spec"]["image"] == "img:1" and w.status("r")["taskVersion"]["version"] == "1"
    deploy(w, "img:2")
    fail_and_retry(w, "r-1")
    assert w.api.created() == ["r-1", "r-2"] and image(w, "r-2") == "img:1"
    w.api.add(taskrun("fresh"))
    w.api.deliver(w.op.cache)
    w.settle("fresh")
    assert image(w, "fresh-1") == "img:2" and w.status("fresh")["taskVersion"]["version"] == "2"


def test_a_restart_locks_the_version_its_first_job_ran_not_the_task_as_it_is_by_then():
    w = World(task(retry=RETRY), taskrun("r"))
    lose_the_next_status_write(w, "r")
    assert w.api.created() == ["r-1"] and "taskVersion" not in w.status("r")
    w.api.deliver(w.op.cache)
    w.restart()
    deploy(w, "img:2")
    w.settle("r")
    assert w.status("r")["taskVersion"]["spec"]["image"] == "img:1"
    fail_and_retry(w, "r-1")
    assert w.api.created() == ["r-1", "r-2"] and image(w, "r-2") == "img:1"


def test_a_waited_child_of_the_same_task_runs_its_parents_version_a_plain_one_the_latest():
    w = World(task(retry=RETRY, allowTrigger=["t"], entrypoint="app:main", command=None), taskrun("p"))
    w.settle("p")
    deploy(w, "img:2")
    w.api.add(taskrun("waited", parentRun="p", inheritVersion=True))
    w.api.add(taskrun("plain", parentRun="p"))
    w.api.deliver(w.op.cache)
    w.settle("waited", "plain")
    assert image(w, "waited-1") == "img:1" and w.status("waited")["taskVersion"]["inheritedFrom"] == "p"
    assert image(w, "plain-1") == "img:2"


def test_a_version_written_on_a_run_that_never_started_is_not_what_it_runs():
    # Someone with rights on taskruns/status (not the operator) names an image before the first attempt.
    w = World(task(), taskrun("r"))
    forged = {"version": "evil", "specHash": "0" * 16, "spec": {"image": "evil:1", "command": ["sh"]}}
    w.api.update("TaskRun", NS, "r", status={"taskVersion": forged})
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert image(w, "r-1") == "img:1" and w.status("r")["taskVersion"]["spec"]["image"] == "img:1"


def test_a_version_changed_after_the_operator_wrote_it_is_put_back():
    w = World(task(retry=RETRY), taskrun("r"))
    w.settle("r")
    locked = w.status("r")["taskVersion"]
    w.api.update("TaskRun", NS, "r", status={"taskVersion": {**locked, "spec": {"image": "evil:1"}}})
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["taskVersion"] == locked
    fail_and_retry(w, "r-1")
    assert image(w, "r-2") == "img:1"
