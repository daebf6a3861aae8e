"""Run metadata (ctx.metadata): the pure rules (core.metadata), the SDK's document and its
coalesced writes (runtime.metadata), and the operator copying and folding it into TaskRun status
(controller.metadata) on a fake API server."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, strategies as st

from kubetasks.api.crd import render_crds
from kubetasks.cli import main as cli
from kubetasks.cli.describe import render_describe
from kubetasks.cli.tables import apply_event, relisted, run_filter, run_rows
from kubetasks.controller.runs import sooner
from kubetasks.dashboard.views import RunDetails, run_page
from kubetasks.core.metadata import (
    METADATA_LIMIT, MetadataDoc, MetadataError, ancestor_parts, contribute, fold, merge_patch, parse_doc, size_of,
    storable,
)
from kubetasks.core.naming import checkpoint_name
from kubetasks.protocol import METADATA_KEY, METADATA_LABEL, TOTAL_LIMIT, metadata_digest
from kubetasks.runtime.checkpoints import Checkpoints, MemoryStore
from kubetasks.runtime.context import Context
from kubetasks.runtime.entry import Invocation, run_task
from kubetasks.runtime.errors import InvalidMetadata, MetadataTooLarge
from kubetasks.runtime.metadata import Metadata, RunMetadata
from tests.unit.test_reconcile_runs import NS, World, task, taskrun

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


# -- core ----------------------------------------------------------------------------------------

def test_contributions_combine_per_key():
    c = contribute(None, "inc", 2, "done")
    assert contribute(c, "inc", 3, "done") == {"inc": 5}
    assert contribute(contribute(None, "set", 5, "k"), "inc", 2, "k") == {"set": 7}  # a set absorbs what follows
    assert contribute(contribute(None, "append", "a", "k"), "append", "b", "k") == {"append": ["a", "b"]}
    with pytest.raises(MetadataError, match="cannot also append"):
        contribute(c, "append", "x", "done")
    with pytest.raises(MetadataError, match="cannot be incremented"):
        contribute({"set": "text"}, "inc", 1, "k")


def test_an_ancestor_is_its_own_document_then_its_children_in_name_order():
    own = {"total": 3, "done": 1, "log": ["start"], "stage": "fan-out"}
    parts = [("b", {"done": {"inc": 2}, "log": {"append": ["b"]}, "stage": {"set": "b-last"}}),
             ("a", {"done": {"inc": 1}, "log": {"append": ["a"]}, "stage": {"set": "a"}})]
    assert fold(own, parts) == {"total": 3, "done": 4, "log": ["start", "a", "b"], "stage": "b-last"}
    assert fold(own, list(reversed(parts))) == fold(own, parts)  # the order the children are read in is no matter
    assert fold({"done": "n/a"}, [("a", {"done": {"inc": 1}})]) == {"done": 1}  # the fold never fails


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.integers(-5, 5)), max_size=20))
def test_folding_again_counts_nothing_twice(increments: list[tuple[str, int]]):
    # Each child's contribution is its current total: the fold is recomputed, never accumulated,
    # so reading a child twice (or after a restart) gives the same sum.
    totals: dict[str, int] = {}
    for child, n in increments:
        totals[child] = totals.get(child, 0) + n
    parts = [(child, {"done": {"inc": n}}) for child, n in totals.items()]
    once = fold({}, parts)
    assert fold({}, parts + parts[:0]) == once
    assert once.get("done", 0) == sum(n for _, n in increments)


def test_which_parts_of_a_descendant_apply_to_an_ancestor():
    mine = {"parent": {"done": {"inc": 1}}, "root": {"seen": {"inc": 1}}, "other": {"x": {"set": 1}}}
    assert ancestor_parts("c", mine, direct_child=True, root=False) == [("c", {"done": {"inc": 1}})]
    assert ancestor_parts("c", mine, direct_child=True, root=True) == [("c", {"done": {"inc": 1}}),
                                                                       ("c", {"seen": {"inc": 1}})]
    assert ancestor_parts("c", mine, direct_child=False, root=True) == [("c", {"seen": {"inc": 1}})]
    assert ancestor_parts("c", "junk", direct_child=True, root=True) == []


def test_a_document_the_pod_wrote_is_read_without_trusting_it():
    assert parse_doc(None) is None and parse_doc("not json") is None and parse_doc("[1]") is None
    doc = parse_doc(json.dumps({"own": {"a": 1}, "parent": {"ok": {"inc": 2}, "bad": {"inc": "x"}, "two": {"set": 1,
                                                                                                         "inc": 1}}}))
    assert doc == MetadataDoc(own={"a": 1}, parent={"ok": {"inc": 2}})
    assert parse_doc(doc.encode()) == doc


# -- the SDK -------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sdk(flush_seconds: float = 1.0) -> tuple[Metadata, MemoryStore, Clock]:
    store, clock = MemoryStore(), Clock()
    return Metadata(RunMetadata(Checkpoints(store), flush_seconds, clock)), store, clock


def written(store: MemoryStore) -> dict[str, Any]:
    return json.loads(store.data[METADATA_KEY])


def test_set_increment_append_and_get_land_in_the_checkpoint_with_a_digest_label():
    md, store, _ = sdk(flush_seconds=0)
    md.set("stage", "download")
    md.increment("done")
    md.increment("done", 4)
    md.append("log", {"at": 1})
    md.parent.increment("children_done")
    md.root.append("seen", "me")
    assert md.get("done") == 5 and md.get("missing") is None and md.parent.get("children_done") == 1
    doc = written(store)
    assert doc == {"own": {"stage": "download", "done": 5, "log": [{"at": 1}]},
                   "parent": {"children_done": {"inc": 1}}, "root": {"seen": {"append": ["me"]}}}
    assert store.labels == {METADATA_LABEL: metadata_digest(store.data[METADATA_KEY])}


def test_writes_are_at_most_one_a_second_and_the_last_change_is_written_by_the_timer_or_flush():
    md, store, clock = sdk()
    md.increment("done")  # the first write goes at once
    assert store.saves == [METADATA_KEY]
    for _ in range(50):
        md.increment("done")
    assert store.saves == [METADATA_KEY], "changes within the second wait"
    md.flush()  # what the timer (or the attempt's end) does
    assert store.saves == [METADATA_KEY] * 2 and written(store)["own"]["done"] == 51
    md.flush()
    assert len(store.saves) == 2, "nothing changed: nothing written"
    clock.now += 1.5
    md.set("stage", "done")
    assert len(store.saves) == 3 and written(store)["own"]["stage"] == "done"


def test_a_later_attempt_starts_from_what_earlier_ones_wrote():
    md, store, _ = sdk(flush_seconds=0)
    md.increment("done", 3)
    again = Metadata(RunMetadata(Checkpoints(MemoryStore(store.data)), 0))
    again.increment("done")
    assert again.get("done") == 4


def test_an_operation_that_cannot_be_taken_raises_and_changes_nothing():
    md, store, _ = sdk(flush_seconds=0)
    md.set("name", "x")
    with pytest.raises(InvalidMetadata, match="cannot be incremented"):
        md.increment("name")
    with pytest.raises(InvalidMetadata, match="JSON"):
        md.set("when", object())
    with pytest.raises(InvalidMetadata, match="non-empty string"):
        md.set("", 1)
    with pytest.raises(MetadataTooLarge, match="256 KiB"):
        md.set("blob", "x" * METADATA_LIMIT)
    assert md.get("blob") is None and written(store) == {"own": {"name": "x"}}


def test_a_local_context_has_metadata():
    ctx = Context.local()
    ctx.metadata.set("progress", 0.5)
    assert ctx.metadata.get("progress") == 0.5


# -- the operator --------------------------------------------------------------------------------

def sdk_task(name: str = "t") -> dict[str, Any]:
    return task(name, entrypoint="app:main", command=None, allowTrigger=[name])


def write_doc(w: World, run: str, doc: MetadataDoc) -> None:
    """What the pod's flush does: the document and its digest label, in one patch."""
    uid = w.api.objects[("TaskRun", NS, run)]["metadata"]["uid"]
    text, name = doc.encode(), checkpoint_name(run, uid)
    labels = {**w.api.objects[("ConfigMap", NS, name)]["metadata"].get("labels", {}), METADATA_LABEL: metadata_digest(text)}
    w.api.update("ConfigMap", NS, name, data={METADATA_KEY: text}, metadata={"labels": labels})
    w.api.deliver(w.op.cache)


