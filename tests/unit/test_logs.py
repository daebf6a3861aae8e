"""Keeping an attempt's log after its pod is gone: the pure parts (core.logs, naming) and the
run reconciler against the fake API (once per attempt, not again after a restart, never at the
run's expense)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kubetasks import kube
from kubetasks.api.taskrun import TaskRun
from prometheus_client import REGISTRY

from kubetasks.controller.cache import Cache
from kubetasks.controller.kept_logs import log_keep_bytes
from kubetasks.controller.log_configmaps import ConfigMapLogs, log_budget_bytes
from kubetasks.core.logs import (
    ANNOTATION_BYTES, ANNOTATION_POD, ANNOTATION_TRUNCATED, DEFAULT_BUDGET_BYTES, DEFAULT_KEEP_BYTES,
    KEPT_LOG_SELECTOR, LOG_KEY, age, evictions, is_kept_log, keep_tail, kept_log, kept_size, last_pod, lines_to_fill,
    log_tail, log_window, read_again, render_attempt_log, slim_kept_log,
)
from kubetasks.core.naming import LABEL_ATTEMPT, LABEL_MANAGED_BY, LABEL_RUN_UID, MANAGER, attempt_log_name, job_name
from kubetasks.core.results import runs_runtime
from kubetasks.protocol import RUNTIME_COMMAND
from tests.unit.fakeapi import FakeApi
from tests.unit.test_reconcile_runs import NS, World, task, taskrun

UID = "0123456789abcdef-uid"


# Trimming -------------------------------------------------------------------------------------

def test_a_log_that_fits_is_kept_whole():
    assert keep_tail(b"one\ntwo\n", 100) == ("one\ntwo\n", False)


def test_the_end_is_kept_from_a_line_start():
    data = b"".join(b"line %d\n" % i for i in range(1000))
    text, cut = keep_tail(data, 100)
    assert cut and text.endswith("line 999\n") and text.startswith("line ") and len(text.encode()) <= 100
    assert data.decode().endswith(text)


def test_one_long_line_keeps_its_end_from_a_character_start():
    text, cut = keep_tail(("é" * 100).encode(), 51)  # 2 bytes each: byte 51 from the end is mid-character
    assert cut and text == "é" * 25


def test_undecodable_bytes_are_replaced_and_the_bound_holds_for_what_is_stored():
    text, cut = keep_tail(b"\xff" * 10, 12)  # each becomes U+FFFD, 3 bytes
    assert cut and text == "\ufffd" * 4


@given(st.binary(max_size=400), st.integers(min_value=1, max_value=300))
def test_what_is_kept_is_valid_utf8_within_the_bound_and_the_end_of_the_log(data: bytes, keep: int):
    text, cut = keep_tail(data, keep)
    whole = data.decode("utf-8", "replace")
    assert len(text.encode()) <= keep and whole.endswith(text)
    assert cut == (text != whole)
    if cut:  # never more than half of what fits is given up for a line start
        assert len(text.encode()) >= keep // 2 - 3


def test_a_read_is_truncated_when_bytes_were_cut_or_it_may_not_hold_the_whole_log():
    lines, cap = log_window(1000)
    assert log_tail(b"a\nb\n", 1000, lines, cap) == ("a\nb\n", False)  # fewer lines than asked: all of it
    assert log_tail(b"a\nb\n", 1000, 2, cap)[1]  # as many lines as asked: there may be more before
    assert log_tail(b"a\nb\n", 1000, lines, 4)[1]  # the cap reached


def test_a_second_read_only_when_the_guess_of_lines_missed_the_end_or_left_room():
    keep = 1000
    lines, cap = log_window(keep)
    assert (lines, cap) == (16, 8000)
    long_lines = (b"x" * 999 + b"\n") * 8  # the cap is reached: the start of the window, not its end
    assert read_again(long_lines, keep, lines, cap) and lines_to_fill(long_lines, keep) == 1
    short_lines = b"ab\n" * 16  # as many as asked, 48 bytes: the log may go on before them
    assert read_again(short_lines, keep, lines, cap) and lines_to_fill(short_lines, keep) == 416
    assert not read_again(b"ab\n" * 15, keep, lines, cap)  # fewer than asked: the whole log
    assert not read_again((b"x" * 99 + b"\n") * 16, keep, lines, cap)  # as many as asked, and enough bytes
    assert lines_to_fill(b"x" * cap, keep) == 1  # no newline at all: one long line


# Naming and rendering -------------------------------------------------------------------------

def test_the_log_configmap_is_named_after_the_attempts_job_and_fits_any_job_name():
    assert attempt_log_name("r-1") == "r-1-log"
    long_job = job_name("x" * 253, 20, UID)
    name = attempt_log_name(long_job)
    assert len(long_job) == 63 and name == long_job + "-log"
    assert attempt_log_name("r-1") != attempt_log_name("r-2")


def run_model() -> TaskRun:
    return TaskRun.model_validate({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
                                   "metadata": {"name": "r", "namespace": NS, "uid": UID}, "spec": {"taskRef": "t"}})


def test_the_configmap_is_owned_by_the_run_labelled_as_its_job_and_says_what_it_holds():
    job = {"metadata": {"name": "r-2", "labels": {LABEL_RUN_UID: UID, LABEL_ATTEMPT: "2"}}}
    cm = render_attempt_log(run_model(), job, 2, "r-2-abcde", "héllo\n", True)
    meta = cm["metadata"]
    assert meta["name"] == "r-2-log" and meta["labels"] == job["metadata"]["labels"]
    assert meta["ownerReferences"] == [{"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "name": "r",
                                        "uid": UID, "controller": True, "blockOwnerDeletion": True}]
    assert meta["annotations"][ANNOTATION_POD] == "r-2-abcde" and meta["annotations"][ANNOTATION_TRUNCATED] == "true"
    assert meta["annotations"][ANNOTATION_BYTES] == "7" and cm["data"] == {LOG_KEY: "héllo\n"}
    kept = kept_log(cm, UID)
    assert kept is not None and (kept.text, kept.truncated, kept.kept_bytes) == ("héllo\n", True, 7)
    assert kept_log(cm, "another-uid") is None and kept_log(None, UID) is None  # another run's: not this one's


def test_the_newest_pod_is_the_attempts():
    pods = [{"metadata": {"name": n, "creationTimestamp": t}} for n, t in
            (("a", "2026-01-01T00:00:02Z"), ("b", "2026-01-01T00:00:01Z"))]
    assert last_pod(pods)["metadata"]["name"] == "a" and last_pod([]) is None


# The reconciler -------------------------------------------------------------------------------

def pod(name: str, exit_code: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"containerStatuses": [{"name": "task", "state": {"terminated": {"exitCode": exit_code,
                                                                                        "reason": "Error"}}}]}}


def finish(w: World, job: str, ok: bool, log: bytes | Exception | None = None) -> None:
    w.api.pods[job] = [pod(f"{job}-pod", 0 if ok else 1)]
    if log is not None:
        w.api.logs[f"{job}-pod"] = log
    w.api.finish_job(NS, job, ok=ok)
    w.api.deliver(w.op.cache)


def calls(w: World, fn: str) -> list[tuple[Any, ...]]:
    return [args for name, args in w.api.calls if name == fn]


def kept(w: World, job: str) -> str | None:
    cm = w.api.objects.get(("ConfigMap", NS, attempt_log_name(job)))
    return cm["data"].get(LOG_KEY) if cm else None


def test_each_attempts_log_is_kept_once_when_its_job_finishes():
    w = World(task(retry={"maxAttempts": 2, "minDelay": "0s"}), taskrun("r"))
    w.settle("r")
    finish(w, "r-1", ok=False, log=b"first attempt\nboom\n")
    w.settle("r")
    finish(w, "r-2", ok=True, log=b"second attempt\n")
    w.settle("r")
    assert w.status("r")["phase"] == "Succeeded"
    assert kept(w, "r-1") == "first attempt\nboom\n" and kept(w, "r-2") == "second attempt\n"
    assert [a[0] for a in calls(w, "read_log")] == ["r-1-pod", "r-2-pod"]  # once each, however often reconciled
    cm = w.api.objects[("ConfigMap", NS, "r-1-log")]
    assert cm["metadata"]["annotations"][ANNOTATION_TRUNCATED] == "false"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    # A failed attempt's pods were listed for its exit code: not listed again for its log.
    assert calls(w, "list_pods").count(("job-name=r-1",)) == 1


def test_the_status_is_written_before_the_log_is_read():
    w = World(task(retry={"maxAttempts": 1}), taskrun("r"))
    w.settle("r")
    finish(w, "r-1", ok=False, log=b"boom\n")
    w.reconcile("r")
    order = [fn for fn, _ in w.api.calls if fn in ("patch_status", "read_log")]
    assert order[-2:] == ["patch_status", "read_log"]


def test_a_restarted_operator_does_not_read_a_kept_log_again():
    w = World(task(retry={"maxAttempts": 2, "minDelay": "1h"}), taskrun("r"))
    w.settle("r")
    finish(w, "r-1", ok=False, log=b"boom\n")
    w.settle("r")
    assert w.status("r")["phase"] == "Retrying" and kept(w, "r-1") == "boom\n"
    reads = len(calls(w, "read_log"))
    w.restart()
    w.settle("r")
    assert len(calls(w, "read_log")) == reads and not calls(w, "get")  # the kept logs' informer knows it


def test_what_is_remembered_of_a_run_goes_when_it_finishes_or_is_deleted():
    w = World(task(retry={"maxAttempts": 2, "minDelay": "1h"}), taskrun("r"), taskrun("s"))
    w.settle("r", "s")
    finish(w, "r-1", ok=False, log=b"boom\n")
    finish(w, "s-1", ok=True, log=b"fine\n")
    w.settle("r", "s")
    assert w.status("r")["phase"] == "Retrying" and w.status("s")["phase"] == "Succeeded"
    uid = w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    assert set(w.op.runs.logs._kept) == {uid}  # the finished run's went with its next reconcile
    w.api.remove(("TaskRun", NS, "r"))
    w.api.deliver(w.op.cache)
    assert not w.op.runs.logs._kept


def test_a_restart_before_the_log_was_kept_keeps_it():
    w = World(task(retry={"maxAttempts": 2, "minDelay": "1h"}), taskrun("r"))
    w.settle("r")
    w.op.runs.logs.keep_bytes = 0  # as if the operator died between the status write and the log
    finish(w, "r-1", ok=False, log=b"boom\n")
    w.settle("r")
    assert w.status("r")["phase"] == "Retrying" and kept(w, "r-1") is None
    w.restart()
    w.settle("r")
    assert kept(w, "r-1") == "boom\n" and len(calls(w, "read_log")) == 1


def test_a_configmap_holding_the_name_is_already_done_when_the_runs_and_never_replaced_when_not(caplog):
    w = World(task(retry={"maxAttempts": 1}), taskrun("r"), taskrun("s"))
    w.settle("r", "s")
    uid = w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    ours = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "r-1-log", "namespace": NS, "ownerReferences": [{"uid": uid, "controller": True}]}, "data": {LOG_KEY: "old"}}
    squat = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s-1-log", "namespace": NS}, "data": {}}
    w.api.add(ours)
    w.api.add(squat)
    finish(w, "r-1", ok=True, log=b"new\n")
    finish(w, "s-1", ok=True, log=b"new\n")
    w.settle("r", "s")
    assert w.status("r")["phase"] == w.status("s")["phase"] == "Succeeded"
    assert kept(w, "r-1") == "old" and kept(w, "s-1") is None  # a create that answers 409 changes nothing
    assert "s-1-log belongs to another owner" in caplog.text and "r-1-log" not in caplog.text


def test_a_failing_read_or_a_gone_pod_never_touches_the_run_and_is_not_retried():
    w = World(task(retry={"maxAttempts": 3, "minDelay": "0s"}), taskrun("r"))
    w.settle("r")
    finish(w, "r-1", ok=False, log=kube.ApiException(status=500, reason="kwok: connection refused"))
    w.settle("r")
    w.api.pods["r-2"] = []  # its pod was deleted before the operator looked
    w.api.finish_job(NS, "r-2", ok=False)
    w.api.deliver(w.op.cache)
    w.settle("r")
    finish(w, "r-3", ok=True, log=RuntimeError("unexpected"))
    w.settle("r")
    s = w.status("r")
    assert s["phase"] == "Succeeded" and [a["reason"] for a in s["attempts"]] == ["Error", "Error", "Succeeded"]
    assert [a[0] for a in calls(w, "read_log")] == ["r-1-pod", "r-3-pod"]  # one request each, no retry
    assert not w.api.created("ConfigMap")


def test_a_node_that_gave_no_log_is_not_asked_again_for_a_while():
    w = World(task(retry={"maxAttempts": 1}), taskrun("a"), taskrun("b"), taskrun("c"))
    w.settle("a", "b", "c")
    for run in ("a", "b", "c"):
        w.api.pods[f"{run}-1"] = [{**pod(f"{run}-1-pod"), "spec": {"nodeName": "kwok-node-0" if run != "c" else "n1"}}]
        w.api.logs[f"{run}-1-pod"] = kube.ApiException(status=500, reason="dial tcp: connection refused")
    w.api.logs["c-1-pod"] = b"c\n"
    for run in ("a", "b", "c"):
        w.api.finish_job(NS, f"{run}-1")
        w.api.deliver(w.op.cache)
        w.settle(run)
    assert [a[0] for a in calls(w, "read_log")] == ["a-1-pod", "c-1-pod"] and kept(w, "c-1") == "c\n"


def test_attempts_ending_together_on_a_node_not_yet_known_wait_for_one_read_from_it():
    runs = ("a", "b", "c", "d")
    w = World(task(retry={"maxAttempts": 1}), *(taskrun(r) for r in runs))
    w.settle(*runs)
    for run in runs:  # a, b and c on a node without logs (kwok's), d on one with logs
        w.api.pods[f"{run}-1"] = [{**pod(f"{run}-1-pod"), "spec": {"nodeName": "n1" if run == "d" else "kwok-node-0"}}]
        w.api.logs[f"{run}-1-pod"] = b"d\n" if run == "d" else kube.ApiException(status=500, reason="no kubelet")
        w.api.finish_job(NS, f"{run}-1")
    w.api.deliver(w.op.cache)

    async def together() -> None:
        await asyncio.gather(*(w.op.runs.reconcile((NS, r)) for r in runs))
    asyncio.run(together())
    assert len([a for a in calls(w, "read_log") if a[0] != "d-1-pod"]) == 1 and kept(w, "d-1") == "d\n"


def test_a_busy_api_server_does_not_make_a_node_logless():
    w = World(task(retry={"maxAttempts": 1}), taskrun("a"), taskrun("b"))
    w.settle("a", "b")
    for run in ("a", "b"):
        w.api.pods[f"{run}-1"] = [{**pod(f"{run}-1-pod"), "spec": {"nodeName": "n1"}}]
    w.api.logs["a-1-pod"] = kube.ApiException(status=503, reason="busy")
    w.api.logs["b-1-pod"] = b"b\n"
    for run in ("a", "b"):
        w.api.finish_job(NS, f"{run}-1")
        w.api.deliver(w.op.cache)
        w.settle(run)
    assert kept(w, "b-1") == "b\n"


def test_a_log_larger_than_the_bound_keeps_its_end_and_says_so():
    w = World(task(retry={"maxAttempts": 1}), taskrun("r"))
    w.op.runs.logs.keep_bytes = 1000
    w.settle("r")
    finish(w, "r-1", ok=True, log=b"".join(b"line %05d\n" % i for i in range(5000)))
    w.settle("r")
    cm = w.api.objects[("ConfigMap", NS, "r-1-log")]
    text = cm["data"][LOG_KEY]
    assert text.endswith("line 04999\n") and text.startswith("line ") and 900 <= len(text) <= 1000
    assert cm["metadata"]["annotations"][ANNOTATION_TRUNCATED] == "true"
    # 1000 // 64 + 1 lines, 8 KiB at most; those short lines filled 176 bytes: 1.25 KB of them next.
    assert calls(w, "read_log") == [("r-1-pod", 16, 8000), ("r-1-pod", 113, 8000)]


def test_a_log_of_long_lines_is_read_again_for_its_end():
    w = World(task(retry={"maxAttempts": 1}), taskrun("r"))
    w.op.runs.logs.keep_bytes = 1000
    w.settle("r")
    finish(w, "r-1", ok=True, log=b"".join(b"%04d" % i + b"x" * 995 + b"\n" for i in range(100)))
    w.settle("r")
    assert [a[1] for a in calls(w, "read_log")] == [16, 1]  # the first read hit the cap mid-window
    assert kept(w, "r-1").startswith("0099x")


def test_no_log_is_read_when_keeping_is_off():
    w = World(task(retry={"maxAttempts": 1}), taskrun("r"))
    w.op.runs.logs.keep_bytes = 0
    w.settle("r")
    finish(w, "r-1", ok=True, log=b"hello\n")
    w.settle("r")
    # Its pods are listed once, for its result (its termination message); its log is not read.
    assert not calls(w, "read_log") and calls(w, "list_pods") == [("job-name=r-1",)]


def informed(w: World, job: str, phase: str, exit_code: int = 0) -> None:
    """The pod informer shows the Job's pod (as the Job controller labels it) in ``phase``."""
    body = {**pod(f"{job}-pod", exit_code), "spec": {"nodeName": "n1"}}
    body["metadata"] = {**body["metadata"], "namespace": NS, "uid": f"{job}-pod-uid", "labels": {"job-name": job}}
    body["status"] = {**body["status"], "phase": phase}
    w.op.cache.job_pods.event("ADDED", w.op.cache.job_pods.slim(body))


