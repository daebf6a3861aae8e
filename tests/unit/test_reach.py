"""The operator's reach: the namespaces it refuses (core.reach) and a run there, which fails at once
with the reason and an Event and makes nothing; the payload's ConfigMap, made immutable at every
attempt and never written again."""

from __future__ import annotations

from kubetasks.core.reach import NAMESPACE_NOT_ALLOWED, refuse_namespace, refused_namespaces
from tests.unit.test_reconcile_runs import NS, World, task, taskrun


def test_the_listed_namespaces_are_refused_and_no_other():
    refused = refused_namespaces(" kube-system, kubetasks-system ,,")
    assert refused == {"kube-system", "kubetasks-system"}
    assert refused_namespaces("") == refused_namespaces(None) == frozenset()
    refusal = refuse_namespace("kube-system", refused)
    assert refusal is not None and refusal.reason == NAMESPACE_NOT_ALLOWED
    assert "'kube-system'" in refusal.message and "allowSystemNamespaces" in refusal.message
    assert refuse_namespace("team-a", refused) is None
    assert refuse_namespace("kube-system", frozenset()) is None


def test_a_run_in_a_refused_namespace_fails_at_once_and_makes_nothing():
    w = World(task(), taskrun("r", payload={"x": 1}))
    w.op.runs.refused_namespaces = frozenset({NS})
    w.reconcile("r")
    status = w.status("r")
    assert status["phase"] == "Failed" and status["error"]["type"] == NAMESPACE_NOT_ALLOWED
    assert not [fn for fn, _ in w.api.calls if fn == "create_or_get"]  # no Job, no ConfigMap, no identity
    assert [(e[1], e[2]) for e in w.api.events] == [("Warning", NAMESPACE_NOT_ALLOWED)]


def test_the_payload_configmap_is_immutable_and_only_ever_created():
    w = World(task(retry={"maxAttempts": 2, "minDelay": "0s", "maxDelay": "0s"}), taskrun("r", payload={"x": 1}))
    w.reconcile("r")
    payload = next(o for (kind, _, name), o in w.api.objects.items() if kind == "ConfigMap" and name.endswith("-payload"))
    assert payload["immutable"] is True and payload["data"] == {"payload.json": '{"x":1}'}
    # Deleted meanwhile (a run started before payloads had their own ConfigMap has none): the next
    # attempt makes it again; nothing ever updates or patches it.
    w.api.remove(("ConfigMap", NS, payload["metadata"]["name"]))
    w.api.finish_job(NS, "r-1", ok=False)
    w.api.deliver(w.op.cache)
    w.settle("r", rounds=6)
    assert "r-2" in w.api.created()
    assert ("ConfigMap", NS, payload["metadata"]["name"]) in w.api.objects
    writes = [args for fn, args in w.api.calls if fn in ("patch_spec", "update", "replace", "merge_patch")]
    assert not [a for a in writes if "payload" in str(a)]
