"""Results and logs with the cluster's SeaweedFS out of reach for 60 s while runs finish (issue 20):
no run is lost, the uploads are tried again (a result's PUT from its pod, an attempt's log from the
operator), and the outcomes wait for them.

The store is the real S3 server, reached by an operator of this module (and so, through its
presigned URLs, by its task pods) through test_log_archive's relay, which "down" cuts: every
connection closed and new ones refused, as a crashed server's would, while SeaweedFS stays up for
the other sessions sharing it. A store down past the limit is test_log_archive's case; the pod's
own give-up (3 minutes), tests/unit/test_result_upload_retries.py's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import kubectl, apply, wait_until, holds_until
from tests.integration.test_large_results import EXAMPLES, expected
from tests.integration.test_large_results import task as sdk_task
from tests.integration.test_log_archive import SMALL, Archiver, archiver, condition, logs, reader, status
from tests.integration.test_taskruns import task, taskrun

pytestmark = [pytest.mark.cluster, pytest.mark.faults]
OUTAGE = 60  # seconds
RESULT = 100_000  # bytes: above the store's threshold (64 KiB), so the result goes to the store


@pytest.fixture
def patient(crds: None, tmp_path: Path) -> Iterator[Archiver]:
    yield from archiver(tmp_path, 300, "s3")


def ended(namespace: str, s: dict[str, Any]) -> float:
    """When the run's attempt's container ended, on this process's monotonic clock."""
    from datetime import datetime, timezone

    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"job-name={s['attempts'][0]['jobName']}",
                              "-o", "json"))["items"]
    finished_at = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
    at = datetime.fromisoformat(finished_at.replace("Z", "+00:00"))
    return time.monotonic() - (datetime.now(timezone.utc) - at).total_seconds()


def held(s: dict[str, Any]) -> bool:
    """Not finished: waiting for its pod's upload (Running) or for its log's (LogArchived=Unknown)."""
    return s.get("phase") not in ("Succeeded", "Failed", "TimedOut", "Cancelled")


def test_the_store_down_60_s_while_runs_finish_loses_no_run(namespace, patient, tmp_path):
    results = [f"result-{i}" for i in range(3)]  # 100 KB results: PUT by their pods to the store
    quiet = [f"quiet-{i}" for i in range(3)]  # inline results: their logs wait for the operator's upload
    names = results + quiet
    # The result pods keep running through the outage, retrying their PUTs: at the smallest machine,
    # so that the three leave room on the one real node for the other worker's tests meanwhile.
    apply([sdk_task("big", f"{EXAMPLES}:big", machine={"preset": "micro"}), task("quiet", SMALL)], namespace,
          instance=patient.instance)
    patient.down()
    try:
        down_at = time.monotonic()
        apply([taskrun(n, "big", payload={"bytes": RESULT}) for n in results] +
              [taskrun(n, "quiet") for n in quiet], namespace, instance=patient.instance)

        def quiet_held() -> bool:
            return all(condition(status(namespace, n), "LogArchived").get("status") == "Unknown" and "store failed"
                       in condition(status(namespace, n), "LogArchived").get("message", "") for n in quiet)
        wait_until("the quiet runs' outcomes held, their log uploads failing", quiet_held, timeout=OUTAGE - 10)
        def all_held() -> None:
            for n in names:
                s = status(namespace, n)
                assert held(s), (n, s)
        holds_until(down_at + OUTAGE, all_held)  # down 60 s: no outcome may be written meanwhile
        for n in quiet:
            print(f"{n}: {condition(status(namespace, n), 'LogArchived')['message']}")
    finally:
        patient.up()
    up_at = time.monotonic()
    want = expected(RESULT)
    seen: dict[str, float] = {}  # seconds after the store came back that each run's outcome was seen

    def all_finished() -> bool:
        for n in set(names) - set(seen):
            if status(namespace, n).get("phase") in ("Succeeded", "Failed", "TimedOut"):
                seen[n] = time.monotonic() - up_at
        return len(seen) == len(names)
    wait_until("every run finished", all_finished, timeout=240, interval=1)
    for n in names:
        s = status(namespace, n)
        assert s["phase"] == "Succeeded", (n, s)
        assert condition(s, "LogArchived")["status"] == "True" and s["attempts"][0].get("log"), (n, s)
        assert len(s["attempts"]) == 1, (n, s)  # retried uploads, not attempts
        if n in results:
            ref = s["resultRef"]
            assert ref["uri"].startswith("s3://") and f"/{patient.instance}/runs/" in ref["uri"], ref
            assert (ref["size"], ref["sha256"]) == (want["size"], want["sha256"]), ref
        print(f"{n}: Succeeded {seen[n]:.0f} s after the store came back; its pod ended "
              f"{ended(namespace, s) - down_at - OUTAGE:+.0f} s after")
    print(f"all {len(names)} runs Succeeded {time.monotonic() - up_at:.1f} s after the store came back")
    # The results' bytes are the ones written (read and checked by sha256), the logs readable.
    from kubetasks.api.storage import BlobRef
    from kubetasks.blobs import from_env
    from tests.conftest import cluster_store_env

    store = from_env(cluster_store_env(patient.instance))
    assert store is not None
    for n in results:
        text = store.get(BlobRef.model_validate(status(namespace, n)["resultRef"]))
        assert len(text) == RESULT
    out = tmp_path / "quiet-0.log"
    done = logs(namespace, "quiet-0", patient.url, reader(namespace, tmp_path), out)
    assert done.returncode == 0 and out.read_text() == "line 0\nline 1\nline 2\n", done.stderr
