"""Reading an attempt off its Job and pods: what keeps a container from starting."""

from datetime import datetime, timezone

from kubetasks.api import StepRecord
from kubetasks.core.observe import (
    JOB_UID_LABEL, event_problem, job_ending, job_ready, observe_attempt, pod_not_created, same_problem,
    slept_by_checkpoint, start_problem, succeeded_pod,
)
from kubetasks.protocol import Report


def pod(*, waiting: str | None = None, running: bool = False, scheduled: tuple[str, str] | None = None) -> dict:
    status: dict = {"phase": "Running" if running else "Pending"}
    if waiting or running:
        state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}} if running else {
            "waiting": {"reason": waiting, "message": f"{waiting} happened"}}
        status["containerStatuses"] = [{"name": "task", "state": state}]
    if scheduled:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": scheduled[0], "message": scheduled[1]}]
    return {"status": status}


def test_waiting_reasons_and_unschedulable_pods_are_start_problems():
    assert start_problem([pod(waiting="ImagePullBackOff")]).reason == "ImagePullBackOff"
    assert start_problem([pod(waiting="CreateContainerConfigError")]).message == "CreateContainerConfigError happened"
    problem = start_problem([pod(scheduled=("Unschedulable", "0/3 nodes are available: 3 Insufficient cpu."))])
    assert (problem.reason, problem.message) == ("Unschedulable", "0/3 nodes are available: 3 Insufficient cpu.")
    assert start_problem([pod(waiting="Err Image: Pull!")]).reason == "ErrImagePull"  # a reason a condition can carry


def test_a_container_on_its_way_or_started_is_no_problem():
    assert start_problem([]) is None
    assert start_problem([pod(waiting="ContainerCreating")]) is None
    assert start_problem([pod(running=True)]) is None
    assert start_problem([pod(waiting="ImagePullBackOff"), pod(running=True)]) is None  # another pod ran