def test_a_finished_attempts_pod_comes_from_the_pod_informer_not_a_list():
    w = World(task(retry={"maxAttempts": 2, "minDelay": "0s"}), taskrun("r"))
    w.settle("r")
    informed(w, "r-1", "Failed", exit_code=1)
    finish(w, "r-1", ok=False, log=b"boom\n")
    w.api.pods.clear()  # a list would find nothing: the informer's pod is what is read
    w.settle("r")
    assert w.status("r")["attempts"][0]["exitCode"] == 1 and kept(w, "r-1") == "boom\n"
    informed(w, "r-2", "Succeeded")
    finish(w, "r-2", ok=True, log=b"ok\n")
    w.settle("r")
    assert w.status("r")["phase"] == "Succeeded" and kept(w, "r-2") == "ok\n"
    assert not calls(w, "list_pods") and w.op.cache.job_pods.get((NS, "r-2-pod"))["spec"] == {"nodeName": "n1", "containers": []}


def test_the_pod_store_keeps_a_pods_job_node_commands_phase_container_states_and_scheduling_not_its_spec():
    state = {"terminated": {"exitCode": 3, "message": "boom", "finishedAt": "2026-01-01T00:00:09Z"}}
    full = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": NS, "labels": {"job-name": "r-1"}, "managedFields": [{}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "task", "image": "x", "env": [{"name": "A"}],
                                                       "command": list(RUNTIME_COMMAND)}]},
            "status": {"phase": "Failed", "podIP": "10.0.0.1", "conditions": [
                {"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True", "lastProbeTime": None}],
                "containerStatuses": [
                {"name": "task", "state": state, "lastState": {}, "image": "x", "imageID": "sha", "containerID": "c"}]}}
    slim = Cache().job_pods.slim(full)
    assert slim["spec"] == {"nodeName": "n1", "containers": [{"name": "task", "command": RUNTIME_COMMAND}]}
    assert runs_runtime([slim])  # its termination message is still read as the runtime's Report, not a result
    assert slim["metadata"] == {"name": "p", "namespace": NS,
                                                                       "labels": {"job-name": "r-1"}}
    assert slim["status"] == {"phase": "Failed", "conditions": [{"type": "PodScheduled", "status": "True"}],
                              "containerStatuses": [{"name": "task", "state": state, "lastState": {}}]}


