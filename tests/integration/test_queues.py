"""Shared TaskQueues on the real cluster: a limit that holds across the Tasks naming the queue
(counted from a watch on Jobs: active at the same time, from watch events, not sampled), and
``maxWaiting``, refused at create by the operator's admission webhook with a message that names
the queue; ``kubectl get taskqueues`` shows LIMIT, RUNNING and WAITING.

The module runs an operator of its own (an instance id of its own) that serves the webhook over
HTTPS on 127.0.0.1 (kube-apiserver runs on this host), with a serving certificate signed by the
local cluster's CA. The ValidatingWebhookConfiguration is scoped to that instance's objects in
this test's namespace, fails open, and is deleted when the test ends.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import (CLUSTER_DIR, scoped_webhook, INSTANCE, INSTANCE_LABEL, OperatorProcess, apply, free_port, kube_api,
                            kubectl, kubectl_run, labelled, wait_until)
from tests.integration.test_recreate import serving_tls
from tests.integration.test_taskruns import has_event, task, taskrun, wait_phase

pytestmark = pytest.mark.cluster
MINE = f"{INSTANCE}-q"  # this module's operator instance


@pytest.fixture(scope="module")
def queue_operator(crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OperatorProcess, int]]:
    """An operator serving the admission webhook on 127.0.0.1 with a certificate the cluster trusts."""
    certs = tmp_path_factory.mktemp("webhook-tls")
    serving_tls(certs)
    shutil.copy(certs / "hook.crt", certs / "tls.crt")
    shutil.copy(certs / "hook.key", certs / "tls.key")
    port = free_port()
    proc = OperatorProcess(tmp_path_factory.mktemp("queue-operator") / "operator.log", metrics_port=free_port(),
                           env={"KUBETASKS_INSTANCE_ID": MINE, "KUBETASKS_WEBHOOK_PORT": str(port),
                                "KUBETASKS_WEBHOOK_CERT_DIR": str(certs), "KUBETASKS_WEBHOOK_BIND_ADDRESS": "127.0.0.1"})
    proc.start()

    def serving() -> bool:
        context = ssl.create_default_context(cafile=str(CLUSTER_DIR / "pki" / "ca.crt"))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.1"):
                return True
        except OSError:
            return False

    wait_until("the operator's webhook serving", serving, timeout=60)
    yield proc, port
    proc.stop()
    print(f"operator log: {proc.log_path}")


@pytest.fixture
def webhook(namespace: str, queue_operator: tuple[OperatorProcess, int]) -> Iterator[str]:
    """The operator's webhook, registered for this module's instance in this test's namespace only."""
    _, port = queue_operator
    name = f"kubetasks-test-queues-{uuid.uuid4().hex[:10]}"
    with scoped_webhook(name, f"https://127.0.0.1:{port}/validate-taskruns", namespace, {INSTANCE_LABEL: MINE},
                      ("kubetasks.io", "taskruns", "CREATE")):
        yield name


def task_queue(name: str, limit: int, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskQueue", "metadata": {"name": name},
            "spec": {"limit": limit, **spec}}


