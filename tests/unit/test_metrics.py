"""Which attempts a status change finished: each is observed once, however often it is reconciled."""

from datetime import datetime, timedelta, timezone

from kubetasks.api.taskrun import TaskRunStatus
from kubetasks.controller.metrics import newly_finished

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def status(*attempts):
    return TaskRunStatus.model_validate({"attempts": [
        {"attempt": n, "jobName": f"r-{n}", "startTime": T0.isoformat(),
         **({"completionTime": (T0 + timedelta(seconds=n)).isoformat(), "reason": reason} if reason else {})}
        for n, reason in attempts]})


def test_only_attempts_that_just_completed_count():
    running = status((1, None))
    failed = status((1, "Error"))
    retrying = status((1, "Error"), (2, None))
    done = status((1, "Error"), (2, "Succeeded"))
    assert newly_finished({}, running) == []
    assert [a.attempt for a in newly_finished(running.to_api(), failed)] == [1]
    assert newly_finished(failed.to_api(), retrying) == []
    assert [a.attempt for a in newly_finished(retrying.to_api(), done)] == [2]
    assert newly_finished(done.to_api(), done) == []
