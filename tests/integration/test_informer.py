"""The informers on a real API server, seen through tests/apiproxy.py (which counts each request
the operator makes and can hold LISTs back):

- liveness does not judge an operator that is still listing: a standby promoted while its first
  lists take longer than the stall period answers 200 throughout, then works;
- quiet watches resume from their last version: with watches that the server ends every few
  seconds, a quiet minute is many watch reconnects and no LIST; the resync replays the stores.

These operators have an instance id of their own, so the session's operator leaves their objects
alone and keeps running.
"""

from __future__ import annotations

import time
from collections import Counter
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kubetasks.kube import READ_TIMEOUT
from bench.quiet import EXPIRED
from tests.apiproxy import ApiProxy, Call
from tests.conftest import (INSTANCE, KWOK_PLACEMENT, VERSIONS, OperatorProcess, apply, free_port, lease_holder,
                            run_until_finished, scrape, wait_until)
from tests.integration.test_leader import election_env, identity

pytestmark = pytest.mark.cluster
MINE = f"{INSTANCE}-informer"
INFORMED = ("tasks", "taskruns", "jobs", "configmaps")  # configmaps: the kept logs' (their metadata)
HELLO = {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "hello"},
         "spec": {"image": VERSIONS["PYTHON_IMAGE"], "imagePullPolicy": "Never", "command": ["python3", "-c", "pass"],
                  "machine": {"preset": "micro"}, **KWOK_PLACEMENT}}
STALL_SECONDS = 15
# Each first list of TaskRuns and Jobs: longer than the stall period, and answered within the
# client's read timeout (a list held longer would time out and be tried again, never answered).
SLOW_LIST_SECONDS = STALL_SECONDS + 10
assert SLOW_LIST_SECONDS < READ_TIMEOUT


