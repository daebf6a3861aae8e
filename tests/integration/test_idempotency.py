"""Idempotency keys on the real cluster: one run for callers racing with a key, a key released by a
run that failed or by its TTL, and held by one that succeeded.

Each run's result carries a nonce its pod made, so "the same result" means "from the same run";
runs and Jobs are counted with watches (every one ever created), not a final list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from kubetasks.api.times import parse_time
from kubetasks.core.naming import idempotent_run_name, successor_run_name
from kubetasks.runtime import RunFailed, trigger, trigger_and_wait
from tests.conftest import REPO, apply, get, wait_until
from tests.integration.test_flow_control import RunTimeline, Timeline
from tests.integration.test_results import finished, plain_task

# Fails when its payload says so; else returns a nonce of its own, a second in, so that racing
# callers find it running.
KEYED = plain_task("keyed", """
python3 - <<'EOF'
import json, os, sys, time, uuid
payload = json.load(open(os.environ["KUBETASKS_PAYLOAD_FILE"]))
time.sleep(1)
if payload.get("fail"):
    sys.exit(1)
open("/dev/termination-log", "w").write(json.dumps({"nonce": uuid.uuid4().hex, "n": payload.get("n")}))
EOF
""")

CALLER = """
import json, sys, time
from kubetasks.runtime import trigger
namespace, at = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, at - time.time()))  # both callers at the same moment
handle = trigger("keyed", {"n": 1}, idempotency_key="order-1", namespace=namespace)
print(json.dumps({"name": handle.name, "result": handle.wait(timeout=180)}))
"""


def test_two_callers_racing_with_one_key_get_one_runs_result(namespace, operator):
    apply(KEYED, namespace)
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    with RunTimeline(namespace) as runs, Timeline(namespace) as jobs:
        at = time.time() + 3  # both processes have imported the SDK by then
        callers = [subprocess.Popen([sys.executable, "-c", CALLER, namespace, str(at)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        answers = []
        for caller in callers:
            out, err = caller.communicate(timeout=240)
            assert caller.returncode == 0, err
            answers.append(json.loads(out.strip().splitlines()[-1]))
        assert answers[0] == answers[1], answers  # one run, one nonce
        assert answers[0]["name"] == idempotent_run_name("keyed", "order-1")
        assert answers[0]["result"]["n"] == 1 and answers[0]["result"]["nonce"]
        assert [e.name for e in runs.starts()] == [answers[0]["name"]]
        assert len(jobs.starts()) == 1


def test_a_failed_run_releases_its_key_a_succeeded_one_keeps_it_until_its_ttl(namespace, operator):
    apply(KEYED, namespace)
    with RunTimeline(namespace) as runs:
        with pytest.raises(RunFailed):
            trigger_and_wait("keyed", {"fail": True}, idempotency_key="order-2", namespace=namespace, timeout=180)
        failed = get("taskrun", idempotent_run_name("keyed", "order-2"), namespace)

        # Released: the key runs again (with the payload mended), as the run named after the failed one.
        handle = trigger("keyed", {"n": 2}, idempotency_key="order-2", namespace=namespace)
        assert handle.name == successor_run_name("keyed", "order-2", failed["metadata"]["uid"])
        result = handle.wait(timeout=180)
        status = get("taskrun", handle.name, namespace)["status"]
        assert status["phase"] == "Succeeded" and not status.get("duplicateOf"), status  # it took the key over

        # Held: the same key returns that run's result, and nothing runs.
        again = trigger("keyed", {"n": 2}, idempotency_key="order-2", namespace=namespace)
        assert again.name == handle.name and again.wait(timeout=60) == result

        # Its TTL passed: the key runs again.
        short = trigger("keyed", {"n": 3}, idempotency_key="order-3", idempotency_key_ttl="5s", namespace=namespace)
        first = short.wait(timeout=180)
        expires = parse_time(get("taskrun", short.name, namespace)["status"]["idempotencyKeyExpiresAt"])
        assert expires is not None
        wait_until("order-3's key expired", lambda: datetime.now(timezone.utc) >= expires, timeout=30)
        later = trigger("keyed", {"n": 3}, idempotency_key="order-3", namespace=namespace)
        assert later.name != short.name
        assert later.wait(timeout=180)["nonce"] != first["nonce"]

        assert len(runs.starts()) == 4, [e.name for e in runs.starts()]  # failed, its successor, order-3 twice


def test_the_idempotency_example_runs_one_charge_and_shows_how_long_it_holds_its_key(namespace, operator):
    apply((REPO / "examples" / "idempotency.yaml").read_text(), namespace)
    a = finished(namespace, "charge-a")
    b = finished(namespace, "charge-b")
    assert a["phase"] == "Succeeded" and b["phase"] == "Duplicate" and b["duplicateOf"] == "charge-a", (a, b)
    created = parse_time(get("taskrun", "charge-a", namespace)["metadata"]["creationTimestamp"])
    assert created is not None
    assert parse_time(a["idempotencyKeyExpiresAt"]) == created + timedelta(hours=24)
