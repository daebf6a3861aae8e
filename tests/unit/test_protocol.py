"""The termination message is written by the task: whatever it holds, the operator reads it."""

import json
from datetime import timezone

from hypothesis import given, strategies as st

from kubetasks.core.observe import observe_attempt
from kubetasks.protocol import OUTCOMES, RUNTIME_COMMAND, Report

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=20)
FIELDS = st.fixed_dictionaries({"kubetasks": st.just(1)}, optional={
    "outcome": JSON | st.sampled_from(OUTCOMES), "result": JSON,
    "error": JSON | st.fixed_dictionaries({}, optional={"type": JSON, "message": JSON, "traceback": JSON}),
    "wakeAt": JSON | st.sampled_from(["2030-01-01T00:00:00", "2030-01-01T00:00:00+02:00", "tomorrow"])})


def failed_job_with(message: str) -> tuple[dict, list[dict]]:
    job = {"metadata": {"name": "r-1", "labels": {"kubetasks.io/attempt": "1"}},
           "status": {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
    pod = {"spec": {"containers": [{"name": "task", "command": RUNTIME_COMMAND}]},  # the runtime's pod
           "status": {"containerStatuses": [{"name": "task", "state": {"terminated": {
        "exitCode": 1, "reason": "Error", "message": message, "finishedAt": "2026-01-01T00:00:00Z"}}}]}}
    return job, [pod]


@given(FIELDS | JSON)
def test_a_forged_termination_message_never_breaks_the_reading(body: object) -> None:
    text = json.dumps(body)
    report = Report.decode(text)
    if report is not None:
        assert report.outcome in OUTCOMES
        assert report.wake_at is None or report.wake_at.tzinfo is not None
        assert all(v is None or isinstance(v, str) for v in (report.error_type, report.error_message, report.traceback))
    obs = observe_attempt(*failed_job_with(text))
    assert obs.state == "failed" and obs.exit_code == 1


def test_what_can_be_understood_is_kept() -> None:
    report = Report.decode('{"kubetasks": 1, "outcome": "sleeping", "wakeAt": "2030-01-01T00:00:00"}')
    assert report is not None and report.outcome == "sleeping"
    assert report.wake_at is not None and report.wake_at.tzinfo == timezone.utc
    forged = Report.decode('{"kubetasks": 1, "outcome": "won", "error": "not an object", "wakeAt": 5}')
    assert forged is not None and (forged.outcome, forged.error_message, forged.wake_at) == ("failed", None, None)


def test_a_sleep_without_a_valid_wake_time_or_a_failure_that_exits_0_is_an_invalid_report() -> None:
    report = Report.decode('{"kubetasks": 1, "outcome": "sleeping", "wakeAt": "soon"}')
    assert report is not None and (report.outcome, report.error_type) == ("failed", "InvalidReport")
    job, pods = failed_job_with('{"kubetasks": 1, "outcome": "sleeping", "wakeAt": "soon"}')
    job["status"]["conditions"][0]["type"] = "Complete"  # it exited 0
    obs = observe_attempt(job, pods)
    assert (obs.state, obs.reason) == ("failed", "InvalidReport")
