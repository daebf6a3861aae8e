"""core.trigger_limits: how deep a trigger chain may go and how many children one run may have."""

from hypothesis import given, strategies as st

from kubetasks.api import Task
from kubetasks.core.trigger_limits import (
    TOO_MANY_CHILD_RUNS, TRIGGER_DEPTH_EXCEEDED, Link, depth_of, older_siblings, refuse_runaway, root_of,
)


def task(name="t", **spec):
    return Task.model_validate({"metadata": {"name": name}, "spec": {"image": "reg/img:1", "entrypoint": "m:f", **spec}})


def chain(n, recorded=()):
    """r0 <- r1 <- ... <- r{n-1}: each names the one before as parentRun; ``recorded``: the
    indexes whose status.triggerDepth the operator wrote."""
    links = {f"r{i}": Link(f"r{i}", f"r{i - 1}" if i else None, i if i in recorded else None) for i in range(n)}
    return links, links.get


@given(n=st.integers(1, 40), recorded=st.sets(st.integers(0, 39)), bound=st.integers(1, 50))
def test_the_depth_is_the_number_of_ancestors_whether_recorded_or_walked_up_to_the_bound(n, recorded, bound):
    links, ancestor = chain(n, recorded)
    assert depth_of(links[f"r{n - 1}"], ancestor, bound) == min(n - 1, bound)


def test_a_recorded_depth_is_read_not_walked():
    looked = []
    links, get = chain(5, recorded={3})

    def ancestor(name):
        looked.append(name)
        return get(name)
    assert depth_of(links["r4"], ancestor, 10) == 4 and looked == ["r3"]


def test_an_ancestor_deleted_at_its_retention_counts_as_the_root():
    links, ancestor = chain(6)
    del links["r2"]
    assert depth_of(links["r5"], ancestor, 10) == 3


@given(st.integers(2, 12))
def test_a_cycle_of_parent_names_counts_as_too_deep(n):
    links = {f"c{i}": Link(f"c{i}", f"c{(i + 1) % n}", None) for i in range(n)}
    assert depth_of(links["c0"], links.get, 10) == 10
    assert root_of(links["c0"], links.get, 100) in links


def test_the_root_is_the_furthest_ancestor_that_exists():
    links, ancestor = chain(7)
    assert root_of(links["r6"], ancestor, 20) == "r0"
    del links["r1"]
    assert root_of(links["r6"], ancestor, 20) == "r2"
    assert root_of(links["r6"], ancestor, 2) == "r4"


@given(st.lists(st.tuples(st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"]),
                          st.text("abc", min_size=1, max_size=3)), unique=True, max_size=30))
def test_siblings_rank_by_creation_then_name_each_once(siblings):
    ranks = sorted(older_siblings(s, [o for o in siblings if o != s]) for s in siblings)
    assert ranks == list(range(len(siblings)))


def test_a_child_deeper_than_the_parents_task_allows_or_than_the_cap_is_refused():
    assert refuse_runaway(3, 0, "p", task(maxTriggerDepth=3), cap=10) is None
    refusal = refuse_runaway(4, 0, "p", task(maxTriggerDepth=3), cap=10)
    assert refusal.reason == TRIGGER_DEPTH_EXCEEDED and "past 3" in refusal.message and "maxTriggerDepth" in refusal.message
    refusal = refuse_runaway(6, 0, "p", task(maxTriggerDepth=30), cap=5)
    assert refusal.reason == TRIGGER_DEPTH_EXCEEDED and "past 5 (the operator's cap)" in refusal.message
    assert refuse_runaway(11, 0, "p", task(), cap=10).reason == TRIGGER_DEPTH_EXCEEDED  # default 10
    assert refuse_runaway(1, 0, "p", task(maxTriggerDepth=0), cap=10).reason == TRIGGER_DEPTH_EXCEEDED


def test_a_child_past_its_parents_budget_is_refused():
    assert refuse_runaway(1, 999, "p", task(), cap=10) is None  # default 1000
    refusal = refuse_runaway(1, 1000, "p", task(), cap=10)
    assert refusal.reason == TOO_MANY_CHILD_RUNS and "'p' already has 1000" in refusal.message
    assert refuse_runaway(1, 2, "p", task(maxChildRuns=2), cap=10).reason == TOO_MANY_CHILD_RUNS
