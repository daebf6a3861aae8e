"""Idempotency claims: a ConfigMap that holds a claim's name counts only when a run made it."""

import copy
from datetime import datetime, timedelta, timezone

from hypothesis import given, strategies as st

from kubetasks import kube
from kubetasks.api.taskrun import TaskRun
from kubetasks.core.dedup import (CLAIM_ORDER_WINDOW, CLAIM_PAYLOAD, claim_holder, claims_first, claim_name, claim_payload, duplicate_message, holds_key,
                                  payload_digest, render_claim)
from kubetasks.protocol import canonical

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=10)


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


# A Duplicate whose payload is not its holder's says so ---------------------------------------------

def keyed(name: str, payload: object, uid: str = "u-1") -> TaskRun:
    return TaskRun.model_validate({"metadata": {"name": name, "namespace": "ns", "uid": uid},
                                   "spec": {"taskRef": "t", "idempotencyKey": "order-42", "payload": payload}})


def test_a_claim_holds_its_runs_payload_digest_as_the_api_server_gives_the_payload_back():
    claim = render_claim(keyed("a", {"n": 1, "tags": ["x", "é"]}))
    assert claim_payload(claim) == payload_digest({"tags": ["x", "é"], "n": 1.0})  # key order, 1.0 == 1
    assert claim_payload(claim) != payload_digest({"n": 2, "tags": ["x", "é"]})
    assert payload_digest(None) != payload_digest({}) != payload_digest([])
    old = render_claim(keyed("a", 1))
    del old["data"][CLAIM_PAYLOAD]  # made before claims held a digest
    assert claim_payload(old) is None and claim_payload({"data": {CLAIM_PAYLOAD: 5}}) is None


def test_the_duplicate_message_names_a_payload_that_differs_and_only_then():
    holder = payload_digest({"n": 1})
    same = duplicate_message(keyed("b", {"n": 1}), "a", holder)
    assert same == "idempotency key 'order-42' is held by TaskRun 'a': this run does not run"
    differs = duplicate_message(keyed("b", {"n": 2}), "a", holder)
    mine = payload_digest({"n": 2})
    assert differs == (f"idempotency key 'order-42' is held by TaskRun 'a', whose payload differs from this run's "
                       f"(sha256 {holder[:12]}... there, {mine[:12]}... here): this run does not run, and the result "
                       "of 'a' is not this payload's")
    assert duplicate_message(keyed("b", {"n": 2}), "a", None) == same  # an older claim: nothing is said


