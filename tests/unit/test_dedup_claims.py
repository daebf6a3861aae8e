"""Idempotency claims: a ConfigMap that holds a claim's name counts only when a run made it."""

import copy

from hypothesis import given, strategies as st

from kubetasks.api.taskrun import TaskRun
from kubetasks.core.dedup import (CLAIM_PAYLOAD, claim_holder, claim_name, claim_payload, duplicate_message, holds_key,
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
