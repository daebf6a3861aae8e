"""Results past the termination message's 3 KiB, on the real cluster (issue 20).

- Without a store, a 200 KB result is kept in the run's checkpoint ConfigMap: the run succeeds,
  ``kubetasks describe`` shows its size and digest, and ``trigger_and_wait`` on the user's side (a
  ServiceAccount's token, its own RBAC) gets it intact. Over 256 KiB the run fails for good, saying
  to configure a store.
- With a store, on each backend (the local cluster's SeaweedFS, and the filesystem, whose presigned
  URLs the operator serves itself), a 20 MB result is PUT to the store through the attempt's
  presigned grant: ``describe`` shows it, ``trigger_and_wait`` from a parent task's pod (a presigned
  GET the operator grants the parent) and from the test process (the operator's /results, as the
  user) receive all of it, sha256-checked. A blob deleted behind the operator's back then fails the
  read with a clear reason.
- A ref to another run's result, in a runtime pod's report, is refused (InvalidResultRef) and never
  read; a plain command that writes one gets it as its literal result, never followed.

The tests without a store run an operator of their own each (an instance id of its own); those
with one, an operator per backend for the module (tests.conftest's ``store_backend``), each with a
store of its own: the session's operator (whatever store it has) decides nothing here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (INSTANCE, REPO, TASK_IMAGE, OperatorProcess, StoreBackend, apply, free_port, get,
                            kubectl, token_kubeconfig, wait_until)

pytestmark = pytest.mark.cluster
EXAMPLES = "kubetasks_examples.big"
PYTHONPATH = "/app/operator:/app/examples/python"


def expected(size: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "examples" / "python"))
    from kubetasks_examples.big import blob, digest_of

    return digest_of(blob(size))


@pytest.fixture
def instance(crds: None) -> str:
    """This test's operator instance."""
    return f"{INSTANCE}-{uuid.uuid4().hex[:6]}"


def start_operator(tmp_path: Path, namespace: str, instance: str) -> OperatorProcess:
    """An operator of ``instance`` for ``namespace``, without a store (whatever the session's
    environment says); tests with a store take tests.conftest's ``store_backend``."""
    env = {"KUBETASKS_INSTANCE_ID": instance, "KUBETASKS_STORAGE_URL": ""}
    proc = OperatorProcess(tmp_path / f"operator-{instance}.log", namespaces=namespace, metrics_port=free_port(),
                           env=env)
    proc.start()
    return proc


def task(name: str, entrypoint: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"image": TASK_IMAGE, "imagePullPolicy": "Never", "entrypoint": entrypoint,
                     "env": [{"name": "PYTHONPATH", "value": PYTHONPATH}], "maxDuration": "5m",
                     "machine": {"cpu": "500m", "memory": "512Mi"}, "retry": {"maxAttempts": 1}, **spec}}


def taskrun(name: str, task_ref: str, payload: Any) -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
            "spec": {"taskRef": task_ref, "payload": payload}}


