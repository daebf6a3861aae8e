"""Keeping an attempt's log after its pod is gone: the pure parts (core.logs, naming) and the
run reconciler against the fake API (once per attempt, not again after a restart, never at the
run's expense)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kubetasks import kube
from kubetasks.api.taskrun import TaskRun
from kubetasks.core.logs import (
    ANNOTATION_BYTES, ANNOTATION_POD, ANNOTATION_TRUNCATED, LOG_KEY, keep_tail, kept_log, last_pod, lines_to_fill,
    log_tail, log_window, read_again, render_attempt_log,
)
from kubetasks.core.naming import LABEL_ATTEMPT, LABEL_RUN_UID, attempt_log_name, job_name
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
    assert len(calls(w, "read_log")) == reads and calls(w, "get")[-1] == ("configmaps", "r-1-log")


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
    assert not calls(w, "read_log") and not calls(w, "list_pods")  # a plain command's success: nothing read
