"""The run reconciler's trigger limits and the access a finished run leaves, on a fake API server."""

from __future__ import annotations

import asyncio
from typing import Any

from kubetasks import kube
from kubetasks.controller import metrics
from kubetasks.core.naming import LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGER
from tests.unit.test_reconcile_runs import NS, World, task, taskrun


def sdk_task(name: str, **spec: Any) -> dict[str, Any]:
    return task(name, command=None, entrypoint="app:main", **spec)


def chain(n: int, task_ref: str = "loop", **status: Any) -> list[dict[str, Any]]:
    """r0 (the root) <- r1 <- ... <- r{n-1}, each the child of the one before."""
    runs = [taskrun("r0", task_ref)] + [taskrun(f"r{i}", task_ref, parentRun=f"r{i - 1}") for i in range(1, n)]
    for run in runs[1:]:
        if status:
            run["status"] = dict(status)
    return runs


def reason(w: World, name: str) -> str:
    return next(c["reason"] for c in w.status(name)["conditions"] if c["type"] == "Succeeded")


def test_a_self_triggering_chain_stops_at_its_depth_with_an_event_on_its_root_and_no_job():
    w = World(sdk_task("loop", allowTrigger=["loop"], maxTriggerDepth=3), *chain(5))
    w.settle(*[f"r{i}" for i in range(5)])
    assert sorted(w.api.created()) == ["r0-1", "r1-1", "r2-1", "r3-1"]
    assert [w.status(f"r{i}").get("triggerDepth") for i in range(5)] == [None, 1, 2, 3, 4]
    assert w.status("r4")["phase"] == "Failed" and reason(w, "r4") == "TriggerDepthExceeded"
    assert "past 3 (maxTriggerDepth of Task 'loop')" in w.status("r4")["error"]["message"]
    warned = {(name, why) for name, type_, why, _ in w.api.events if type_ == "Warning"}
    assert {("r0", "TriggerDepthExceeded"), ("r4", "TriggerDepthExceeded")} <= warned


def test_the_depth_is_walked_when_no_ancestor_recorded_it_and_the_childs_own_claim_is_ignored():
    # Only the deepest is reconciled, and it claims to be a root's child: its ancestors say otherwise.
    w = World(sdk_task("loop", allowTrigger=["loop"], maxTriggerDepth=3), *chain(5)[:4],
              {**taskrun("r4", "loop", parentRun="r3"), "status": {"triggerDepth": 1}})
    w.reconcile("r4")
    assert reason(w, "r4") == "TriggerDepthExceeded" and w.status("r4")["triggerDepth"] == 4
    assert w.api.created() == []


def test_the_operators_cap_is_lower_than_the_tasks_limit():
    w = World(sdk_task("loop", allowTrigger=["loop"], maxTriggerDepth=50), *chain(4))
    w.op.runs.max_trigger_depth = 2
    w.settle("r1", "r2", "r3")
    assert reason(w, "r3") == "TriggerDepthExceeded" and "the operator's cap" in w.status("r3")["error"]["message"]
    assert sorted(w.api.created()) == ["r1-1", "r2-1"]


def test_children_past_their_parents_budget_fail_the_first_ones_run():
    kids = [{**taskrun(f"c{i}", "child", parentRun="p"),
             "metadata": {"name": f"c{i}", "namespace": NS, "creationTimestamp": f"2026-01-01T00:00:0{i}Z"}}
            for i in range(4)]
    w = World(sdk_task("parent", allowTrigger=["child"], maxChildRuns=2), task("child"), taskrun("p", "parent"), *kids)
    w.settle("c3", "c2", "c1", "c0")  # the latest first: its rank, not its turn, decides
    assert sorted(w.api.created()) == ["c0-1", "c1-1"]
    for name in ("c2", "c3"):
        assert reason(w, name) == "TooManyChildRuns", w.status(name)


def identity(w: World, run: str) -> list[tuple[str, str]]:
    return sorted((k[0], k[2]) for k, o in w.api.objects.items() if k[0] in ("ServiceAccount", "Role", "RoleBinding")
                  and o["metadata"].get("labels", {}).get("kubetasks.io/run") == run)