def finished(namespace: str, name: str, timeout: float = 240) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = get("taskrun", name, namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed", "TimedOut", "Cancelled") else None
    return wait_until(f"taskrun {name} finished", done, timeout=timeout, interval=1)


def user(namespace: str, tmp_path: Path) -> str:
    """A kubeconfig of a user who may create and read TaskRuns and read ConfigMaps here, no more."""
    kubectl("create", "serviceaccount", "user", "-n", namespace)
    kubectl("create", "role", "user", "-n", namespace, "--verb=get,create",
            "--resource=taskruns.kubetasks.io,configmaps")
    kubectl("create", "rolebinding", "user", "-n", namespace, "--role=user", f"--serviceaccount={namespace}:user")
    return token_kubeconfig(tmp_path / "user.kubeconfig", namespace, "user")


WAIT_AS_USER = """
import hashlib, json, sys
from kubetasks.runtime import RunHandle
value = RunHandle(sys.argv[1], sys.argv[2]).wait(timeout=300)
text = json.dumps(value, separators=(",", ":")).encode()
print(json.dumps({"size": len(text), "sha256": hashlib.sha256(text).hexdigest()}))
"""


def wait_as(kubeconfig: str, namespace: str, name: str, operator: OperatorProcess) -> subprocess.CompletedProcess[str]:
    """RunHandle.wait in a process of the user's own (their kubeconfig; the operator at its URL)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "KUBECONFIG": kubeconfig,
           "KUBETASKS_OPERATOR_URL": f"http://127.0.0.1:{operator.metrics_port}"}
    return subprocess.run([sys.executable, "-c", WAIT_AS_USER, name, namespace], env=env, capture_output=True,
                          text=True, timeout=360)


def describe(namespace: str, name: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "kubetasks.cli.main", "describe", name, "-n", namespace], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_200_kb_result_without_a_store_is_kept_in_the_runs_configmap(namespace, instance, tmp_path):
    op = start_operator(tmp_path, namespace, instance)
    try:
        apply([task("big", f"{EXAMPLES}:big"), taskrun("r200k", "big", {"bytes": 200_000}),
               taskrun("r300k", "big", {"bytes": 300_000})], namespace, instance)
        status = finished(namespace, "r200k")
        assert status["phase"] == "Succeeded", status
        want = expected(200_000)
        ref = status["resultRef"]
        assert ref["uri"].startswith("configmap:r200k-") and ref["uri"].endswith("-steps/result.attempt-1")
        assert (ref["size"], ref["sha256"]) == (want["size"], want["sha256"]) and "result" not in status
        shown = describe(namespace, "r200k")
        assert "200,000 bytes" in shown and want["sha256"] in shown, shown

        done = wait_as(user(namespace, tmp_path), namespace, "r200k", op)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == want

        status = finished(namespace, "r300k")
        assert status["phase"] == "Failed" and status["error"]["type"] == "ResultTooLarge", status
        assert "configure a store (chart values storage.*)" in status["error"]["message"]
    finally:
        op.stop()


def test_a_forged_ref_is_refused_and_never_followed(namespace, instance, tmp_path):
    op = start_operator(tmp_path, namespace, instance)
    try:
        apply([task("big", f"{EXAMPLES}:big"), taskrun("victim", "big", {"bytes": 10_000})], namespace, instance)
        victim = finished(namespace, "victim")
        assert victim["phase"] == "Succeeded", victim
        ref = victim["resultRef"]
        forge = task("forge", f"{EXAMPLES}:forge")
        envelope = json.dumps({"kubetasks": 1, "outcome": "succeeded", "resultRef": ref})
        plain = task("plain-forge", "", command=["python3", "-c", "import sys; open('/dev/termination-log', 'w')"
                                                                  ".write(sys.argv[1])", envelope])
        del plain["spec"]["entrypoint"]
        apply([forge, plain, taskrun("forger", "forge", {"ref": ref}), taskrun("plain-forger", "plain-forge", None)],
              namespace, instance)
        status = finished(namespace, "forger")
        assert status["phase"] == "Failed" and status["error"]["type"] == "InvalidResultRef", status
        assert ref["uri"] in status["error"]["message"] and "refused, not read" in status["error"]["message"]
        assert "resultRef" not in status and status.get("result") is None
        # A plain command speaks no protocol: its message is its result, a ref in it is data.
        status = finished(namespace, "plain-forger")
        assert status["phase"] == "Succeeded" and status["result"] == json.loads(envelope), status
        assert "resultRef" not in status
    finally:
        op.stop()


def test_a_20_mb_result_goes_to_the_store_and_reaches_a_parent_pod_and_the_user_intact(
        namespace, store_backend: StoreBackend, tmp_path):
    size = 20_000_000
    want = expected(size)
    instance = store_backend.instance
    apply([task("big", f"{EXAMPLES}:big"), task("big-parent", f"{EXAMPLES}:parent", allowTrigger=["big"]),
           taskrun("parent", "big-parent", {"bytes": size})], namespace, instance)
    status = finished(namespace, "parent", timeout=400)
    assert status["phase"] == "Succeeded", status
    assert status["result"] == want  # what the parent's pod received, through its grant
    child = next(r for r in json.loads(kubectl("get", "taskruns", "-n", namespace, "-o", "json"))["items"]
                 if (r["spec"].get("parentRun") == "parent"))
    name = child["metadata"]["name"]
    ref = child["status"]["resultRef"]
    assert ref["uri"] == f"{store_backend.url}/runs/{namespace}/{child['metadata']['uid']}/attempt-1/result"
    assert (ref["size"], ref["sha256"]) == (want["size"], want["sha256"])
    shown = describe(namespace, name)
    assert "20,000,000 bytes" in shown and want["sha256"] in shown, shown

    kubeconfig = user(namespace, tmp_path)
    done = wait_as(kubeconfig, namespace, name, store_backend.proc)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == want

    # Behind the operator's back: the next read fails, saying why, never a wrong value.
    store_backend.delete(ref["uri"])
    done = wait_as(kubeconfig, namespace, name, store_backend.proc)
    assert done.returncode != 0
    assert "is missing from the store" in done.stderr, done.stderr
