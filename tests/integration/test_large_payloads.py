"""Payloads over the store's threshold, on the real cluster (issue 20), on each backend: the cluster's
SeaweedFS, and the filesystem, whose presigned URLs the operator serves itself.

- ``kubetasks run --payload-file`` with a 10 MB payload, as a user who may create TaskRuns: the
  CLI uploads it to the operator's ``PUT /payloads/<namespace>``, which keeps it at
  ``payloads/<namespace>/<sha256>``; the run names it in ``spec.payloadRef`` and an ``entrypoint``
  task receives it intact (it returns the sha256 of what it got).
- A payloadRef into another namespace's payloads or into another run's blobs is refused before any
  Job (InvalidPayloadRef, condition and Event), never read.
- A payload deleted from the store behind the operator's back fails its run with PayloadUnavailable.
- The endpoint refuses a caller who may not create TaskRuns in the namespace (403), and one with
  no token (401).

The tests share an operator per backend for the module (tests.conftest's ``store_backend``), each
with a store of its own; the endpoint's test runs one of its own per backend, serving its namespace
only (a namespace it does not serve is one of its cases).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import (REPO, STORE_BACKENDS, TASK_IMAGE, OperatorProcess, StoreBackend, apply, get, kubectl,
                            kubectl_run, store_operator, token_kubeconfig, wait_until)

pytestmark = pytest.mark.cluster
PYTHONPATH = "/app/operator:/app/examples/python"
DIGEST = "kubetasks_examples.digest:digest"


def digest_task(name: str = "digest", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"image": TASK_IMAGE, "imagePullPolicy": "Never", "entrypoint": DIGEST,
                     "env": [{"name": "PYTHONPATH", "value": PYTHONPATH}], "maxDuration": "5m",
                     "machine": {"cpu": "500m", "memory": "512Mi"}, "retry": {"maxAttempts": 1}, **spec}}


def run_with_ref(name: str, ref: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
            "spec": {"taskRef": "digest", "payloadRef": ref}}


def finished(namespace: str, name: str, timeout: float = 240) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = get("taskrun", name, namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed", "TimedOut", "Cancelled") else None
    return wait_until(f"taskrun {name} finished", done, timeout=timeout, interval=1)


def account(namespace: str, tmp_path: Path, name: str, verbs: str) -> str:
    """A kubeconfig of a ServiceAccount with ``verbs`` on Tasks and TaskRuns here, no more."""
    kubectl("create", "serviceaccount", name, "-n", namespace)
    kubectl("create", "role", name, "-n", namespace, f"--verb={verbs}", "--resource=taskruns.kubetasks.io,tasks.kubetasks.io")
    kubectl("create", "rolebinding", name, "-n", namespace, f"--role={name}", f"--serviceaccount={namespace}:{name}")
    return token_kubeconfig(tmp_path / f"{name}.kubeconfig", namespace, name)


def token_of(kubeconfig: str) -> str:
    return str(yaml.safe_load(Path(kubeconfig).read_text())["users"][0]["user"]["token"])


def upload(proc: OperatorProcess, namespace: str, data: bytes, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{proc.metrics_port}/payloads/{namespace}", data=data,
                                     method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, {"message": e.read().decode("utf-8", "replace")}


def operator_up(proc: OperatorProcess, namespace: str) -> None:
    """The operator answers on its metrics port (an upload without a token: 401)."""
    def answers() -> bool:
        try:
            return upload(proc, namespace, b"{}", None)[0] == 401
        except OSError:
            return False
    wait_until("the operator's metrics port", answers, timeout=60)


def events(namespace: str, name: str) -> list[dict[str, Any]]:
    items = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json"))["items"]
    return [e for e in items if (e.get("involvedObject") or {}).get("name") == name]


def test_a_10_mb_payload_from_kubetasks_run_reaches_an_entrypoint_task_intact(
        namespace, store_backend: StoreBackend, tmp_path):
    proc, url = store_backend.proc, store_backend.url
    apply(digest_task(), namespace, store_backend.instance)
    blob = (hashlib.sha256(b"payload").hexdigest() * (10_000_000 // 64 + 1))[:10_000_000]
    text = json.dumps({"blob": blob}, separators=(",", ":"))
    path = tmp_path / "payload.json"
    path.write_text(text)
    sent = hashlib.sha256(text.encode()).hexdigest()
    operator_up(proc, namespace)

    kubeconfig = account(namespace, tmp_path, "user", "get,create")
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "KUBECONFIG": kubeconfig,
           "KUBETASKS_OPERATOR_URL": f"http://127.0.0.1:{proc.metrics_port}"}
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "kubetasks.cli.main", "run", "digest", "-n", namespace,
                           "--payload-file", str(path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    print(f"kubetasks run --payload-file ({len(text)} bytes): uploaded and created in {time.monotonic() - began:.2f}s")
    name = done.stdout.split()[0].removeprefix("taskrun/")
    run = get("taskrun", name, namespace)
    assert "payload" not in run["spec"]
    ref = run["spec"]["payloadRef"]
    assert ref == {"uri": f"{url}/payloads/{namespace}/{sent}", "size": len(text), "sha256": sent}
    from kubetasks.api.storage import BlobRef

    assert hashlib.sha256(store_backend.store.get(BlobRef.model_validate(ref))).hexdigest() == sent

    want = {"sha256": hashlib.sha256(blob.encode()).hexdigest(), "bytes": len(blob)}

    # The pod reads it through the presigned GET in its grant, verified, and digests it.
    status = finished(namespace, name, timeout=300)
    assert status["phase"] == "Succeeded", status
    assert status["result"] == want


def test_a_payload_ref_outside_its_namespaces_payloads_is_refused_and_never_read(
        namespace, store_backend: StoreBackend):
    instance = store_backend.instance
    apply(digest_task(), namespace, instance)
    store = store_backend.store
    data = json.dumps({"blob": "another namespace's"}).encode()
    sha = hashlib.sha256(data).hexdigest()
    other = store.put(f"payloads/someone-else/{sha}", data)  # it exists, in another namespace
    victim_uid = str(uuid.uuid4())
    result = store.put(f"runs/{namespace}/{victim_uid}/attempt-1/result", data)  # another run's blob
    try:
        apply([run_with_ref("other-ns", other.to_api()), run_with_ref("run-blob", result.to_api())], namespace,
              instance)
        for name, uri in (("other-ns", other.uri), ("run-blob", result.uri)):
            status = finished(namespace, name, timeout=120)
            assert status["phase"] == "Failed" and status["error"]["type"] == "InvalidPayloadRef", status
            assert uri in status["error"]["message"] and "refused, not read" in status["error"]["message"]
            assert not status.get("attempts"), status  # no Job was made
            condition = next(c for c in status["conditions"] if c["type"] == "Succeeded")
            assert condition["status"] == "False" and condition["reason"] == "InvalidPayloadRef"
            wait_until(f"an InvalidPayloadRef Event of {name}",
                       lambda: any(e["reason"] == "InvalidPayloadRef" for e in events(namespace, name)), timeout=30)
        # The API server: a ref's digest is 64 hex digits, and a run's payloadRef never changes.
        bad = run_with_ref("bad-digest", {**other.to_api(), "sha256": "not-a-digest"})
        refused = kubectl_run("create", "-n", namespace, "-f", "-", input=json.dumps(bad))
        assert refused.returncode and "sha256" in refused.stderr and "should match" in refused.stderr, refused.stderr
        changed = kubectl_run("patch", "taskrun", "other-ns", "-n", namespace, "--type=merge", "-p",
                              json.dumps({"spec": {"payloadRef": result.to_api()}}))
        assert changed.returncode and "payloadRef is immutable" in changed.stderr, changed.stderr
    finally:
        store.delete_prefix("payloads/someone-else/")
        store.delete_prefix(f"runs/{namespace}/{victim_uid}/")


def test_a_payload_deleted_behind_the_operators_back_fails_its_run(namespace, store_backend: StoreBackend, tmp_path):
    proc, url, instance = store_backend.proc, store_backend.url, store_backend.instance
    apply(digest_task(), namespace, instance)
    operator_up(proc, namespace)
    status_code, ref = upload(proc, namespace, json.dumps({"blob": "x" * 100_000}).encode(),
                              token_of(account(namespace, tmp_path, "user", "get,create")))
    assert status_code == 201, ref
    assert ref["uri"] == f"{url}/payloads/{namespace}/{ref['sha256']}"
    store_backend.delete(ref["uri"])
    apply(run_with_ref("gone", ref), namespace, instance)
    status = finished(namespace, "gone", timeout=120)
    assert status["phase"] == "Failed" and status["error"]["type"] == "PayloadUnavailable", status
    assert "is missing from the store" in status["error"]["message"] and ref["uri"] in status["error"]["message"]


@pytest.mark.parametrize("backend", STORE_BACKENDS)
def test_the_payload_endpoint_refuses_who_may_not_create_taskruns(namespace, crds, backend, tmp_path):
    with store_operator(backend, tmp_path, namespaces=namespace) as served:
        refuses_who_may_not_create_taskruns(namespace, served.proc, served.store, tmp_path)


def refuses_who_may_not_create_taskruns(namespace: str, proc: OperatorProcess, store: Any, tmp_path: Path) -> None:
    operator_up(proc, namespace)
    reader = token_of(account(namespace, tmp_path, "reader", "get,list"))
    status, body = upload(proc, namespace, b'{"a": 1}', reader)
    assert status == 403 and "may not create taskruns" in body["message"], body
    assert upload(proc, namespace, b'{"a": 1}', None)[0] == 401
    # A writer here is nobody in another namespace.
    writer = token_of(account(namespace, tmp_path, "writer", "get,create"))
    assert upload(proc, "default", b'{"a": 1}', writer)[0] == 403
    # Allowed in a namespace the operator does not serve: refused, since nothing of it would be swept.
    # (Another account: the operator remembers the writer's refusal there for a while.)
    elsewhere = token_of(account(namespace, tmp_path, "elsewhere", "get"))
    binding = f"kt-payloads-{namespace}"[:63]
    kubectl("create", "role", binding, "-n", "default", "--verb=create", "--resource=taskruns.kubetasks.io")
    kubectl("create", "rolebinding", binding, "-n", "default", f"--role={binding}",
            f"--serviceaccount={namespace}:elsewhere")
    try:
        # The API server's authorizer sees a new binding a moment later; a refusal asked for before
        # then would be the operator's to remember.
        wait_until("the binding is in force", lambda: kubectl_run(
            "auth", "can-i", "create", "taskruns.kubetasks.io", "-n", "default",
            f"--as=system:serviceaccount:{namespace}:elsewhere").stdout.strip() == "yes", timeout=30)
        status, body = upload(proc, "default", b'{"a": 1}', elsewhere)
        assert status == 404 and "does not serve" in body["message"], body
    finally:
        kubectl("delete", "rolebinding,role", binding, "-n", "default", check=False)
    status, body = upload(proc, namespace, b"not json", writer)
    assert status == 400 and "not JSON" in body["message"], body
    assert not list(store.listing("payloads/"))  # nothing refused was written
