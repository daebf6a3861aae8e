"""The store's informer semantics: relist replaces, stale events never roll back, our own writes
neither regress nor resurrect, and a re-created name is a delete plus an add."""

from kubetasks.controller.store import Store


def obj(name, rv, uid="u", ns="ns", **extra):
    return {"metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": str(rv)}, **extra}


def recording():
    store, changes = Store("X"), []
    store.listeners.append(lambda old, new: changes.append((
        old and old["metadata"]["resourceVersion"], new and new["metadata"]["resourceVersion"])))
    return store, changes


def test_a_relist_deletes_what_vanished_with_its_last_known_state():
    store, changes = recording()
    store.replace([obj("a", 1, "ua"), obj("b", 2, "ub")])
    changes.clear()
    store.replace([obj("b", 2, "ub")])
    assert store.keys() == [("ns", "b")] and changes == [("1", None)]


def test_a_relist_of_one_namespace_leaves_the_others_alone():
    store, _ = recording()
    store.replace([obj("a", 1, "ua", ns="one"), obj("b", 2, "ub", ns="two")])
    store.replace([], namespace="one")
    assert store.keys() == [("two", "b")]


def test_an_event_older_than_the_stored_version_is_dropped():
    store, changes = recording()
    store.event("ADDED", obj("a", 5))
    store.event("MODIFIED", obj("a", 3, spec={"old": True}))
    assert store.get(("ns", "a"))["metadata"]["resourceVersion"] == "5" and len(changes) == 1


def test_our_write_is_read_back_and_its_late_event_changes_nothing():
    store, changes = recording()
    store.event("ADDED", obj("a", 5))
    store.written(obj("a", 7, status={"phase": "Running"}))
    store.event("MODIFIED", obj("a", 6, status={}))  # the watch, one write behind
    assert store.get(("ns", "a"))["status"] == {"phase": "Running"}


def test_a_write_never_resurrects_a_deleted_object():
    store, _ = recording()
    store.event("ADDED", obj("a", 5))
    store.event("DELETED", obj("a", 8))
    store.written(obj("a", 7))
    assert store.get(("ns", "a")) is None


def test_a_late_delete_of_an_old_object_spares_the_new_one_of_that_name():
    store, changes = recording()
    store.event("ADDED", obj("a", 5, uid="new"))
    store.event("DELETED", obj("a", 4, uid="old"))
    assert store.get(("ns", "a"))["metadata"]["uid"] == "new"


def test_a_name_taken_by_a_new_object_is_a_delete_then_an_add():
    store, changes = recording()
    store.event("ADDED", obj("a", 5, uid="one"))
    changes.clear()
    store.replace([obj("a", 9, uid="two")])
    assert changes == [("5", None), (None, "9")]


def test_indexes_follow_changes_and_deletes():
    store = Store("X", indexers={"task": lambda b: [b["spec"]["task"]]})
    store.event("ADDED", obj("a", 1, spec={"task": "t1"}))
    store.event("MODIFIED", obj("a", 2, spec={"task": "t2"}))
    assert store.by("task", "t1") == [] and [b["metadata"]["name"] for b in store.by("task", "t2")] == ["a"]
    store.event("DELETED", obj("a", 3, spec={"task": "t2"}))
    assert store.by("task", "t2") == []
