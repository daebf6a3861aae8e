"""Idempotency claims: a ConfigMap that holds a claim's name counts only when a run made it."""

import copy

from kubetasks.api.taskrun import TaskRun
from kubetasks.core.dedup import claim_holder, claim_name, holds_key, render_claim


def run(name="r", uid="u-1", task="t", key="order-42") -> TaskRun:
    return TaskRun.model_validate({"metadata": {"name": name, "namespace": "ns", "uid": uid},
                                   "spec": {"taskRef": task, "idempotencyKey": key}})


def test_a_claim_made_by_a_run_names_it():
    assert claim_holder(render_claim(run())) == ("r", "u-1")


def test_a_claim_whose_data_and_controller_disagree_holds_nothing():
    genuine = render_claim(run())
    no_owner = copy.deepcopy(genuine)
    del no_owner["metadata"]["ownerReferences"]
    other_owner = copy.deepcopy(genuine)
    other_owner["metadata"]["ownerReferences"][0]["uid"] = "u-2"
    not_controller = copy.deepcopy(genuine)
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    empty = {"metadata": {"name": genuine["metadata"]["name"]}}
    for forged in (no_owner, other_owner, not_controller, empty):
        assert claim_holder(forged) == ("", "")


def test_a_holder_holds_the_key_only_when_it_runs_the_same_task_with_it():
    mine = run()
    assert holds_key({"spec": {"taskRef": "t", "idempotencyKey": "order-42"}}, mine)
    assert not holds_key({"spec": {"taskRef": "other", "idempotencyKey": "order-42"}}, mine)
    assert not holds_key({"spec": {"taskRef": "t", "idempotencyKey": "order-43"}}, mine)
    assert not holds_key({"spec": {"taskRef": "t"}}, mine)


def test_a_forged_claim_does_not_make_a_run_a_duplicate():
    from tests.unit.test_reconcile_runs import NS, World, task, taskrun

    victim = taskrun("r", idempotencyKey="order-42")
    forged = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": claim_name("t", "order-42"), "namespace": NS},
              "data": {"run": "other", "uid": "u-other"}}
    other = taskrun("other", "t")  # a live run the forged claim names, of the same Task but no key
    other["metadata"]["uid"] = "u-other"
    w = World(task(), other, forged, victim)
    w.settle("r")
    assert w.status("r").get("phase") != "Duplicate" and w.api.created() == ["r-1"]