def test_a_finished_runs_identity_objects_are_deleted_at_once_its_checkpoints_kept():
    w = World(sdk_task("sdk"), taskrun("a", "sdk"))
    w.reconcile("a")
    assert [k for k, _ in identity(w, "a")] == ["Role", "RoleBinding", "ServiceAccount"]
    w.api.finish_job(NS, "a-1")
    w.settle("a")
    assert w.status("a")["phase"] == "Succeeded" and identity(w, "a") == []
    assert any(k[0] == "ConfigMap" and k[2].startswith("a-") for k in w.api.objects)  # checkpoints stay
    deletes = [c for c in w.api.calls if c[0] == "delete"]
    assert {d[1][0] for d in deletes} == {"serviceaccounts", "roles", "rolebindings"}


def test_an_identity_object_someone_else_owns_is_left():
    w = World(sdk_task("sdk"), taskrun("a", "sdk"))
    w.reconcile("a")
    sa = next(o for k, o in w.api.objects.items() if k[0] == "ServiceAccount")
    sa["metadata"]["ownerReferences"] = []  # adopted by nobody: no longer the run's
    w.api.finish_job(NS, "a-1")
    w.settle("a")
    assert [k for k, _ in identity(w, "a")] == ["ServiceAccount"]


def test_an_error_deleting_them_after_the_outcome_is_a_warning_and_a_retry_never_another_phase():
    w = World(sdk_task("sdk"), taskrun("a", "sdk"))
    w.reconcile("a")
    real = w.api.delete

    def forbidden(resource: kube.Resource, namespace: str, name: str, uid: str | None = None) -> None:
        raise kube.ApiException(status=403, reason="Forbidden")
    w.api.delete = forbidden  # type: ignore[method-assign]
    before = metrics.FINISHED_RUN_ERRORS.labels("sdk")._value.get()
    w.api.finish_job(NS, "a-1")
    w.api.deliver(w.op.cache)
    assert w.reconcile("a") == 300.0  # looked at again later
    assert w.status("a")["phase"] == "Succeeded"
    assert any(why == "CleanupFailed" for _, _, why, _ in w.api.events)
    assert metrics.FINISHED_RUN_ERRORS.labels("sdk")._value.get() == before + 1
    w.api.delete = real  # type: ignore[method-assign]
    w.reconcile("a")
    assert w.status("a")["phase"] == "Succeeded" and identity(w, "a") == []


def test_a_restart_deletes_the_access_a_finished_run_still_holds_with_one_list():
    # The process that finished the run died before its deletes went through (403 here): they
    # were kept in memory only. The next process finds the run's Role at start and deletes them.
    w = World(sdk_task("sdk"), taskrun("a", "sdk"), sdk_task("other"), taskrun("b", "other"))
    w.settle("a", "b")
    real = w.api.delete

    def forbidden(resource: kube.Resource, namespace: str, name: str, uid: str | None = None) -> None:
        raise kube.ApiException(status=403, reason="Forbidden")
    w.api.delete = forbidden  # type: ignore[method-assign]
    w.api.finish_job(NS, "a-1")
    w.settle("a")
    assert w.status("a")["phase"] == "Succeeded" and len(identity(w, "a")) == 3
    w.api.delete = real  # type: ignore[method-assign]
    w.restart()
    w.api.calls.clear()
    asyncio.run(w.op.runs.find_access_left([None], f"{LABEL_MANAGED_BY}={MANAGER},!{LABEL_INSTANCE}"))
    assert [c for c in w.api.calls if c[0] != "get"] == [("list_all", ("roles", f"{LABEL_MANAGED_BY}={MANAGER},!{LABEL_INSTANCE}"))]
    w.settle("a", "b")
    assert identity(w, "a") == [] and w.status("a")["phase"] == "Succeeded"
    assert len(identity(w, "b")) == 3  # b still runs: its access stays


def test_a_parents_access_to_its_children_goes_when_it_finishes():
    w = World(sdk_task("parent", allowTrigger=["child"]), task("child"), taskrun("p", "parent"),
              taskrun("c", "child", parentRun="p"))
    w.settle("p", "c")
    assert [k for k, _ in identity(w, "c")] == ["Role", "RoleBinding"]  # p's pods may read c
    w.api.finish_job(NS, "c-1")
    w.settle("c")
    assert [k for k, _ in identity(w, "c")] == ["Role", "RoleBinding"]  # p may still wait for it
    w.api.finish_job(NS, "p-1")
    w.settle("p")
    assert identity(w, "c") == [] and identity(w, "p") == []