def test_an_attempt_killed_by_its_deadline_before_it_started_fails_with_why_not_timed_out():
    job = {"metadata": {"name": "r-1", "labels": {"kubetasks.io/attempt": "1"}},
           "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                      "lastTransitionTime": "2026-01-01T00:05:00Z"}]}}
    never = observe_attempt(job, [pod(waiting="ImagePullBackOff")])
    assert (never.state, never.reason) == ("failed", "ImagePullBackOff")
    ran = observe_attempt(job, [pod(running=True)])
    assert (ran.state, ran.reason) == ("timed_out", "DeadlineExceeded")


def test_a_job_has_started_once_a_pod_is_ready_or_succeeded():
    assert not job_ready({"status": {"active": 1}})
    assert job_ready({"status": {"active": 1, "ready": 1}})
    assert job_ready({"status": {"succeeded": 1}})
    assert not job_ready({"status": {"failed": 1, "conditions": [{"type": "FailureTarget", "status": "True"}]}})


def test_a_container_killed_before_it_ran_never_started():
    killed = {"status": {"containerStatuses": [{"name": "task", "state": {"terminated": {
        "exitCode": 137, "reason": "ContainerStatusUnknown"}}}]}}
    job = {"metadata": {"name": "r-1", "labels": {"kubetasks.io/attempt": "1"}},
           "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                      "lastTransitionTime": "2026-01-01T00:05:00Z"}]}}
    never = observe_attempt(job, [killed])
    assert (never.state, never.reason, never.exit_code) == ("failed", "NotStarted", None)  # 137 was the kubelet's


def test_a_job_past_its_deadline_is_ending_and_its_pods_say_nothing_of_a_start():
    assert job_ending({"status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}})
    assert job_ending({"status": {"failed": 1}})
    assert not job_ending({"status": {"active": 1}})


def test_a_completed_attempt_without_its_report_slept_when_the_checkpoint_says_a_sleep_it_began_is_pending():
    job = {"metadata": {"name": "r-2", "labels": {"kubetasks.io/attempt": "2"}},
           "status": {"startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:05Z",
                      "conditions": [{"type": "Complete", "status": "True"}]}}
    gone = observe_attempt(job, [])  # the pod was garbage-collected before it was read
    assert (gone.state, gone.report) == ("succeeded", None)
    wake = datetime(2026, 1, 1, 1, tzinfo=timezone.utc)
    done = StepRecord(name="fetch", attempt=1, completed_at=datetime(2025, 12, 31, tzinfo=timezone.utc))
    pending = StepRecord(name="nap", attempt=1, wake_at=wake)  # begun by attempt 1, woken early in 2: slept again
    slept = slept_by_checkpoint(gone, [done, pending])
    assert (slept.state, slept.report.outcome, slept.report.wake_at) == ("sleeping", "sleeping", wake)
    # A pending sleep that woke before this attempt started is not this attempt's: it was skipped.
    skipped = StepRecord(name="nap", attempt=1, wake_at=datetime(2025, 12, 31, 23, tzinfo=timezone.utc))
    assert slept_by_checkpoint(gone, [done, skipped]) is gone
    assert slept_by_checkpoint(gone, None) is gone and slept_by_checkpoint(gone, []) is gone
    # Another attempt followed it: a success would have ended the run, so it slept, its sleep since over.
    assert slept_by_checkpoint(gone, [done], followed=True).state == "sleeping"
    # What the termination message says, when it was read, stands.
    reported = observe_attempt(job, [{"status": {"containerStatuses": [{"name": "task", "state": {"terminated": {
        "exitCode": 0, "message": Report("succeeded", result=1).encode()}}}]}}])
    assert slept_by_checkpoint(reported, [pending]) is reported


def event(reason: str, message: str, at: str, type_: str = "Warning") -> dict:
    return {"type": type_, "reason": reason, "message": message, "lastTimestamp": at}


def test_only_a_bad_image_name_or_a_never_pulled_missing_image_is_permanent():
    """The table (README): what no wait and no retry can mend fails at once; the rest may heal."""
    assert start_problem([pod(waiting="InvalidImageName")]).permanent
    assert start_problem([pod(waiting="ErrImageNeverPull")]).permanent
    for healable in ("ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"):
        assert not start_problem([pod(waiting=healable)]).permanent, healable
    assert not start_problem([pod(scheduled=("Unschedulable", "0/3 nodes are available"))]).permanent


def test_a_missing_service_account_is_named_and_permanent_other_refusals_may_heal():
    said = ('Error creating: pods "r-1-x" is forbidden: error looking up service account ns/robot: '
            'serviceaccount "robot" not found')
    problem = pod_not_created("r-1", [event("FailedCreate", said, "2026-01-01T00:00:05Z")])
    assert problem.reason == "PodNotCreated" and problem.permanent
    assert problem.message.startswith("ServiceAccount 'robot' does not exist") and said in problem.message
    quota = pod_not_created("r-1", [event("FailedCreate", "exceeded quota: compute", "2026-01-01T00:00:05Z")])
    assert not quota.permanent and "exceeded quota" in quota.message
    unknown = pod_not_created("r-1", [])
    assert not unknown.permanent and "kubectl describe job r-1" in unknown.message


def test_a_pods_newest_warning_names_what_its_status_does_not():
    events = [event("FailedScheduling", "0/3 nodes are available", "2026-01-01T00:00:09Z"),  # said by PodScheduled
              event("Scheduled", "assigned", "2026-01-01T00:00:02Z", "Normal"),
              event("MissingClusterDNS", "falling back to Default", "2026-01-01T00:00:10Z"),  # it starts anyway
              event("FailedCreatePodSandBox", "old", "2026-01-01T00:00:03Z"),
              event("FailedCreatePodSandBox", "failed to create containerd task: OOM", "2026-01-01T00:00:08Z")]
    problem = event_problem(events)
    assert (problem.reason, problem.message) == ("FailedCreatePodSandBox", "failed to create containerd task: OOM")
    assert not problem.permanent
    assert event_problem([event("Scheduled", "assigned", "2026-01-01T00:00:02Z", "Normal")]) is None


def test_a_pull_error_and_its_back_off_are_one_problem_for_a_retry():
    assert same_problem("ErrImagePull", "ImagePullBackOff") and same_problem("Unschedulable", "Unschedulable")
    assert not same_problem("Unschedulable", "ImagePullBackOff") and not same_problem(None, "Unschedulable")


def test_an_attempt_that_reported_a_wait_or_left_one_in_its_checkpoint_waits():
    job = {"metadata": {"name": "r-1", "labels": {"kubetasks.io/attempt": "1"}},
           "status": {"startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:05Z",
                      "conditions": [{"type": "Complete", "status": "True"}]}}
    runtime_pod = {"spec": {"containers": [{"name": "task", "command": ["python", "-m", "kubetasks.runtime"]}]},
                   "status": {"containerStatuses": [{"name": "task", "state": {"terminated": {
                       "exitCode": 0, "message": Report("waiting").encode()}}}]}}
    assert observe_attempt(job, [runtime_pod]).state == "waiting"
    gone = observe_attempt(job, [])
    mine = StepRecord(name="fan-out", attempt=1, waiting_on=["a", "b"])
    assert slept_by_checkpoint(gone, [mine]).state == "waiting"
    theirs = StepRecord(name="fan-out", attempt=0, waiting_on=["a"])  # left pending by another attempt
    done = StepRecord(name="fan-out", attempt=1, waiting_on=None,
                      completed_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert slept_by_checkpoint(gone, [theirs, done]) is gone


def ended_pod(job_uid: str, phase: str = "Succeeded", exit_code: int = 0, message: str = "") -> dict:
    return {"metadata": {"name": "r-1-abcde", "labels": {"job-name": "r-1", JOB_UID_LABEL: job_uid}},
            "spec": {"containers": [{"name": "task", "command": ["python3", "-c", "print(1)"]}]},
            "status": {"phase": phase, "containerStatuses": [{"name": "task", "state": {"terminated": {
                "exitCode": exit_code, "message": message, "startedAt": "2026-01-01T00:00:01Z",
                "finishedAt": "2026-01-01T00:00:03Z"}}}]}}


def test_a_pod_that_succeeded_ends_its_attempt_before_the_job_says_so():
    """One pod, backoffLimit 0: the pod's success is the attempt's, a second or more before the
    Job controller writes Complete. Only the Job's own pod, by uid, counts."""
    job = {"metadata": {"name": "r-1", "uid": "job-uid", "labels": {"kubetasks.io/attempt": "1"}},
           "status": {"active": 1, "startTime": "2026-01-01T00:00:00Z"}}
    done = observe_attempt(job, [ended_pod("job-uid", message='{"n": 1}')])
    assert (done.state, done.reason, done.exit_code) == ("succeeded", "Completed", 0)
    assert done.completion_time == datetime(2026, 1, 1, 0, 0, 3, tzinfo=timezone.utc)  # the container's end
    assert done.report == Report(outcome="succeeded", result={"n": 1})  # a plain command's result, as from a Complete Job
    assert succeeded_pod(job, [ended_pod("job-uid")]) is not None
    # a pod of a deleted Job of the same name, a failed pod, a pod with no uid label: the Job decides
    assert observe_attempt(job, [ended_pod("old-job-uid")]).state == "active"
    assert observe_attempt(job, [ended_pod("job-uid", phase="Failed", exit_code=1)]).state == "active"
    unlabelled = ended_pod("job-uid")
    unlabelled["metadata"]["labels"].pop(JOB_UID_LABEL)
    assert observe_attempt(job, [unlabelled]).state == "active"
    # the Job's own end, when it has one, is what counts
    failed = {**job, "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                                "lastTransitionTime": "2026-01-01T00:05:00Z"}]}}
    assert observe_attempt(failed, [ended_pod("job-uid")]).state == "timed_out"
