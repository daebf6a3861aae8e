"""core.start_check: when an attempt that has not started has its pods read, and what is blamed."""

from datetime import datetime, timedelta, timezone

import pytest

from kubetasks.core.observe import NEVER_STARTED, StartProblem
from kubetasks.core.start_check import (
    EVENTS_AFTER, START_CHECK, START_CHECK_EVERY, Look, Reads, StartCheck, judge_start, look_again, more_reads,
    plan_start_check,
)

MADE = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)  # the Job's creation
DEADLINE_S = 300.0
DEADLINE = MADE + timedelta(seconds=DEADLINE_S)
PULL = StartProblem("ImagePullBackOff", "Back-off pulling image")


def job(**status):
    return {"metadata": {"name": "r-1", "creationTimestamp": MADE.isoformat()}, "status": status}


PODS_MADE = {"startTime": (MADE + timedelta(seconds=1)).isoformat()}


def at(seconds: float) -> datetime:
    return MADE + timedelta(seconds=seconds)


def waiting(reason: str, message: str = "") -> dict:
    return {"status": {"containerStatuses": [{"name": "task", "state": {"waiting": {"reason": reason,
                                                                                    "message": message}}}]}}


RUNNING = {"status": {"containerStatuses": [{"name": "task", "state": {"running": {}}}]}}


# (case, now (s after MADE), Job, max duration, last look, shown) -> expected
CASES = [
    ("no Job: nothing to wait for", 5, None, None, None, None,
     StartCheck(started=True)),
    ("a ready pod: started", 30, job(ready=1, **PODS_MADE), None, Look(at(25), PULL), None,
     StartCheck(started=True)),
    ("ending: what was seen stands, nothing to schedule", 400, job(failed=1, **PODS_MADE), None, Look(at(310), PULL), None,
     StartCheck(problem=PULL)),
    ("ending after a restart: the status remembers", 400, job(failed=1, **PODS_MADE), None, None, PULL,
     StartCheck(problem=PULL)),
    ("ending, last seen on its way: maxDuration ended a start", 12, job(failed=1, **PODS_MADE), 8.0,
     Look(at(6), None), None, StartCheck(problem=NEVER_STARTED)),
    ("ending, last seen running: nothing to blame", 12, job(failed=1, **PODS_MADE), 8.0,
     Look(at(6), None, ran=True), None, StartCheck()),
    ("no pods made yet: nothing to blame, look again in a minute", 5, job(), None, None, None,
     StartCheck(again=at(5 + START_CHECK_EVERY))),
    ("pods just made: look START_CHECK after they were", 5, job(**PODS_MADE), None, None, None,
     StartCheck(deadline=DEADLINE, again=at(1 + START_CHECK))),
    ("a short maxDuration looks at half of it", 2, job(**PODS_MADE), 6.0, None, None,
     StartCheck(deadline=DEADLINE, again=at(4), first=3.0)),
    ("first look due: read the pods", 25, job(**PODS_MADE), None, None, None,
     StartCheck(deadline=DEADLINE, read_pods=True)),
    ("on its way, looked lately: again at half the first wait", 25, job(**PODS_MADE), None, Look(at(22), None), None,
     StartCheck(deadline=DEADLINE, again=at(22 + START_CHECK / 2))),
    ("a problem known: again a minute after the last look", 100, job(**PODS_MADE), None, Look(at(90), PULL), None,
     StartCheck(problem=PULL, deadline=DEADLINE, again=at(90 + START_CHECK_EVERY))),
    ("never past the deadline while it is ahead", 280, job(**PODS_MADE), None, Look(at(270), PULL), None,
     StartCheck(problem=PULL, deadline=DEADLINE, again=DEADLINE)),
    ("at the deadline, last looked before it, nothing known: look once more", 301, job(**PODS_MADE), None,
     Look(at(295), None), None, StartCheck(deadline=DEADLINE, read_pods=True)),
    ("past the deadline, looked after it: what was seen holds a while", 305, job(**PODS_MADE), None,
     Look(at(302), None), None, StartCheck(deadline=DEADLINE, again=at(302 + START_CHECK / 2))),
    ("past the deadline with a problem known: no hot loop", 301, job(**PODS_MADE), None, Look(at(295), PULL), None,
     StartCheck(problem=PULL, deadline=DEADLINE, again=at(295 + START_CHECK_EVERY))),
]


@pytest.mark.parametrize("case, now, job_, max_duration, last, shown, expected", CASES, ids=[c[0] for c in CASES])
def test_plan_start_check(case, now, job_, max_duration, last, shown, expected):
    check = plan_start_check(at(now), job_, DEADLINE_S, max_duration, last, shown)
    assert check == expected
    assert check.again is None or check.again > at(now)  # never the past: a re-queue at once would spin


def test_a_time_to_look_again_is_never_the_past_nor_after_a_deadline_ahead():
    now = at(100)
    assert look_again(now, at(50), DEADLINE) == now + timedelta(seconds=1)
    assert look_again(now, at(1000), DEADLINE) == DEADLINE
    assert look_again(at(400), at(1000), DEADLINE) == at(1000)  # past the deadline, no cap
    assert look_again(now, at(1000), None) == at(1000)


DUE = StartCheck(deadline=DEADLINE, read_pods=True)


