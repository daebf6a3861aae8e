"""Why a run waits, on the real cluster: ``kubetasks why``, the operator's /why endpoint (as the
user, refused to others), ``kubectl get taskruns``' WAITING column, and the ETA against the real
wait, measured from a watch on Jobs.

The session's operator runs on this machine with its metrics port on 127.0.0.1: the CLI reaches
it with ``--operator-url`` (a chart install is reached through the API server's service proxy).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (KWOK_PLACEMENT, REPO, VERSIONS, JobWatch, OperatorProcess, apply, get, kubectl, token_kubeconfig,
                            wait_until)

pytestmark = pytest.mark.cluster
IMAGE = VERSIONS["PYTHON_IMAGE"]
RUN_SECONDS = 4  # each run of the steady queue


class TimedJobWatch(JobWatch):
    """A JobWatch that also notes when the first Job of each run (its owner) was seen."""

    def __init__(self, namespace: str) -> None:
        super().__init__(namespace)
        self.first_seen: dict[str, float] = {}
        self._seen_lock = threading.Lock()

    def _merge(self, job: dict[str, Any], initial: bool = False) -> None:
        owner = next((o.get("uid") for o in (job.get("metadata") or {}).get("ownerReferences") or []
                      if o.get("controller")), None)
        if owner:
            with self._seen_lock:
                self.first_seen.setdefault(owner, time.time())
        super()._merge(job, initial)


def task(name: str, seconds: float) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"image": IMAGE, "imagePullPolicy": "Never", "machine": {"preset": "micro"},
                     "command": ["python3", "-c", f"import time; time.sleep({seconds})"], "concurrency": {"limit": 1}}}


def taskrun(name: str, task_ref: str) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
            "spec": {"taskRef": task_ref}}


def accounts(namespace: str, tmp_path: Path) -> tuple[str, str]:
    """Kubeconfigs of a reader (get/list taskruns in ``namespace``) and of a stranger (nothing)."""
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    kubectl("create", "serviceaccount", "stranger", "-n", namespace)
    kubectl("create", "role", "taskrun-reader", "-n", namespace, "--verb=get,list", "--resource=taskruns.kubetasks.io")
    kubectl("create", "rolebinding", "taskrun-reader", "-n", namespace, "--role=taskrun-reader",
            f"--serviceaccount={namespace}:reader")
    return (token_kubeconfig(tmp_path / "reader.kubeconfig", namespace, "reader"),
            token_kubeconfig(tmp_path / "stranger.kubeconfig", namespace, "stranger"))


def token_of(kubeconfig: str) -> str:
    import yaml

    return yaml.safe_load(Path(kubeconfig).read_text())["users"][0]["user"]["token"]


def ask(operator: OperatorProcess, namespace: str, name: str, token: str | None) -> tuple[int, Any]:
    """GET /why/<namespace>/<name> of the session's operator: (status, JSON or text)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{operator.metrics_port}/why/{namespace}/{name}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def cli(*args: str, kubeconfig: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "KUBECONFIG": kubeconfig, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "kubetasks.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def phase(namespace: str, name: str) -> str | None:
    return (get("taskrun", name, namespace).get("status") or {}).get("phase")


def hold_one_queue_another(namespace: str, instance: str | None = None) -> None:
    """hold-1 holds Task/hold's one slot and hold-2 waits for it. hold-2 is created once hold-1
    has started: two runs created in the same second are ordered by uid, and an operator that
    lists both at its start may let either in first."""
    labels = (instance,) if instance else ()
    apply([task("hold", 300), taskrun("hold-1", "hold")], namespace, *labels)
    wait_until("hold-1 started", lambda: phase(namespace, "hold-1") == "Running", timeout=120)
    apply([taskrun("hold-2", "hold")], namespace, *labels)
    wait_until("hold-2 queued", lambda: phase(namespace, "hold-2") == "Queued", timeout=120)


def test_why_shows_reason_position_and_an_eta_within_half_the_real_wait(namespace, operator, tmp_path):
    reader, _ = accounts(namespace, tmp_path)
    token = token_of(reader)
    url = f"http://127.0.0.1:{operator.metrics_port}"
    names = [f"q-{i}" for i in range(1, 10)]
    with TimedJobWatch(namespace) as jobs:
        apply([task("serial", RUN_SECONDS)] + [taskrun(n, "serial") for n in names], namespace)
        # A steady queue: a few runs done, so the limit's service rate has been seen.
        wait_until("3 runs finished", lambda: sum(phase(namespace, n) == "Succeeded" for n in names) >= 3,
                   timeout=180)

        def fourth() -> tuple[str, dict, float] | None:
            for n in names:
                at = time.time()
                status, answer = ask(operator, namespace, n, token)
                assert status == 200, answer
                limit = (answer.get("limits") or [{}])[0]
                if limit.get("position") == 4 and answer.get("etaSeconds") is not None:
                    return n, answer, at
            return None

        name, answer, asked_at = wait_until("a run 4th in line with an ETA", fourth, timeout=30, interval=0.2)
        eta = answer["etaSeconds"]
        limit = answer["limits"][0]
        assert answer["waiting"] and answer["waitingFor"]["reason"] == "TaskLimit"
        assert limit["limit"] == "Task/serial" and limit["capacity"] == 1 and limit["used"] == 1
        assert len(limit["holders"]) == 1 and limit["holders"][0]["run"] in names

        # The CLI, as the reader: the reason, the position in the line, the holder and the ETA.
        later = [n for n in names if phase(namespace, n) == "Queued"][-1]
        shown = cli("why", later, "-n", namespace, "--operator-url", url, kubeconfig=reader)
        assert shown.returncode == 0, shown.stderr
        assert "TaskLimit" in shown.stdout and re.search(r"Task/serial\s.*\b\d of \d\b", shown.stdout), shown.stdout
        assert "starts in about" in shown.stdout and "1/1: q-" in shown.stdout, shown.stdout
        # kubectl's WAITING column: the reason, from status.waitingFor (no position: it is not written).
        table = kubectl("get", "taskruns", later, "-n", namespace)
        assert "WAITING" in table.splitlines()[0] and "TaskLimit" in table.splitlines()[1], table

        uid = get("taskrun", name, namespace)["metadata"]["uid"]
        wait_until(f"{name}'s Job", lambda: uid in jobs.first_seen, timeout=120, interval=0.2)
        real = jobs.first_seen[uid] - asked_at
    print(f"ETA {eta:.1f}s, real wait {real:.1f}s ({(eta - real) / real:+.0%})")
    assert abs(eta - real) <= 0.5 * real, (eta, real)


