"""``pip install kubetasks`` (no extras) into a clean virtualenv: the SDK and the CLI without the
operator's dependencies (no kopf), and that is enough to trigger a run on the cluster and wait
for its result, and to print a module's Task manifests."""

from __future__ import annotations

import json
import shutil
import subprocess
import venv
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TASK_IMAGE, apply

pytestmark = pytest.mark.cluster


def run(*args: str | Path, timeout: float = 600) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} failed: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_base_install_has_no_operator_dependencies_and_runs_a_task(tmp_path, operator, namespace):
    # The package's sources only (a pip build in the worktree would leave build/ and egg-info there).
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "operator", src / "operator", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src))

    installed = {d["name"].lower() for d in json.loads(run(python, "-m", "pip", "list", "--format", "json"))}
    assert "kubetasks" in installed
    assert not installed & {"kopf", "obstore", "opentelemetry-sdk", "opentelemetry-api"}, installed  # no extras

    apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": "hello"},
           "spec": {"image": TASK_IMAGE, "imagePullPolicy": "Never", "entrypoint": "kubetasks_examples.hello:hello",
                    "env": [{"name": "PYTHONPATH", "value": "/app/operator:/app/examples/python"}],
                    "machine": {"preset": "micro"}}}, namespace)
    script = f"""
import json, sys
from kubetasks import trigger
handle = trigger("hello", {{"name": "venv"}}, namespace={namespace!r})
result = handle.wait(timeout=300, poll_interval=1)
import kubetasks.cli.main  # the CLI too, with every command's parser
assert not [m for m in sys.modules if m.split(".")[0] in ("kopf", "obstore", "opentelemetry")], sorted(sys.modules)
print(json.dumps(result))
"""
    assert json.loads(run(python, "-c", script).strip().splitlines()[-1]) == {"greeting": "Hello, venv!"}

    # The CLI's manifests of a module.
    kubetasks = env_dir / "bin" / "kubetasks"
    [doc] = yaml.safe_load_all(run(kubetasks, "manifests", REPO / "examples/python/kubetasks_examples/hello.py",
                                   "--image", "example/hello:1"))
    assert doc["spec"]["entrypoint"] == "hello:hello"