def test_a_pod_the_informer_has_not_seen_end_yet_is_listed():
    w = World(task(retry={"maxAttempts": 1}), taskrun("r"))
    w.settle("r")
    informed(w, "r-1", "Running")  # the Job's event came before its pod's last change
    finish(w, "r-1", ok=True, log=b"ok\n")
    w.settle("r")
    assert calls(w, "list_pods") == [("job-name=r-1",)] and kept(w, "r-1") == "ok\n"


# The budget: pure ---------------------------------------------------------------------------------

def test_the_defaults_keep_a_small_tail_within_a_namespace_budget_and_0_is_no_budget():
    assert DEFAULT_KEEP_BYTES == log_keep_bytes(None) == 16384 and log_keep_bytes("0") == 0
    assert log_keep_bytes(str(10**9)) == 900 * 1024  # what a ConfigMap holds
    assert DEFAULT_BUDGET_BYTES == log_budget_bytes("") == 64 * 2**20 and log_budget_bytes("0") == 0


def meta_log(name: str, created: str, size: int | None) -> dict[str, Any]:
    notes = {} if size is None else {ANNOTATION_BYTES: str(size)}
    return {"metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "creationTimestamp": created,
                         "annotations": notes}}


def test_the_oldest_go_first_by_creation_time_then_name_until_the_rest_fit():
    logs = [meta_log("c", "2026-01-01T00:00:01Z", 10), meta_log("b", "2026-01-01T00:00:02Z", 10),
            meta_log("a", "2026-01-01T00:00:02Z", 10), meta_log("d", "2026-01-01T00:00:03Z", 10)]
    assert [b["metadata"]["name"] for b in evictions(logs, 25)] == ["c", "a"]
    assert evictions(logs, 40) == [] and evictions(logs, 0) == []  # 0: no budget
    assert [b["metadata"]["name"] for b in evictions(logs, 5)] == ["c", "a", "b", "d"]  # none fits: none stays