def same_json(a: object, b: object) -> bool:
    """Equal as JSON values: Python's False == 0 and True == 1 are not."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@given(JSON, JSON)
def test_payloads_differ_by_digest_exactly_when_they_differ_as_json(a: object, b: object) -> None:
    assert (payload_digest(a) == payload_digest(b)) == same_json(canonical(a), canonical(b))
    reordered = dict(reversed(list(a.items()))) if isinstance(a, dict) else a
    assert payload_digest(reordered) == payload_digest(a)


def test_a_run_created_directly_with_a_taken_key_and_another_payload_says_so_in_status_and_event():
    from tests.unit.test_reconcile_runs import World, task, taskrun

    w = World(task(), taskrun("a", idempotencyKey="order-42", payload={"n": 1}))
    w.settle("a")
    w.api.add(taskrun("b", idempotencyKey="order-42", payload={"n": 2}))
    w.api.add(taskrun("c", idempotencyKey="order-42", payload={"n": 1.0}))
    w.api.deliver(w.op.cache)
    calls = len(w.api.calls)
    w.settle("b", "c")
    for name in ("b", "c"):
        assert w.status(name)["phase"] == "Duplicate" and w.status(name)["duplicateOf"] == "a"
    b, c = (next(x for x in w.status(n)["conditions"] if x["type"] == "Succeeded") for n in ("b", "c"))
    assert b["reason"] == "Deduplicated" and "whose payload differs from this run's (sha256 " in b["message"]
    assert "differs" not in c["message"]
    events = {name: message for name, _, reason, message in w.api.events if reason == "Deduplicated"}
    assert events["b"] == b["message"] and "differs" not in events["c"]
    # The holder's digest comes with its claim, which each duplicate reads anyway: nothing else is read.
    reads = [(fn, args) for fn, args in w.api.calls[calls:] if fn not in ("patch_status",)]
    assert reads == [("create", ("ConfigMap", render_claim(keyed("b", 0))["metadata"]["name"]))] * 2, reads


# -- a key is held for a while: until its holder fails, or its TTL passes -------------------------

def test_a_failed_or_timed_out_holder_releases_its_key_a_succeeded_or_cancelled_one_keeps_it():
    from datetime import datetime, timezone

    from kubetasks.core.dedup import key_released

    now = datetime(2026, 12, 5, tzinfo=timezone.utc)
    later = "2026-12-06T00:00:00Z"
    for phase, released in [("Failed", True), ("TimedOut", True), ("Succeeded", False), ("Cancelled", False),
                            ("Running", False), ("Queued", False)]:
        assert key_released({"status": {"phase": phase, "idempotencyKeyExpiresAt": later}}, now) is released, phase
    assert key_released({"status": {"phase": "Succeeded", "idempotencyKeyExpiresAt": "2026-12-05T00:00:00Z"}}, now)
    assert not key_released({"status": {}}, now)  # not claimed yet: it holds what it will claim


def test_a_keys_expiry_is_its_runs_creation_plus_its_own_ttl_or_its_tasks():
    from datetime import datetime, timezone

    from kubetasks.api.task import Task
    from kubetasks.core.dedup import key_expiry

    def of(**spec):
        return TaskRun.model_validate({"metadata": {"name": "r", "namespace": "ns", "creationTimestamp": "2026-12-01T00:00:00Z"},
                                       "spec": {"taskRef": "t", **spec}})

    t = Task.model_validate({"metadata": {"name": "t", "namespace": "ns"}, "spec": {"image": "i", "command": ["x"]}})
    assert key_expiry(of(idempotencyKey="k"), t) == datetime(2026, 12, 31, tzinfo=timezone.utc)  # 720h
    assert key_expiry(of(idempotencyKey="k", idempotencyKeyTTL="1h"), t) == datetime(2026, 12, 1, 1, tzinfo=timezone.utc)
    t.spec.idempotency_key_ttl = "2h"
    assert key_expiry(of(idempotencyKey="k"), t) == datetime(2026, 12, 1, 2, tzinfo=timezone.utc)
    assert key_expiry(of(), t) is None


def _held_then_ended(phase: str, ok: bool, **spec):
    from tests.unit.test_reconcile_runs import NS, World, task, taskrun

    w = World(task(retry={"maxAttempts": 1}), taskrun("old", idempotencyKey="k", **spec))
    w.settle("old")
    assert w.status("old").get("idempotencyKeyExpiresAt")  # shown, for triggers to read
    w.api.finish_job(NS, "old-1", ok=ok)
    w.api.deliver(w.op.cache)
    w.settle("old")
    assert w.status("old")["phase"] == phase
    w.api.add(taskrun("new", idempotencyKey="k"))
    w.api.deliver(w.op.cache)
    w.settle("new")
    return w


def test_a_run_of_a_key_whose_holder_failed_takes_the_key_over_and_runs():
    w = _held_then_ended("Failed", ok=False)
    assert w.status("new")["phase"] == "Running" and "new-1" in w.api.created()
    assert w.status("new").get("idempotencyKeyExpiresAt")
    new_uid = w.api.get(kube.TASKRUNS, "ns", "new")["metadata"]["uid"]
    assert claim_holder(w.api.get(kube.CONFIGMAPS, "ns", claim_name("t", "k"))) == ("new", new_uid)


def test_a_run_of_a_key_whose_holder_succeeded_is_a_duplicate_until_the_keys_ttl_passes():
    w = _held_then_ended("Succeeded", ok=True)
    assert w.status("new")["phase"] == "Duplicate" and w.status("new")["duplicateOf"] == "old"
    assert "new-1" not in w.api.created()


def test_a_run_of_a_key_past_its_ttl_runs_again():
    from tests.unit.test_reconcile_runs import NS, World, task, taskrun

    w = World(task(), taskrun("old", idempotencyKey="k"))
    w.settle("old")
    w.api.update("TaskRun", NS, "old", status={**w.status("old"), "idempotencyKeyExpiresAt": "2000-01-01T00:00:00Z"})
    w.api.deliver(w.op.cache)
    w.api.add(taskrun("new", idempotencyKey="k"))
    w.api.deliver(w.op.cache)
    w.settle("new")
    assert w.status("new")["phase"] == "Running"  # while the old one still runs: its key expired
    assert w.status("old")["phase"] == "Running"


CREATED = datetime(2026, 12, 6, 12, 0, 0, tzinfo=timezone.utc)
NOW = CREATED + timedelta(seconds=5)


def unclaimed(name: str, version: int, second: int = 0, **status: object) -> dict:
    return {"metadata": {"name": name, "uid": f"u-{name}", "resourceVersion": str(version),
                         "creationTimestamp": f"2026-12-06T12:00:{second:02d}Z"},
            "spec": {"taskRef": "t", "idempotencyKey": "k"}, "status": status}


def test_a_run_waits_for_the_run_of_its_key_created_before_it_in_the_same_second_or_earlier():
    a, b, c = unclaimed("zz", 10), unclaimed("aa", 11), unclaimed("mm", 5, second=1)
    assert claims_first(a, [a, b, c], set(), NOW) is None  # the first: by resourceVersion, never by name
    assert claims_first(b, [a, b, c], set(), NOW) == "zz"
    assert claims_first(c, [c, b, a], set(), NOW) == "zz"  # an earlier second first, whatever its version


def test_a_run_claims_at_once_when_the_key_is_held_or_the_earlier_run_decided_or_is_too_old():
    a, b = unclaimed("a", 10), unclaimed("b", 11)
    assert claims_first(b, [a, b], {"u-a"}, NOW) is None  # a claimed (this operator saw it)
    assert claims_first(b, [unclaimed("a", 12, idempotencyKeyExpiresAt="2026-12-07T12:00:00Z"), b], set(), NOW) is None
    assert claims_first(b, [unclaimed("a", 10, attempt=1), b], set(), NOW) is None  # it began: it claimed long ago
    cancelled = {**a, "spec": {**a["spec"], "cancel": True}}
    assert claims_first(b, [cancelled, b], set(), NOW) is None
    assert claims_first(b, [a, b], set(), CREATED + CLAIM_ORDER_WINDOW) is None  # stuck: it holds no one up
    assert claims_first(b, [a, b], set(), CREATED + CLAIM_ORDER_WINDOW - timedelta(seconds=1)) == "a"