def running(*names: str, parents: dict[str, str] | None = None) -> World:
    runs = [taskrun(n, **({"parentRun": parents[n]} if parents and n in parents else {})) for n in names]
    w = World(sdk_task(), *runs)
    w.settle(*names)
    w.op.runs.metadata.coalesce_seconds = 0.0
    return w


def test_the_pods_document_is_copied_into_status_when_its_digest_changes():
    w = running("r")
    assert w.status("r")["phase"] == "Running" and "metadata" not in w.status("r")
    w.op.run_queue._queued.discard((NS, "r"))
    write_doc(w, "r", MetadataDoc(own={"progress": 0.25}))
    assert (NS, "r") in w.op.run_queue._queued, "the label's change woke the run"
    w.settle("r")
    assert w.status("r")["metadata"] == {"progress": 0.25}
    reads = sum(1 for call in w.api.calls if call[0] == "get_configmap")
    w.settle("r")
    assert sum(1 for call in w.api.calls if call[0] == "get_configmap") == reads, "read once per digest"


def test_metadata_writes_are_coalesced_to_one_a_second():
    w = running("r")
    w.op.runs.metadata.coalesce_seconds = 60.0
    write_doc(w, "r", MetadataDoc(own={"done": 1}))
    w.reconcile("r")
    assert w.status("r")["metadata"] == {"done": 1}
    write_doc(w, "r", MetadataDoc(own={"done": 2}))
    again = w.reconcile("r")
    assert w.status("r")["metadata"] == {"done": 1}, "held back"
    if isinstance(again, datetime):
        again = (again - datetime.now(timezone.utc)).total_seconds()
    assert again is not None and again <= 60.0, "looked at again when the write is due"
    uid = w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    w.op.runs.metadata._written_at[uid] -= 60.0  # the minute has passed
    w.reconcile("r")
    assert w.status("r")["metadata"] == {"done": 2}