def test_no_pod_at_all_is_the_job_controllers_refusal():
    look, again = judge_start(at(25), DUE, [], "r-1", None, None)
    assert look.seen.reason == "PodNotCreated" and "kubectl describe job r-1" in look.seen.message
    # Its Event (a missing ServiceAccount would fail it at once) may be late: looked at again soon.
    assert look.soon and again == at(25 + START_CHECK / 2)
    assert plan_start_check(at(30), job(**PODS_MADE), DEADLINE_S, None, look, None).again == again
    quota = {"type": "Warning", "reason": "FailedCreate", "message": "exceeded quota", "lastTimestamp": at(3).isoformat()}
    look, again = judge_start(at(25), DUE, [], "r-1", None, None, [quota])
    assert not look.soon and "exceeded quota" in look.seen.message and again == at(25 + START_CHECK_EVERY)


def test_a_waiting_reason_is_the_problem_and_is_looked_at_each_minute():
    look, again = judge_start(at(25), DUE, [waiting("ImagePullBackOff", "Back-off")], "r-1", None, None)
    assert look == Look(at(25), StartProblem("ImagePullBackOff", "Back-off")) and again == at(85)


def test_a_container_on_its_way_is_no_problem_before_the_deadline_and_looked_at_soon():
    look, again = judge_start(at(25), DUE, [waiting("ContainerCreating")], "r-1", None, None)
    assert look.seen is None and again == at(25 + START_CHECK / 2)


def test_a_container_still_on_its_way_at_the_deadline_never_started():
    look, again = judge_start(at(301), DUE, [waiting("ContainerCreating")], "r-1", Look(at(295), None), None)
    assert look.seen == NEVER_STARTED and again > at(301)


def test_a_started_container_clears_what_was_seen():
    look, _ = judge_start(at(60), DUE, [RUNNING], "r-1", Look(at(30), PULL), PULL)
    assert look.seen is None


def test_after_a_restart_the_status_remembers_while_the_pods_say_nothing_new():
    look, _ = judge_start(at(60), DUE, [waiting("ContainerCreating")], "r-1", None, PULL)
    assert look.seen == PULL


def pod_made(seconds: float, pod: dict) -> dict:
    return {**pod, "metadata": {"uid": "pod-uid", "creationTimestamp": at(seconds).isoformat()}}


JOB = {"metadata": {"name": "r-1", "uid": "job-uid"}}


def test_events_are_read_for_a_job_without_pods_or_a_pod_long_on_its_way():
    # No pod: the Job's FailedCreate says why, and the Task's ServiceAccount is looked up.
    assert more_reads(at(25), DUE, JOB, [], "robot") == Reads("involvedObject.uid=job-uid", "robot")
    assert more_reads(at(25), DUE, JOB, [], None) == Reads("involvedObject.uid=job-uid")
    on_its_way = pod_made(1, waiting("ContainerCreating"))
    assert more_reads(at(25), DUE, JOB, [on_its_way], "robot") == Reads()  # young: kubelet is at it
    pod_events = Reads("involvedObject.uid=pod-uid")
    assert more_reads(at(1 + EVENTS_AFTER * START_CHECK), DUE, JOB, [on_its_way], None) == pod_events
    assert more_reads(at(301), DUE, JOB, [pod_made(290, waiting("ContainerCreating"))], None) == pod_events
    # Its status says it all: no read.
    assert more_reads(at(100), DUE, JOB, [pod_made(1, waiting("ImagePullBackOff"))], None) == Reads()
    assert more_reads(at(100), DUE, JOB, [pod_made(1, RUNNING)], None) == Reads()


SANDBOX = {"type": "Warning", "reason": "FailedCreatePodSandBox", "lastTimestamp": at(5).isoformat(),
           "message": "Failed to create pod sandbox: container init was OOM-killed (memory limit too low?)"}


def test_a_sandbox_that_cannot_be_made_is_named_from_the_pods_events_not_never_started():
    look, _ = judge_start(at(45), DUE, [waiting("ContainerCreating")], "r-1", None, None, [SANDBOX])
    assert look.seen.reason == "FailedCreatePodSandBox" and "memory limit too low" in look.seen.message
    look, _ = judge_start(at(301), DUE, [waiting("ContainerCreating")], "r-1", Look(at(295), None), None, [SANDBOX])
    assert look.seen.reason == "FailedCreatePodSandBox"  # at the deadline too, not NotStarted


def test_a_job_refused_a_pod_for_a_missing_service_account_is_a_permanent_problem():
    said = {"type": "Warning", "reason": "FailedCreate", "lastTimestamp": at(3).isoformat(),
            "message": 'Error creating: pods "r-1-" is forbidden: error looking up service account ns/robot: '
                       'serviceaccount "robot" not found'}
    look, _ = judge_start(at(25), DUE, [], "r-1", None, None, [said])
    assert look.seen.reason == "PodNotCreated" and look.seen.permanent and "'robot'" in look.seen.message


def test_a_missing_service_account_found_by_looking_needs_no_event():
    look, again = judge_start(at(25), DUE, [], "r-1", None, None, [], "robot")
    assert look.seen.permanent and look.seen.message.startswith("ServiceAccount 'robot' does not exist")
    assert not look.soon


def test_a_look_remembers_whether_the_container_had_started():
    assert judge_start(at(25), DUE, [RUNNING], "r-1", None, None)[0].ran
    assert not judge_start(at(25), DUE, [waiting("ContainerCreating")], "r-1", None, None)[0].ran