def probe(url: str) -> tuple[int, str]:
    """(status, body) of a liveness request; (0, why) when nothing answers (the port between owners)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def slow_lists(call: Call) -> float:
    """TaskRuns and Jobs list slowly; Tasks quickly, so a key is queued long before the workers start."""
    if call.verb != "LIST":
        return 0.0
    return {"taskruns": SLOW_LIST_SECONDS, "jobs": SLOW_LIST_SECONDS, "tasks": 2.0}.get(call.resource, 0.0)


def test_a_standby_promoted_while_its_lists_outlast_the_stall_period_stays_live_and_then_works(
        namespace, crds, tmp_path: Path):
    apply(HELLO, namespace, MINE)
    env = {**election_env(namespace), "KUBETASKS_INSTANCE_ID": MINE, "KUBETASKS_STALL_SECONDS": str(STALL_SECONDS)}
    leader = OperatorProcess(tmp_path / "leader.log", namespaces=namespace, env=dict(env))
    port = free_port()
    healthz = f"http://127.0.0.1:{port}/healthz"
    with ApiProxy(delay=slow_lists, workdir=tmp_path) as proxy:
        standby = OperatorProcess(tmp_path / "standby.log", namespaces=namespace, env={
            **env, "KUBECONFIG": str(proxy.kubeconfig), "KUBETASKS_LIVENESS": healthz})
        try:
            leader.start()
            lead_id = identity(leader)
            wait_until("the first replica leads", lambda: lease_holder(namespace, "kubetasks") == lead_id)
            standby.start()
            began = time.monotonic()
            standby_id = identity(standby)
            assert probe(healthz) == (200, "standby\n")
            # The scenario itself, not a wait for something: the standby has stood by for longer than
            # the stall period when it is promoted (the liveness clock used to start at import).
            time.sleep(max(0.0, STALL_SECONDS + 5 - (time.monotonic() - began)))
            leader.stop()  # hands the Lease back: the standby takes it within a round
            wait_until("the standby takes the Lease", lambda: lease_holder(namespace, "kubetasks") == standby_id,
                       timeout=30, interval=0.2)
            promoted = time.monotonic()

            answers: list[tuple[float, int, str]] = []

            def synced() -> bool:
                answers.append((time.monotonic() - promoted, *probe(healthz)))
                return "informers synced" in standby.log_path.read_text(errors="replace")

            try:
                wait_until("the promoted standby's informers sync", synced, timeout=SLOW_LIST_SECONDS + 60, interval=0.5)
            except AssertionError as e:
                raise AssertionError(f"{e}; requests: {[(round(c.at - promoted, 1), c.verb, c.resource) for c in proxy.calls]}") from None
            synced_after = time.monotonic() - promoted
            # And a while after: the workers start with every key queued.
            settle = time.monotonic() + STALL_SECONDS / 2
            while time.monotonic() < settle:
                answers.append((time.monotonic() - promoted, *probe(healthz)))
                time.sleep(0.5)
            failed = [(round(t, 1), status, body[:120]) for t, status, body in answers if status not in (0, 200)]
            served = [t for t, status, body in answers if status == 200 and "standby" not in body]
            print(f"promoted standby synced {synced_after:.1f}s after taking the Lease (lists held "
                  f"{SLOW_LIST_SECONDS}s, stall period {STALL_SECONDS}s); {len(served)} liveness answers 200, "
                  f"{len(failed)} failed")
            assert synced_after > STALL_SECONDS, "the lists outlasted the stall period"
            assert not failed, f"liveness failed while the first lists ran: {failed[:5]}"
            assert served and served[0] < STALL_SECONDS, "the operator's own liveness answered during the lists"

            assert run_until_finished(namespace, "after-promotion", "hello", instance=MINE) == "Succeeded"
            assert standby.proc and standby.proc.poll() is None and probe(healthz)[0] == 200
        finally:
            for op in (leader, standby):
                op.kill()


WATCH_SECONDS = 3  # the server ends each watch after 3 to 6 s
RESYNC_SECONDS = 10
RECONNECTS = 15  # a quiet minute or so


def reconciles(port: int, kind: str) -> float:
    return sum(s.value for s in scrape(port).get("kubetasks_reconcile_seconds", [])
               if s.name == "kubetasks_reconcile_seconds_count" and s.labels.get("kind") == kind)


def apiserver_lists() -> dict[str, float]:
    """kube-apiserver's LIST count per informed resource, every client's (for the printout)."""
    from bench.throughput import apiserver_requests

    counts, _ = apiserver_requests()
    return {r: counts[f"LIST {r}"] for r in INFORMED}


def test_quiet_watches_resume_without_a_list_and_the_resync_asks_nothing(namespace, crds, tmp_path: Path):
    metrics = free_port()
    with ApiProxy(workdir=tmp_path) as proxy:
        op = OperatorProcess(tmp_path / "operator.log", namespaces=namespace, metrics_port=metrics, env={
            "KUBECONFIG": str(proxy.kubeconfig), "KUBETASKS_INSTANCE_ID": MINE,
            "KUBETASKS_WATCH_SECONDS": str(WATCH_SECONDS), "KUBETASKS_RESYNC_SECONDS": str(RESYNC_SECONDS)})
        try:
            op.start()
            apply(HELLO, namespace, MINE)
            assert run_until_finished(namespace, "quiet-1", "hello", instance=MINE) == "Succeeded"

            quiet, tasks_reconciled, cluster_lists = time.monotonic(), reconciles(metrics, "task"), apiserver_lists()
            logged = len(op.log_path.read_text(errors="replace"))
            wait_until(f"every informer's watch resumed {RECONNECTS} times", lambda: all(
                proxy.count("WATCH", r, since=quiet) >= RECONNECTS for r in INFORMED), timeout=RECONNECTS * 2 * WATCH_SECONDS + 60)
            seconds = time.monotonic() - quiet
            replays = reconciles(metrics, "task") - tasks_reconciled  # its run finished before: only resyncs wake it
            seen = proxy.counts(since=quiet)
            cluster = {r: n - cluster_lists[r] for r, n in apiserver_lists().items()}
            # A list only where the server said the watch cannot resume (a CRD that another session
            # changes meanwhile restarts kube-apiserver's cache of its objects: 410 Gone).
            gone = Counter(EXPIRED.findall(op.log_path.read_text(errors="replace")[logged:]))
            print(f"quiet {seconds:.0f}s: operator's requests {dict(sorted(seen.items()))}; 410s {dict(gone)}; "
                  f"Task reconciled {replays:.0f} times; kube-apiserver LISTs meanwhile, every client's: {cluster}")
            assert all(seen[f"LIST {r}"] <= gone[r] for r in INFORMED), f"a LIST while quiet: {seen}, 410s: {gone}"
            assert replays >= seconds // RESYNC_SECONDS - 2, "the resync replays the Task from the store, with no request"
            assert op.proc and op.proc.poll() is None
        finally:
            op.stop()