def test_a_held_back_write_brings_the_next_look_forward():
    assert sooner(None, 0.5) == 0.5 and sooner(3.0, 0.5) == 0.5 and sooner(0.2, 0.5) == 0.2
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    assert sooner(later, 0.5) < later


def test_a_childs_contributions_are_folded_into_its_parent_and_root_once():
    w = running("root", "p", "c1", "c2", parents={"p": "root", "c1": "p", "c2": "p"})
    write_doc(w, "p", MetadataDoc(own={"total": 2, "done": 0}))
    write_doc(w, "c1", MetadataDoc(parent={"done": {"inc": 1}}, root={"leaves": {"append": ["c1"]}}))
    write_doc(w, "c2", MetadataDoc(parent={"done": {"inc": 1}}, root={"leaves": {"append": ["c2"]}}))
    w.settle("c1", "c2")
    assert w.status("c1")["ancestorMetadata"] == {"parent": {"done": {"inc": 1}}, "root": {"leaves": {"append": ["c1"]}}}
    for _ in range(3):  # read again and again (and after a restart): counted once
        w.settle("p", "root")
    assert w.status("p")["metadata"] == {"total": 2, "done": 2}
    assert w.status("root")["metadata"] == {"leaves": ["c1", "c2"]}
    w.restart()
    w.op.runs.metadata.coalesce_seconds = 0.0
    w.settle("p", "root")
    assert w.status("p")["metadata"] == {"total": 2, "done": 2}


def test_a_changed_contribution_wakes_every_ancestor():
    w = running("root", "p", "c", parents={"p": "root", "c": "p"})
    for name in ("root", "p"):
        w.op.run_queue._queued.discard((NS, name))
        w.op.run_queue._timers.pop((NS, name), None)
    write_doc(w, "c", MetadataDoc(parent={"done": {"inc": 1}}))
    w.settle("c")
    woken = w.op.run_queue._queued | set(w.op.run_queue._timers)  # at once, or a second later
    assert {(NS, "p"), (NS, "root")} <= woken