def test_why_is_refused_to_whoever_may_not_get_the_run(namespace, operator, tmp_path):
    reader, stranger = accounts(namespace, tmp_path)
    hold_one_queue_another(namespace)

    status, answer = ask(operator, namespace, "hold-2", token_of(reader))
    assert status == 200 and answer["waiting"] and answer["limits"][0]["position"] == 1, answer
    assert [h["run"] for h in answer["limits"][0]["holders"]] == ["hold-1"], answer
    status, text = ask(operator, namespace, "hold-2", token_of(stranger))
    assert status == 403 and "may not get" in text, text
    assert ask(operator, namespace, "hold-2", None)[0] == 401
    assert ask(operator, namespace, "no-such-run", token_of(reader))[0] == 404
    # Another namespace's run: refused before the operator looks (it does not say whether it exists).
    assert ask(operator, "kube-system", "hold-2", token_of(reader))[0] == 403
    # The stranger's CLI: the API server refuses the run itself.
    done = cli("why", "hold-2", "-n", namespace, "--operator-url", f"http://127.0.0.1:{operator.metrics_port}",
               kubeconfig=stranger)
    assert done.returncode == 1 and "403" in done.stderr, done.stderr
    # No operator to ask: what the status says, and that the live answer was not available.
    done = cli("why", "hold-2", "-n", namespace, "--operator-url", "http://127.0.0.1:1", kubeconfig=reader)
    assert done.returncode == 0 and "TaskLimit" in done.stdout and "live answer was not available" in done.stdout, \
        done.stdout


def stand_in_pod(namespace: str) -> str:
    """A hostNetwork pod on a kwok node: its IP is the node's, this machine's. The API server
    proxies a Service only to an endpoint that is a pod with that IP; this one stands in for the
    operator's pod, and the address is where the operator on this machine listens."""
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "why-op"},
         "spec": {"hostNetwork": True, **KWOK_PLACEMENT, "containers": [{"name": "operator", "image": "none"}]}}))
    return wait_until("the stand-in pod's IP", lambda: (get("pod", "why-op", namespace).get("status") or {}).get("podIP"),
                      timeout=60)


def test_why_through_the_api_servers_service_proxy(namespace, operator, tmp_path):
    """The default path (a chart install): the CLI asks the API server's proxy to the operator's
    metrics Service, as the user, and the operator reviews the user's token. Here the Service
    points (through a stand-in pod) at a second operator on this machine, serving TLS on its
    metrics port and acting on the objects of an instance of its own."""
    from tests.conftest import INSTANCE, free_port

    instance, address, port = f"{INSTANCE}-proxy", stand_in_pod(namespace), free_port()
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=why-op",
                    "-keyout", str(certs / "tls.key"), "-out", str(certs / "tls.crt")], check=True, capture_output=True)
    second = OperatorProcess(tmp_path / "operator.log", namespaces=namespace, metrics_port=port,
                             env={"KUBETASKS_INSTANCE_ID": instance, "KUBETASKS_METRICS_BIND_ADDRESS": address,
                                  "KUBETASKS_METRICS_CERT_DIR": str(certs)})
    second.start()
    try:
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "why-op"},
             "spec": {"ports": [{"name": "metrics", "port": port, "targetPort": port}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "why-op"},
             "subsets": [{"addresses": [{"ip": address, "targetRef": {"kind": "Pod", "namespace": namespace,
                                                                       "name": "why-op"}}], "ports": [{"name": "metrics", "port": port}]}]}]}))
        reader, _ = accounts(namespace, tmp_path)
        kubectl("create", "role", "why-caller", "-n", namespace, "--verb=get", "--resource=services/proxy",
                "--resource-name=https:why-op:metrics")
        kubectl("create", "rolebinding", "why-caller", "-n", namespace, "--role=why-caller",
                f"--serviceaccount={namespace}:reader")
        hold_one_queue_another(namespace, instance)

        def asked() -> subprocess.CompletedProcess[str] | None:
            env = {**os.environ, "KUBETASKS_OPERATOR_SERVICE": f"{namespace}/why-op"}
            env.pop("KUBETASKS_OPERATOR_URL", None)
            done = subprocess.run([sys.executable, "-m", "kubetasks.cli.main", "why", "hold-2", "-n", namespace],
                                  env={**env, "PYTHONPATH": str(REPO / "operator"), "KUBECONFIG": reader,
                                       "COLUMNS": "200"}, capture_output=True, text=True, timeout=60)
            assert "live answer was not available" not in done.stdout, done.stdout + done.stderr
            return done

        shown = wait_until("a live answer through the service proxy", asked, timeout=60, interval=1)
        assert shown.returncode == 0 and "waiting for Task/hold (TaskLimit)" in shown.stdout, shown.stdout
        assert re.search(r"Task/hold\s.*\b1 of 1\b.*1/1: hold-1", shown.stdout), shown.stdout
    finally:
        second.stop()
