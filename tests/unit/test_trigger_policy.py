"""core.trigger_policy: a child run runs only when its parent's Task lists the child's Task."""

from kubetasks.api import Task, TaskRun
from kubetasks.core.trigger_policy import TRIGGER_NOT_ALLOWED, refuse_child_run


def task(name, **spec):
    return Task.model_validate({"metadata": {"name": name}, "spec": {"image": "reg/img:1", "entrypoint": "m:f", **spec}})


def run(name, task_ref, parent=None, payload=None):
    spec = {"taskRef": task_ref, "payload": payload}
    if parent:
        spec["parentRun"] = parent
    return TaskRun.model_validate({"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"}, "spec": spec})


def test_a_run_without_a_parent_is_not_this_policys_business():
    assert refuse_child_run(run("a", "deploy"), None, None) is None


def test_a_child_of_an_allowed_task_runs():
    parent = run("p", "orders")
    assert refuse_child_run(run("c", "email", parent="p"), parent, task("orders", allowTrigger=["email", "sms"])) is None


def test_a_child_of_a_task_not_in_allow_trigger_is_refused_with_a_reason_naming_both_tasks():
    parent = run("p", "orders")
    refusal = refuse_child_run(run("c", "deploy", parent="p", payload={"secret": "s3cr3t"}), parent,
                               task("orders", allowTrigger=["email"]))
    assert refusal is not None and refusal.reason == TRIGGER_NOT_ALLOWED
    assert "'orders'" in refusal.message and "'deploy'" in refusal.message and "[email]" in refusal.message
    assert "s3cr3t" not in refusal.message  # never the payload
    refusal = refuse_child_run(run("c", "deploy", parent="p"), parent, task("orders"))
    assert refusal is not None and "no allowTrigger" in refusal.message


def test_a_child_whose_parent_or_parent_task_is_missing_is_refused():
    refusal = refuse_child_run(run("c", "email", parent="ghost"), None, None)
    assert refusal is not None and "'ghost' does not exist" in refusal.message
    refusal = refuse_child_run(run("c", "email", parent="p"), run("p", "orders"), None)
    assert refusal is not None and "Task 'orders'" in refusal.message and "does not exist" in refusal.message


def test_a_long_allow_trigger_list_is_quoted_in_part():
    allowed = [f"t{i}" for i in range(100)]
    refusal = refuse_child_run(run("c", "deploy", parent="p"), run("p", "orders"), task("orders", allowTrigger=allowed))
    assert refusal is not None and "(100 in all)" in refusal.message and "t50" not in refusal.message
    assert len(refusal.message) < 400