def test_a_configmap_that_does_not_say_its_size_is_not_counted_nor_evicted():
    logs = [meta_log("old", "2026-01-01T00:00:01Z", None), meta_log("new", "2026-01-01T00:00:02Z", 30),
            {**meta_log("bad", "2026-01-01T00:00:00Z", None), "metadata": {
                **meta_log("bad", "2026-01-01T00:00:00Z", None)["metadata"], "annotations": {ANNOTATION_BYTES: "x"}}}]
    assert kept_size(logs[0]) is None and kept_size(logs[2]) is None
    assert [b["metadata"]["name"] for b in evictions(logs, 20)] == ["new"]


sizes = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 100)), max_size=30)


@given(sizes, st.integers(0, 1500))
def test_what_is_evicted_is_the_fewest_oldest_logs_that_bring_the_rest_within_the_budget(spec, budget):
    logs = [meta_log(f"l{i}", f"2026-01-01T00:00:0{second}Z", size) for i, (second, size) in enumerate(spec)]
    evicted = evictions(logs, budget)
    ordered = sorted(logs, key=age)
    assert evicted == ordered[:len(evicted)]  # a prefix of the oldest
    left = sum(kept_size(b) or 0 for b in ordered[len(evicted):])
    if budget:
        assert left <= budget
        assert not evicted or left + (kept_size(evicted[-1]) or 0) > budget  # not one more than needed
    else:
        assert not evicted


