"""From code to cluster: a user's image built from examples/user-image (the project's own image
tooling, hack/images/build.sh user: no docker, no registry) runs a task of a module that is not one
of this repo's examples, deployed by ``kubetasks deploy``; deploys create, update and prune Tasks,
and a deploy with no change changes nothing (managed fields and resourceVersion)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CACHE, CLUSTER_DIR, REPO, get, kubectl, wait_until

pytestmark = pytest.mark.cluster
USER_DIR = REPO / "examples" / "user-image"


def sh(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    env = {**os.environ, "KUBETASKS_CACHE": str(CACHE), "KUBETASKS_CLUSTER_DIR": str(CLUSTER_DIR),
           "PYTHONPATH": str(REPO / "operator")}
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    assert done.returncode == 0, f"{args} failed: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def user_image(cluster: str) -> str:
    """The user image, built as examples/user-image/Dockerfile describes and in the cluster's containerd."""
    ref = sh(REPO / "hack/images/build.sh", "user", USER_DIR).strip().splitlines()[-1]
    sh(REPO / "hack/images/import.sh", CACHE / "images" / "user.tar")
    return ref


def deploy(app_dir: Path, image: str, namespace: str, *more: str) -> list[str]:
    """``kubetasks deploy tasks.py`` from the app's directory, in a process of its own as a user runs it."""
    out = sh(sys.executable, "-m", "kubetasks.cli.main", "deploy", "tasks.py", "--image", image, "-n", namespace,
             *more, cwd=app_dir)
    return out.splitlines()


def tasks(namespace: str) -> dict[str, dict[str, Any]]:
    found = json.loads(kubectl("get", "tasks", "-n", namespace, "-o", "json", "--show-managed-fields"))["items"]
    return {t["metadata"]["name"]: t for t in found}


def applied(task: dict[str, Any]) -> dict[str, Any]:
    """The managed-fields entry of ``kubetasks deploy``: server-side apply as manager kubetasks."""
    [entry] = [m for m in task["metadata"]["managedFields"] if (m["manager"], m["operation"]) == ("kubetasks", "Apply")]
    return dict(entry)


def test_deploy_runs_a_user_image_and_updates_prunes_and_keeps(user_image, operator, namespace, tmp_path):
    v1 = tmp_path / "v1"
    shutil.copytree(USER_DIR / "app", v1)
    assert deploy(v1, user_image, namespace) == ["task/ping created", "task/total-order created"]
    first = tasks(namespace)
    assert first["total-order"]["spec"]["entrypoint"] == "tasks:total_order"
    assert first["total-order"]["spec"]["image"] == user_image

    # The user's image runs the user's module, with the user's own dependency (humanize).
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
        "metadata": {"name": "order-1", "labels": first["total-order"]["metadata"]["labels"]},
        "spec": {"taskRef": "total-order", "payload": {"id": "o-1", "items": [2, 3, 5]}}}))

    def finished() -> dict[str, Any] | None:
        status = get("taskrun", "order-1", namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_until("order-1 finished", finished, timeout=240)
    assert status["phase"] == "Succeeded", status
    assert status["result"] == {"order": "o-1", "total": 10, "lines": "three"}

    # No change: nothing written. The operator writes the Tasks' status meanwhile (resourceVersion
    # moves with it), so judge by what the deploy owns: its managed-fields entry (time and fields)
    # and the generation (spec changes).
    before = tasks(namespace)
    assert deploy(v1, user_image, namespace) == ["task/ping unchanged", "task/total-order unchanged"]
    again = tasks(namespace)
    for name, task in again.items():
        assert applied(task) == applied(before[name]) != {}, name
        assert task["metadata"]["generation"] == before[name]["metadata"]["generation"], name

    # Another app's Task in the namespace: this app's prunes never touch it.
    other = {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task",
             "metadata": {"name": "billing", "labels": {"kubetasks.io/deployed-by": "kubetasks",
                                                        "kubetasks.io/app": "billing"}},
             "spec": {"image": user_image, "entrypoint": "billing:run"}}
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(other))

    # A changed decorator updates its Task; a removed task is pruned (a dry run first changes nothing).
    v2 = tmp_path / "v2"
    shutil.copytree(v1, v2)
    code = (v2 / "tasks.py").read_text()
    code = code.replace("@task(retry=3,", "@task(retry=5,")
    code = code[:code.index('@task(machine="small-1x")')]
    (v2 / "tasks.py").write_text(code)
    assert deploy(v2, user_image, namespace, "--dry-run") == [
        "task/total-order configured (server dry run)", "task/ping pruned (server dry run)"]
    assert {n: (t["spec"], applied(t)) for n, t in tasks(namespace).items() if n != "billing"} == {
        n: (t["spec"], applied(t)) for n, t in again.items()}
    assert deploy(v2, user_image, namespace) == ["task/total-order configured", "task/ping pruned"]
    after = tasks(namespace)
    assert sorted(after) == ["billing", "total-order"]
    assert after["total-order"]["spec"]["retry"]["maxAttempts"] == 5
    assert deploy(v2, user_image, namespace) == ["task/total-order unchanged"]
