"""core.status_trust: a run's status that the operator did not write is not believed (issue 18 item 2)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, strategies as st

from kubetasks.core.naming import LABEL_ATTEMPT
from kubetasks.core.observe import JOB_UID_LABEL
from kubetasks.core.status_trust import GUARDED, judge_status

UID = "u-1"


def job(attempt: int, state: str = "active", owner: str = UID) -> dict[str, Any]:
    conditions = {"active": [], "succeeded": [{"type": "Complete", "status": "True"}],
                  "failed": [{"type": "Failed", "status": "True"}]}[state]
    return {"metadata": {"name": f"r-{attempt}", "labels": {LABEL_ATTEMPT: str(attempt)},
                         "ownerReferences": [{"controller": True, "uid": owner}]},
            "status": {"conditions": conditions}}


RUNNING = {"phase": "Running", "attempt": 1, "attempts": [{"attempt": 1, "jobName": "r-1"}],
           "startTime": "2026-01-01T00:00:00Z"}
FORGED = {**RUNNING, "phase": "Succeeded", "result": {"forged": True}, "completionTime": "2026-01-01T00:01:00Z"}


def test_the_status_the_operator_wrote_is_believed():
    assert judge_status(RUNNING, RUNNING, UID, [job(1)]) is None
    # Fields it does not decide from (conditions, say) may differ: not a forgery.
    assert judge_status({**RUNNING, "conditions": [{"type": "X"}]}, RUNNING, UID, [job(1)]) is None


def test_a_change_to_what_it_wrote_is_undone_and_named():
    forged = judge_status(FORGED, RUNNING, UID, [job(1)])
    assert forged is not None and forged.status == RUNNING
    assert "status.phase, status.result changed by someone other than the kubetasks operator" in forged.message
    assert "phase Running, attempt 1" in forged.message and "spec.cancel" in forged.message


def test_with_nothing_in_memory_a_success_the_jobs_deny_is_dropped():
    forged = judge_status(FORGED, None, UID, [job(1)])
    assert forged is not None and "Job of attempt 1 is still running" in forged.message
    assert forged.status["phase"] == "Running" and forged.status["attempt"] == 1
    assert not {"result", "completionTime", "conditions"} & set(forged.status)
    assert forged.status["startTime"] == RUNNING["startTime"]  # what it did not claim is kept

    failed = judge_status(FORGED, None, UID, [job(1, "failed")])
    assert failed is not None and "Job of attempt 1 failed" in failed.message

    later = judge_status(FORGED, None, UID, [job(1, "succeeded"), job(2)])
    assert later is not None and "Job of attempt 2 is still running" in later.message


def test_a_success_before_any_attempt_is_dropped():
    # A Delayed run patched to Succeeded: it must still run.
    forged = judge_status({"phase": "Succeeded", "result": 1}, None, UID, [])
    assert forged is not None and forged.status == {"phase": "Pending", "attempt": 0}
    assert "no attempt has run" in forged.message


def test_with_nothing_in_memory_what_the_jobs_confirm_or_cannot_tell_is_believed():
    done = {**FORGED, "result": 42}
    assert judge_status(done, None, UID, [job(1, "succeeded")]) is None
    assert judge_status(done, None, UID, []) is None  # its Jobs are gone: nothing says otherwise
    assert judge_status(done, None, UID, [job(1, owner="someone-else")]) is None  # not the run's Job
    # Other outcomes are the operator's decisions as a Job goes: Cancelled, TimedOut, a failed start.
    assert judge_status({**RUNNING, "phase": "Cancelled"}, None, UID, [job(1)]) is None
    assert judge_status(None, None, UID, []) is None


def test_a_success_its_pod_confirms_before_its_job_does_is_believed():
    """The operator writes Succeeded from the attempt's succeeded pod, a second or more before the
    Job says Complete (core.observe.succeeded_pod): a restart in between must not undo it."""
    done = {**FORGED, "result": 42}
    pod = {"metadata": {"labels": {JOB_UID_LABEL: "job-uid"}}, "status": {"phase": "Succeeded"}}
    running = job(1)
    running["metadata"]["uid"] = "job-uid"
    assert judge_status(done, None, UID, [running], lambda j: [pod]) is None
    # a pod still running, or one of another Job of that name, confirms nothing
    assert judge_status(done, None, UID, [running], lambda j: [{**pod, "status": {"phase": "Running"}}]) is not None
    other = {**pod, "metadata": {"labels": {JOB_UID_LABEL: "old-job-uid"}}}
    assert judge_status(done, None, UID, [running], lambda j: [other]) is not None


statuses = st.fixed_dictionaries({}, optional={
    "phase": st.sampled_from(["Pending", "Delayed", "Running", "Retrying", "Succeeded", "Failed", "Cancelled"]),
    "attempt": st.integers(0, 5), "result": st.none() | st.integers() | st.text(max_size=3),
    "error": st.none() | st.fixed_dictionaries({"type": st.just("X"), "message": st.text(max_size=3)}),
    "attempts": st.lists(st.fixed_dictionaries({"attempt": st.integers(1, 5)}), max_size=2),
    "duration": st.none() | st.just("1s")})


@given(statuses, statuses)
def test_a_status_is_believed_exactly_when_what_it_decides_from_is_what_the_operator_wrote(seen, written):
    forged = judge_status(seen, written, UID, [job(1)])
    same = all(seen.get(f) == written.get(f) for f in GUARDED)
    assert (forged is None) == same
    if forged is not None:
        assert forged.status == written