def test_the_store_holds_a_kept_logs_metadata_and_size_never_its_text():
    job = {"metadata": {"name": "r-2", "labels": {LABEL_RUN_UID: UID, LABEL_ATTEMPT: "2", LABEL_MANAGED_BY: MANAGER}}}
    cm = render_attempt_log(run_model(), job, 2, "r-2-abcde", "x" * 5000, True)
    cm["metadata"].update(uid="u", creationTimestamp="2026-01-01T00:00:00Z", resourceVersion="7")
    slim = slim_kept_log(cm)
    assert set(slim) == {"metadata"} and kept_size(slim) == 5000 and age(slim) == ("2026-01-01T00:00:00Z", "r-2-log")
    assert slim["metadata"]["annotations"] == {ANNOTATION_BYTES: "5000"} and "labels" not in slim["metadata"]
    assert is_kept_log(cm) and KEPT_LOG_SELECTOR == "app.kubernetes.io/managed-by=kubetasks,kubetasks.io/attempt"
    assert not is_kept_log({"metadata": {"labels": {LABEL_MANAGED_BY: MANAGER}}})  # a claim, checkpoints


def test_the_kept_logs_informer_asks_for_metadata_only():
    assert kube.CONFIGMAP_METADATA.accept(listing=True).startswith(
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,")
    assert kube.CONFIGMAP_METADATA.accept(listing=False).startswith("application/json;as=PartialObjectMetadata;")
    assert kube.CONFIGMAPS.accept(listing=True) == "application/json"


# The budget: the reconciler and the fake API ---------------------------------------------------

def sample(name: str, ns: str = NS) -> float | None:
    return REGISTRY.get_sample_value(name, {"namespace": ns})


def kept_logs_world(n: int, budget: int) -> World:
    w = World(task(retry={"maxAttempts": 1}), *(taskrun(f"r{i}") for i in range(n)))
    w.op.runs.logs.configmaps.budget = budget
    w.settle(*(f"r{i}" for i in range(n)), rounds=1)
    return w


def finish_runs(w: World, runs: range) -> None:
    for i in runs:
        finish(w, f"r{i}-1", ok=True, log=b"x" * 99 + b"\n")  # 100 bytes kept each
        w.settle(f"r{i}", rounds=1)


def evict(w: World) -> None:
    asyncio.run(w.op.runs.logs.configmaps.evict(NS))
    w.api.deliver(w.op.cache)


def test_past_the_budget_the_oldest_kept_logs_are_deleted_with_their_uid_as_precondition():
    w = kept_logs_world(5, budget=250)
    evicted_before = sample("kubetasks_kept_log_evictions_total") or 0
    finish_runs(w, range(5))
    configmaps = w.op.runs.logs.configmaps
    assert sample("kubetasks_kept_log_bytes") == 500 and sample("kubetasks_kept_logs") == 5
    assert len(configmaps.queue) == 1  # the namespace, once
    uids = {f"r{n}-1-log": w.api.objects[("ConfigMap", NS, f"r{n}-1-log")]["metadata"]["uid"] for n in range(5)}
    deletes: list[tuple[str, str | None]] = []
    real_delete = w.api.delete
    w.api.delete = lambda resource, ns, name, uid=None: (deletes.append((name, uid)), real_delete(resource, ns, name, uid))[1]
    evict(w)
    assert [kept(w, f"r{i}-1") is not None for i in range(5)] == [False, False, False, True, True]
    assert deletes == [(n, uids[n]) for n in ("r0-1-log", "r1-1-log", "r2-1-log")]
    assert not configmaps._evicting  # the watch showed them gone
    assert sample("kubetasks_kept_log_bytes") == 200 == configmaps.kept_bytes(NS)
    assert sample("kubetasks_kept_log_evictions_total") == evicted_before + 3


def test_a_log_being_deleted_is_not_judged_again_before_the_watch_shows_it_gone():
    w = kept_logs_world(3, budget=150)
    finish_runs(w, range(3))
    asyncio.run(w.op.runs.logs.configmaps.evict(NS))  # the DELETED events not delivered yet
    asyncio.run(w.op.runs.logs.configmaps.evict(NS))
    assert [a[1] for f, a in w.api.calls if f == "delete"] == ["r0-1-log", "r1-1-log"]  # not r0 twice, nor r2


def test_within_the_budget_or_without_one_nothing_is_deleted():
    for budget in (300, 0):
        w = kept_logs_world(3, budget=budget)
        finish_runs(w, range(3))
        assert not len(w.op.runs.logs.configmaps.queue)
        evict(w)
        assert all(kept(w, f"r{i}-1") for i in range(3)) and not calls(w, "delete")


def test_a_restarted_operator_knows_the_bytes_kept_before_and_evicts_past_a_smaller_budget():
    w = kept_logs_world(4, budget=0)
    finish_runs(w, range(4))
    w.restart()
    configmaps = w.op.runs.logs.configmaps
    assert configmaps.kept_bytes(NS) == 400 and len(configmaps.queue) == 0  # no budget: nothing queued
    w.op = type(w.op)(api=w.api)
    w.op.runs.logs.configmaps.budget = 100
    w.api.relist(w.op.cache)  # listed afresh, under a budget of 100 bytes
    assert len(w.op.runs.logs.configmaps.queue) == 1
    evict(w)
    assert [kept(w, f"r{i}-1") is not None for i in range(4)] == [False, False, False, True]


def test_the_budget_is_per_namespace():
    api, cache = FakeApi(), Cache()
    logs = ConfigMapLogs(cache, api)
    logs.budget = 150
    for ns, n in (("a", 2), ("b", 1)):
        for i in range(n):
            api.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                "name": f"r{i}-1-log", "namespace": ns, "labels": {LABEL_MANAGED_BY: MANAGER, LABEL_ATTEMPT: "1"},
                "annotations": {ANNOTATION_BYTES: "100"}}, "data": {LOG_KEY: "x" * 100}})
    api.deliver(cache)
    assert (logs.kept_bytes("a"), logs.kept_bytes("b")) == (200, 100) and len(logs.queue) == 1  # "a" only
    asyncio.run(logs.evict("a"))
    asyncio.run(logs.evict("b"))
    api.deliver(cache)
    assert [a for f, a in api.calls if f == "delete"] == [("configmaps", "r0-1-log")]
    assert (logs.kept_bytes("a"), logs.kept_bytes("b")) == (100, 100)
    assert sample("kubetasks_kept_log_bytes", "a") == 100 and sample("kubetasks_kept_logs", "b") == 1