class ActiveJobs:
    """The most attempts of ``namespace`` running at once: their pods not ended, from one watch's
    events (in the API server's order: a pod's end is seen before the pod of the Job its freed slot
    let start). A slot is free once its pod has ended; the Job controller marks the Job finished up
    to a second later, so counting Jobs to their Complete condition would count that second too."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.active: set[str] = set()
        self.seen: set[str] = set()
        self.most = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ActiveJobs:
        self._thread.start()
        assert self._ready.wait(60), f"could not list Jobs: {self.errors}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=40)

    def _run(self) -> None:
        from kubernetes import client
        from kubernetes.watch.watch import iter_resp_lines

        core = client.CoreV1Api(kube_api())
        listed = json.loads(core.list_namespaced_pod(self.namespace, _preload_content=False, _request_timeout=30).data)
        assert not listed["items"], "pods before the watch began"
        rv = listed["metadata"]["resourceVersion"]
        self._ready.set()
        while not self._stop.is_set():
            try:
                resp = core.list_namespaced_pod(self.namespace, watch=True, resource_version=rv, timeout_seconds=5,
                                                 allow_watch_bookmarks=True, _preload_content=False,
                                                 _request_timeout=(5, 30))
                for line in iter_resp_lines(resp):
                    if not line:
                        continue
                    event = json.loads(line)
                    job = event.get("object") or {}
                    if event["type"] == "ERROR":  # 410: the count could miss a Job; the test fails on it
                        self.errors.append(str(job))
                        return
                    rv = job["metadata"].get("resourceVersion") or rv
                    if event["type"] == "BOOKMARK":
                        continue
                    uid = job["metadata"]["uid"]
                    self.seen.add(uid)
                    if event["type"] == "DELETED" or (job.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                        self.active.discard(uid)
                    else:
                        self.active.add(uid)
                        self.most = max(self.most, len(self.active))
            except Exception as e:  # a broken connection: resume from rv
                self.errors.append(repr(e)[:200])
                time.sleep(0.5)


def test_two_tasks_sharing_a_queue_of_2_never_run_more_than_2_at_once(namespace, queue_operator):
    apply([task_queue("shared", 2), task("left", "import time; time.sleep(3)", queue="shared"),
           task("right", "import time; time.sleep(3)", queue="shared")], namespace, MINE)
    runs = [f"run-{i}" for i in range(8)]
    with ActiveJobs(namespace) as jobs:
        apply([taskrun(name, ("left", "right")[i % 2]) for i, name in enumerate(runs)], namespace, MINE)
        for name in runs:
            wait_phase(namespace, name, "Succeeded", timeout=300)
        wait_until("every Job's end seen", lambda: len(jobs.seen) == 8 and not jobs.active, timeout=60)
    assert not jobs.errors or all("ERROR" not in e for e in jobs.errors), jobs.errors
    assert len(jobs.seen) == 8
    assert jobs.most == 2, f"at most {jobs.most} Jobs active at once"


def test_the_run_beyond_max_waiting_is_refused_at_create_naming_the_queue(namespace, queue_operator, webhook):
    apply([task_queue("q", 2, maxWaiting=3), task("a", "import time; time.sleep(600)", queue="q"),
           task("b", "import time; time.sleep(600)", queue="q")], namespace, MINE)
    wait_until("the operator to see the queue", lambda: "q" in kubectl("get", "taskqueues", "-n", namespace, "-o",
                                                                        "name"), timeout=30)
    for i in range(5):  # 2 run, 3 wait
        created = kubectl_run("create", "-n", namespace, "-f", "-", input=labelled(taskrun(f"r{i}", "ab"[i % 2]), MINE))
        assert created.returncode == 0, created.stderr
    refused = kubectl_run("create", "-n", namespace, "-f", "-", input=labelled(taskrun("r5", "a"), MINE))
    assert refused.returncode != 0, "the 6th run was created"
    assert 'TaskQueue "q" has 3 runs waiting, its maxWaiting' in refused.stderr, refused.stderr
    assert kubectl_run("get", "taskrun", "r5", "-n", namespace).returncode != 0
    for i in range(2):
        wait_phase(namespace, f"r{i}", "Running", timeout=120)
    for i in range(2, 5):
        wait_phase(namespace, f"r{i}", "Queued", timeout=60)

    def columns() -> list[str] | None:
        header, *rows = kubectl("get", "taskqueues", "-n", namespace).splitlines()
        row = rows[0].split() if rows else []
        return row if header.split()[:4] == ["NAME", "LIMIT", "RUNNING", "WAITING"] and row[:4] == ["q", "2", "2", "3"] \
            else None

    assert wait_until("kubectl get taskqueues to show 2 running and 3 waiting", columns, timeout=30)
    status = json.loads(kubectl("get", "taskqueue", "q", "-n", namespace, "-o", "json"))["status"]
    assert sorted(h["run"] for h in status["holders"]) == ["r0", "r1"] and status["observedGeneration"] == 1


def test_a_burst_of_creates_fills_the_queue_and_no_more(namespace, queue_operator, webhook):
    apply([task_queue("q", 2, maxWaiting=3), task("a", "import time; time.sleep(120)", queue="q")], namespace, MINE)
    wait_until("the operator to see the queue", lambda: "q" in kubectl("get", "taskqueues", "-n", namespace, "-o",
                                                                        "name"), timeout=30)
    results: dict[str, Any] = {}

    def create_one(name: str) -> None:
        results[name] = kubectl_run("create", "-n", namespace, "-f", "-", input=labelled(taskrun(name, "a"), MINE))

    threads = [threading.Thread(target=create_one, args=(f"b{i}",)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    created = sorted(n for n, r in results.items() if r.returncode == 0)
    refused = [r.stderr for r in results.values() if r.returncode != 0]
    assert len(created) == 5, (created, refused)  # 2 slots + 3 waiting, though the watch had shown none of them
    assert all('TaskQueue "q" has 3 runs waiting' in e for e in refused), refused


def test_runs_that_got_past_no_webhook_into_a_full_queue_fail_queue_full(namespace, queue_operator):
    # No webhook registered here (as when the operator was down and it failed open).
    apply([task_queue("q", 1, maxWaiting=1), task("a", "import time; time.sleep(120)", queue="q")], namespace, MINE)
    wait_until("the operator to see the queue", lambda: "q" in kubectl("get", "taskqueues", "-n", namespace, "-o",
                                                                        "name"), timeout=30)
    apply([taskrun(f"r{i}", "a") for i in range(4)], namespace, MINE)
    phases = {f"r{i}": wait_phase(namespace, f"r{i}", {"Running", "Queued", "Failed"}, timeout=120)["phase"]
              for i in range(4)}
    assert sorted(phases.values()) == ["Failed", "Failed", "Queued", "Running"], phases
    for name in (n for n, p in phases.items() if p == "Failed"):
        s = wait_phase(namespace, name, "Failed")
        assert s["error"]["type"] == "QueueFull" and 'TaskQueue "q" has 1 run waiting' in s["error"]["message"], s
        assert has_event(namespace, name, "QueueFull")
