"""The store's informer semantics: relist replaces, stale events never roll back, our own writes
neither regress nor resurrect, and a re-created name is a delete plus an add."""

from kubetasks.informer.store import Store


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


def test_the_echo_of_our_write_wakes_no_one_again():
    store, changes = recording()
    store.event("ADDED", obj("a", 5))
    store.written(obj("a", 7, status={"phase": "Running"}))
    store.event("MODIFIED", obj("a", 7, status={"phase": "Running"}))  # the watch catching up
    assert len(changes) == 2  # the add and the write, not the echo
    store.event("MODIFIED", obj("a", 8, status={"phase": "Succeeded"}))
    assert len(changes) == 3


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


# Property: whatever the server does and however the watch delivers it (late, twice, or not at
# all until a relist), the store never holds a version older than one it has shown, and after a
# relist it holds exactly what the server holds.
from hypothesis import given, settings, strategies as st  # noqa: E402

OPS = st.lists(st.tuples(st.sampled_from(["put", "delete", "recreate"]), st.sampled_from("abc"),
                         st.sampled_from(["deliver", "drop", "twice", "late", "relist"])), max_size=40)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_the_store_converges_to_the_server_and_never_goes_back(ops):
    server: dict[str, dict] = {}
    store, late = Store("X"), []
    rv, uids = 0, 0
    shown: dict[tuple[str, str], int] = {}

    def check() -> None:
        for key in store.keys():
            body = store.get(key)
            assert int(body["metadata"]["resourceVersion"]) >= shown.get((key[1], body["metadata"]["uid"]), 0)
            shown[(key[1], body["metadata"]["uid"])] = int(body["metadata"]["resourceVersion"])

    for op, name, delivery in ops:
        rv += 1
        if op == "delete" and name not in server:
            continue
        if op == "recreate" or name not in server:
            server.pop(name, None)
            uids += 1
            server[name] = obj(name, rv, uid=f"u{uids}")
            type_ = "ADDED"
        elif op == "put":
            server[name] = obj(name, rv, uid=server[name]["metadata"]["uid"])
            type_ = "MODIFIED"
        else:
            type_, gone = "DELETED", server.pop(name)
            gone = obj(name, rv, uid=gone["metadata"]["uid"])
        event = (type_, server.get(name) or gone)
        if delivery == "deliver":
            store.event(*event)
        elif delivery == "twice":
            store.event(*event)
            store.event(*event)
        elif delivery == "late":
            late.append(event)
        elif delivery == "relist":
            store.replace(list(server.values()), resource_version=str(rv))
            for old in late:  # events from before the relist, arriving after it
                store.event(*old)
            late = []
        check()
    store.replace(list(server.values()))
    check()
    assert {k[1]: store.get(k)["metadata"]["resourceVersion"] for k in store.keys()} == {
        n: b["metadata"]["resourceVersion"] for n, b in server.items()}
