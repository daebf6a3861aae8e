"""kubetasks deploy and manifests: the Tasks a module's @task functions give (labelled for the
app), what an apply changed, which Tasks are pruned, and the requests made (a fake API)."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetasks import kube
from kubetasks.cli import main as cli
task_registry = importlib.import_module("kubetasks.runtime.task")  # the module: kubetasks.runtime.task is the decorator
from kubetasks.core.deploy import app_selector, change_of, labelled, other_app, to_prune


def obj(name: str, rv: str = "1", uid: str = "u", spec: Any = None, labels: Any = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": rv, "uid": uid, "labels": labels or {}}, "spec": spec}


def test_change_is_judged_by_the_resource_version():
    assert change_of(None, obj("a")) == "created"
    assert change_of(obj("a", "7", spec={"image": "x"}), obj("a", "7", spec={"image": "x"})) == "unchanged"
    assert change_of(obj("a", "7", spec={"image": "x"}), obj("a", "8", spec={"image": "y"})) == "configured"


def test_a_moved_version_with_the_same_labels_and_spec_is_unchanged():
    # The operator's status write between the read and the apply, or a dry run (no write at all).
    assert change_of(obj("a", "7", spec={"image": "x"}), obj("a", "9", spec={"image": "x"})) == "unchanged"
    assert change_of(obj("a", "7", labels={"k": "1"}), obj("a", "7", labels={"k": "1"})) == "unchanged"
    assert change_of(obj("a", "7", labels={"k": "1"}), obj("a", "9", labels={"k": "2"})) == "configured"
    # A dry run answers the version it read, whatever it would change.
    assert change_of(obj("a", "7", spec={"image": "x"}), obj("a", "7", spec={"image": "y"}), dry_run=True) == "configured"


def test_prune_takes_the_live_tasks_the_code_lost_with_their_uid():
    live = [obj("b", uid="ub"), obj("a", uid="ua"), obj("c", uid="uc")]
    assert to_prune(live, ["a"]) == [("b", "ub"), ("c", "uc")]
    assert to_prune(live, ["a", "b", "c"]) == []


def test_a_task_of_another_app_is_not_taken_over_but_a_hand_applied_one_is():
    shop, billing = labelled({}, "shop")["metadata"]["labels"], labelled({}, "billing")["metadata"]["labels"]
    assert other_app(obj("a", labels=billing), "shop") == "billing"
    assert other_app(obj("a", labels=shop), "shop") is None
    assert other_app(obj("a", labels={"x": "y"}), "shop") is None
    assert other_app(None, "shop") is None


def test_labels_name_the_app_and_leave_the_argument_alone():
    m = {"metadata": {"name": "a", "labels": {"x": "y"}}}
    out = labelled(m, "shop.tasks")
    assert out["metadata"]["labels"] == {"x": "y", "kubetasks.io/deployed-by": "kubetasks",
                                         "kubetasks.io/app": "shop.tasks"}
    assert m["metadata"]["labels"] == {"x": "y"}
    assert app_selector("shop.tasks") == "kubetasks.io/deployed-by=kubetasks,kubetasks.io/app=shop.tasks"


def module(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text("from kubetasks import task\n" + textwrap.dedent(body))
    return path


def test_manifests_prints_each_task_of_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBETASKS_INSTANCE_ID", raising=False)
    path = module(tmp_path, "deploy_unit_a", """
        @task(retry=4, machine="small-1x")
        def unit_a_one(): return 1

        @task(id="unit-a-two", max_duration="1m")
        def two(payload, ctx): return 2
    """)
    assert cli.main(["manifests", str(path), "--image", "reg/app:1"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["metadata"]["name"] for d in docs] == ["unit-a-one", "unit-a-two"]
    one = docs[0]
    assert one["metadata"]["labels"] == {"kubetasks.io/deployed-by": "kubetasks", "kubetasks.io/app": "deploy_unit_a"}
    assert "namespace" not in one["metadata"]
    assert one["spec"] == {"image": "reg/app:1", "entrypoint": "deploy_unit_a:unit_a_one",
                           "retry": {"maxAttempts": 4}, "machine": {"preset": "small-1x"}}
    assert docs[1]["spec"]["entrypoint"] == "deploy_unit_a:two" and docs[1]["spec"]["maxDuration"] == "1m"


def test_a_module_is_found_from_the_current_directory(tmp_path, capsys, monkeypatch):
    pkg = tmp_path / "deploy_unit_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    module(pkg, "jobs", "@task\ndef unit_pkg_job(): return 1\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["manifests", "deploy_unit_pkg.jobs", "--image", "i", "--app", "shop", "--instance", "blue"]) == 0
    [doc] = yaml.safe_load_all(capsys.readouterr().out)
    assert doc["spec"]["entrypoint"] == "deploy_unit_pkg.jobs:unit_pkg_job"
    assert doc["metadata"]["labels"]["kubetasks.io/app"] == "shop"
    assert doc["metadata"]["labels"]["kubetasks.io/instance"] == "blue"


def test_a_module_without_tasks_or_missing_is_one_line_errors(tmp_path, capsys):
    empty = tmp_path / "deploy_unit_empty.py"
    empty.write_text("x = 1\n")
    assert cli.main(["manifests", str(empty), "--image", "i"]) == 1
    assert capsys.readouterr().err.strip() == f"error: no @task functions in {empty}"
    assert cli.main(["manifests", "deploy_unit_nowhere", "--image", "i"]) == 1
    assert "cannot import deploy_unit_nowhere" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --image is required
        cli.main(["manifests", str(empty)])


class FakeApi:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.deleted: list[tuple[str, str | None]] = []
        self.rv = 0

    def get(self, resource: Any, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(name)

    def apply(self, resource: Any, namespace: str, body: dict[str, Any], field_manager: str, force: bool = True,
              dry_run: bool = False) -> dict[str, Any]:
        assert (field_manager, force) == ("kubetasks", True)
        name = body["metadata"]["name"]
        old = self.objects.get(name)
        same = old is not None and old["spec"] == body["spec"] and old["metadata"]["labels"] == body["metadata"]["labels"]
        if same:
            return old  # type: ignore[return-value]
        self.rv += 1
        new = {"metadata": {**body["metadata"], "resourceVersion": str(self.rv), "uid": f"uid-{name}"},
               "spec": body["spec"]}
        if not dry_run:
            self.objects[name] = new
        return new

    def list_all(self, resource: Any, namespace: str, label_selector: str = "") -> tuple[list[dict[str, Any]], str]:
        want = dict(kv.split("=") for kv in label_selector.split(","))
        return [o for o in self.objects.values() if want.items() <= o["metadata"]["labels"].items()], "1"

    def delete(self, resource: Any, namespace: str, name: str, uid: str | None = None) -> None:
        self.deleted.append((name, uid))
        self.objects.pop(name)


def test_deploy_creates_leaves_updates_and_prunes(tmp_path, capsys, monkeypatch):
    api = FakeApi()
    for fn in ("get", "apply", "list_all", "delete"):
        monkeypatch.setattr(kube, fn, getattr(api, fn))
    monkeypatch.delenv("KUBETASKS_INSTANCE_ID", raising=False)
    # Another app's Task in the namespace: never pruned by this one.
    api.objects["other"] = {"metadata": {"name": "other", "uid": "uo", "resourceVersion": "0", "labels": labelled(
        {"metadata": {}}, "billing")["metadata"]["labels"]}, "spec": {}}
    v1 = module(tmp_path, "deploy_unit_v", "@task\ndef unit_keep(): pass\n@task\ndef unit_gone(): pass\n")
    monkeypatch.setattr(task_registry, "_registry", {})

    def deploy(path: Path, *more: str) -> list[str]:
        # Each deploy is a new process: the module imported afresh, into an empty registry.
        task_registry._registry.clear()
        sys.modules.pop("deploy_unit_v", None)
        assert cli.main(["deploy", str(path), "--image", "i:1", "-n", "ns", "--app", "shop", *more]) == 0
        return capsys.readouterr().out.splitlines()

    assert deploy(v1) == ["task/unit-gone created", "task/unit-keep created"]
    assert api.objects["unit-keep"]["metadata"]["namespace"] == "ns"
    assert deploy(v1) == ["task/unit-gone unchanged", "task/unit-keep unchanged"]
    v2 = tmp_path / "v2"
    v2.mkdir()
    v2 = module(v2, "deploy_unit_v", "@task(retry=2)\ndef unit_keep(): pass\n")
    assert deploy(v2, "--dry-run") == ["task/unit-keep configured (server dry run)",
                                       "task/unit-gone pruned (server dry run)"]
    assert api.deleted == [] and "retry" not in api.objects["unit-keep"]["spec"]
    assert deploy(v2) == ["task/unit-keep configured", "task/unit-gone pruned"]
    assert api.deleted == [("unit-gone", "uid-unit-gone")]
    assert sorted(api.objects) == ["other", "unit-keep"]
    # The same code under another app: refused before any write (unit-keep is shop's).
    rv = api.rv
    assert cli.main(["deploy", str(v2), "--image", "i:2", "-n", "ns", "--app", "billing"]) == 1
    assert capsys.readouterr().err.strip() == ("error: already deployed by another app: task/unit-keep (app shop); "
                                               "deploy it with that --app, or delete it first")
    assert api.rv == rv