def test_an_oversized_document_is_not_copied_and_an_event_says_so():
    w = running("r")
    write_doc(w, "r", MetadataDoc(own={"ok": 1}))
    w.settle("r")
    write_doc(w, "r", MetadataDoc(own={"big": "x" * METADATA_LIMIT}))
    w.settle("r")
    assert w.status("r")["metadata"] == {"ok": 1} and w.status("r")["phase"] == "Running"
    warnings = [e for e in w.api.events if e[2] == "MetadataTooLarge"]
    assert len(warnings) == 1 and "256 KiB" in warnings[0][3]


def test_folded_metadata_over_the_cap_keeps_the_last_that_fitted():
    w = running("p", "a", "b", parents={"a": "p", "b": "p"})
    half = "x" * (METADATA_LIMIT // 2)
    write_doc(w, "a", MetadataDoc(parent={"log": {"append": [half]}}))
    w.settle("a", "p")
    assert size_of(w.status("p")["metadata"]) < METADATA_LIMIT
    write_doc(w, "b", MetadataDoc(parent={"log": {"append": [half]}}))
    w.settle("b", "p")
    assert w.status("p")["metadata"] == {"log": [half]}
    assert any(e[0] == "p" and e[2] == "MetadataTooLarge" for e in w.api.events)


# -- the attempt's end ---------------------------------------------------------------------------

def counts_then_fails(payload: Any, ctx: Context) -> None:
    for _ in range(5):  # within one second: only the first is written at once
        ctx.metadata.increment("done")
    raise RuntimeError("boom")


def test_the_attempts_end_writes_its_last_metadata_whatever_its_outcome():
    store = MemoryStore()
    result = run_task(Invocation(entrypoint=f"{__name__}:counts_then_fails", payload="null", run="r", run_uid="u"),
                      store)
    assert result.report.outcome == "failed"
    assert written(store)["own"] == {"done": 5}


# -- where it is shown ---------------------------------------------------------------------------

def shown_run(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "r", "namespace": NS}, "spec": {"taskRef": "t", "tags": ["nightly", "eu"]},
            "status": {"phase": "Running", **status}}


def test_describe_shows_the_metadata_and_the_tags():
    text = render_describe(shown_run(metadata={"progress": 0.75, "stage": "upload"}), 100)
    assert "Metadata:" in text and '"progress": 0.75' in text and '"stage": "upload"' in text
    assert "Tags:" in text and "nightly, eu" in text
    assert "Metadata:" not in render_describe(shown_run(), 100)


def test_the_dashboard_run_page_shows_the_metadata_escaped():
    html = run_page(shown_run(metadata={"note": "<b>hi</b>", "progress": 3}), RunDetails(), NOW)
    section = html[html.index('id="metadata"'):]
    assert "&lt;b&gt;hi&lt;/b&gt;" in section and "&quot;progress&quot;: 3" in section and "<b>hi" not in section
    assert 'id="metadata"' not in run_page(shown_run(), RunDetails(), NOW)


def test_runs_tag_lists_only_the_runs_with_that_tag():
    runs = [{"metadata": {"name": n, "namespace": NS, "creationTimestamp": "2026-01-01T00:00:00Z"},
             "spec": {"taskRef": "t", "tags": tags}, "status": {}} for n, tags in
            (("a", ["nightly"]), ("b", []), ("c", ["eu", "nightly"]))]
    nightly = run_filter(tag="nightly")
    assert [row[0] for row in run_rows(runs, nightly)] == ["a", "c"]
    assert [row[0] for row in run_rows(runs)] == ["a", "b", "c"]
    watched = relisted(runs, nightly)
    untagged = {**runs[0], "spec": {"taskRef": "t", "tags": []}}
    assert sorted(k[1] for k in apply_event(watched, "MODIFIED", untagged, nightly)) == ["c"]
    assert cli.build_parser().parse_args(["runs", "--tag", "nightly"]).tag == "nightly"


