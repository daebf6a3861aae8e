"""Version locking on the real cluster: a run started on image A and retried after a deploy of
image B runs every attempt on A; a run triggered after the deploy runs B (core.version).

A and B are two tags of the cluster's Python image (B tagged in containerd here), so both run
with imagePullPolicy Never and no registry."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone

import pytest

from kubetasks.core.naming import LABEL_RUN_UID
from tests.conftest import FINISHED_PHASES, VERSIONS, apply, get, kubectl, wait_until

pytestmark = pytest.mark.cluster
IMAGE_A = VERSIONS["PYTHON_IMAGE"]
IMAGE_B = IMAGE_A.rsplit(":", 1)[0] + ":lock-b"
CONTAINERD = "/run/containerd/containerd.sock"
# Attempt 1 fails, any later one succeeds: the retry is what is tested.
SCRIPT = "import os, sys; sys.exit(1 if os.environ['KUBETASKS_ATTEMPT'] == '1' else 0)"


@pytest.fixture(scope="module")
def image_b() -> str:
    """IMAGE_A under a second tag, in the node's containerd (what a deploy of a new image gives)."""
    ctr = shutil.which("ctr")
    if ctr is None:
        pytest.skip("no ctr to tag a second image")
    done = subprocess.run([ctr, "--address", CONTAINERD, "-n", "k8s.io", "images", "tag", "--force", IMAGE_A, IMAGE_B],
                          capture_output=True, text=True, timeout=60)
    if done.returncode:
        pytest.skip(f"cannot tag {IMAGE_B}: {done.stderr.strip()}")
    return IMAGE_B


def task(image: str) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "locked"},
            "spec": {"image": image, "imagePullPolicy": "Never", "command": ["python3", "-c", SCRIPT],
                     "machine": {"preset": "micro"},
                     # long enough for the deploy to land between the attempts (checked below)
                     "retry": {"maxAttempts": 2, "minDelay": "4s", "maxDelay": "4s"}}}


def taskrun(name: str) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
            "spec": {"taskRef": "locked"}}


def jobs_of(namespace: str, uid: str) -> list[dict]:
    """The run's Jobs, by its UID (not its name)."""
    found = json.loads(kubectl("get", "jobs", "-n", namespace, "-l", f"{LABEL_RUN_UID}={uid}", "-o", "json"))
    return sorted(found["items"], key=lambda j: j["metadata"]["creationTimestamp"])


def image_of(job: dict) -> str:
    return job["spec"]["template"]["spec"]["containers"][0]["image"]


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_run_retried_after_a_deploy_runs_every_attempt_on_its_first_image(namespace, operator, image_b):
    apply([task(IMAGE_A), taskrun("r")], namespace)
    locked = wait_until("r's version locked", lambda: (get("taskrun", "r", namespace).get("status") or {})
                        .get("taskVersion"), timeout=30)
    assert locked["spec"]["image"] == IMAGE_A and locked["version"] == IMAGE_A.rsplit(":", 1)[1]
    kubectl("patch", "task", "locked", "-n", namespace, "--type", "merge", "-p",
            json.dumps({"spec": {"image": image_b}}))  # the deploy
    deployed = datetime.now(timezone.utc).replace(microsecond=0)

    s = wait_until("r finished", lambda: (st := get("taskrun", "r", namespace).get("status") or {})
                   .get("phase") in FINISHED_PHASES and st, timeout=45)
    assert s["phase"] == "Succeeded" and s["attempt"] == 2, s.get("conditions")
    assert s["taskVersion"] == locked
    jobs = jobs_of(namespace, get("taskrun", "r", namespace)["metadata"]["uid"])
    assert [j["metadata"]["labels"]["kubetasks.io/attempt"] for j in jobs] == ["1", "2"]
    assert [image_of(j) for j in jobs] == [IMAGE_A, IMAGE_A]
    assert ts(jobs[1]["metadata"]["creationTimestamp"]) >= deployed  # attempt 2 was made after the deploy

    # A plain trigger after the deploy takes the latest: B.
    apply(taskrun("fresh"), namespace)
    uid = get("taskrun", "fresh", namespace)["metadata"]["uid"]
    first = wait_until("fresh's first Job", lambda: jobs_of(namespace, uid), timeout=30)[0]
    assert image_of(first) == image_b
    version = wait_until("fresh's version", lambda: (get("taskrun", "fresh", namespace).get("status") or {})
                         .get("taskVersion"), timeout=30)
    assert version["spec"]["image"] == image_b and version["version"] == "lock-b"
    assert version["specHash"] != locked["specHash"]

    table = kubectl("get", "taskruns", "-n", namespace, "--sort-by=.metadata.name").splitlines()
    rows = {row.split()[0]: row.split() for row in table[1:]}
    assert "VERSION" in table[0].split() and "lock-b" in rows["fresh"] and locked["version"] in rows["r"]
    assert "lock-b" not in rows["r"]