def test_tags_are_capped_at_admission_by_the_crd_schema():
    spec = render_crds()["kubetasks.io_taskruns.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    tags = spec["properties"]["spec"]["properties"]["tags"]
    assert tags["maxItems"] == 10 and tags["items"]["maxLength"] == 128


def test_values_are_written_as_the_status_keeps_them_so_they_read_back_as_written():
    md, store, _ = sdk(flush_seconds=0)
    md.set("cfg", {"a": 1, "b": None, "items": [None, {"c": None}]})
    md.set("gone", 1)
    md.set("gone", None)  # removes it
    md.parent.set("p", 1)
    md.parent.set("p", None)
    assert written(store) == {"own": {"cfg": {"a": 1, "items": [None, {}]}}}  # the API server drops them there too
    md.set("big", 2 ** 64 + 1)  # the API server keeps a float of it
    md.increment("sum", 2 ** 63 - 1)
    md.increment("sum")
    assert written(store)["own"]["big"] == float(2 ** 64 + 1) and isinstance(written(store)["own"]["sum"], float)
    assert parse_doc(json.dumps({"own": {"x": None, "y": {"z": None}}, "parent": {"k": {"set": None}}})) == \
        MetadataDoc(own={"y": {}})


@given(st.recursive(st.none() | st.integers() | st.text(max_size=3),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
                    max_leaves=12), st.dictionaries(st.text(max_size=2), st.integers(), max_size=3))
def test_a_merge_patch_of_two_documents_turns_one_into_the_other(new: Any, old: dict[str, Any]):
    new = storable({"v": new})
    patched = json.loads(json.dumps(old))
    apply_merge_patch(patched, merge_patch(old, new))
    assert patched == new


def apply_merge_patch(target: dict[str, Any], patch: Any) -> None:
    for k, v in patch.items():  # RFC 7386, as the API server applies it
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            apply_merge_patch(target[k], v)
        else:
            target[k] = storable(v) if isinstance(v, dict) else v


def test_a_changed_object_value_replaces_the_old_one_in_status():
    w = running("r")
    write_doc(w, "r", MetadataDoc(own={"cfg": {"a": 1, "b": 2}}))
    w.settle("r")
    write_doc(w, "r", MetadataDoc(own={"cfg": {"c": 3}}))
    w.settle("r")
    assert w.status("r")["metadata"] == {"cfg": {"c": 3}}


def test_the_write_that_finishes_a_run_carries_its_last_metadata_however_recent_the_one_before():
    w = running("r")
    w.op.runs.metadata.coalesce_seconds = 3600.0
    write_doc(w, "r", MetadataDoc(own={"done": 1}))
    w.settle("r")
    write_doc(w, "r", MetadataDoc(own={"done": 2}))  # the attempt's last flush, just before it ends
    w.api.finish_job(NS, "r-1")
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Succeeded" and w.status("r")["metadata"] == {"done": 2}


def test_many_children_changing_within_a_second_wake_their_parent_once_a_second_later():
    w = running("p", "a", "b", parents={"a": "p", "b": "p"})

    async def changes() -> list[Any]:
        w.op.run_queue._queued.discard((NS, "p"))
        for child in ("a", "b"):
            w.api.update("TaskRun", NS, child, status={"ancestorMetadata": {"parent": {"n": {"inc": 1}}}})
        w.api.deliver(w.op.cache)
        timers = dict(w.op.run_queue._timers)
        for _, handle in timers.values():
            handle.cancel()
        return [(key, at - asyncio.get_running_loop().time()) for key, (at, _) in timers.items()]

    woken = asyncio.run(changes())
    assert [key for key, _ in woken] == [(NS, "p")] and 0.5 < woken[0][1] <= 1.0, woken
    assert (NS, "p") not in w.op.run_queue._queued


def test_metadata_shares_the_checkpoint_configmaps_room_with_the_steps():
    store = MemoryStore({"step.big": "x" * (TOTAL_LIMIT - 100 * 1024)})  # steps' records: 800 KiB
    md = Metadata(RunMetadata(Checkpoints(store), 0))
    md.set("fits", "y" * (50 * 1024))
    with pytest.raises(MetadataTooLarge, match="900 KiB"):
        md.set("does-not", "z" * (60 * 1024))
    assert md.get("does-not") is None and "does-not" not in written(store)["own"]
