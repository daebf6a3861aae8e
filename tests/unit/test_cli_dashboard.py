"""``kubetasks dashboard``: its options, the actions it performs as the user (against a fake
``kube``), the scope it chooses, and its errors."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubetasks.cli import dashboard
from kubetasks.cli.main import build_parser, main
from kubetasks.dashboard import informers


def test_parsing():
    args = build_parser().parse_args(["dashboard", "-n", "ops", "--port", "8999", "--no-open", "-l", "a=b"])
    assert (args.command, args.namespace, args.port, args.no_open, args.selector) == ("dashboard", "ops", 8999, True, "a=b")
    args = build_parser().parse_args(["--context", "c", "dashboard"])
    assert (args.context, args.port, args.selector) == ("c", 0, "")


class FakeKube:
    """What the actions call on kubetasks.kube, with a per-verb error to raise."""

    def __init__(self, phase: str | None = "Running", fail: dict[str, ApiException] | None = None,
                 runs: list[dict] | None = None) -> None:
        self.phase, self.fail, self.runs = phase, fail or {}, runs or []
        self.calls: list[tuple[str, Any]] = []

    def list_custom(self, plural: str, namespace: str) -> list[dict]:
        self.calls.append(("list", (plural, namespace)))
        self._maybe_fail("list")
        return self.runs

    def _maybe_fail(self, verb: str) -> None:
        if verb in self.fail:
            raise self.fail[verb]

    def get_custom(self, plural: str, namespace: str, name: str) -> dict:
        self.calls.append(("get", (plural, namespace, name)))
        self._maybe_fail("get")
        if plural == "tasks":
            return {"metadata": {"name": name, "namespace": namespace}, "spec": {"id": "the-id"}}
        return {"metadata": {"name": name, "uid": f"uid-{name}"}, "spec": {"taskRef": "t", "payload": {"n": 1}},
                "status": {"phase": self.phase, "steps": [{"name": "one"}]} if self.phase else {}}

    def patch_spec(self, plural: str, namespace: str, name: str, patch: dict) -> None:
        self.calls.append(("patch", (plural, namespace, name, patch)))
        self._maybe_fail("patch")

    def create_custom(self, plural: str, namespace: str, body: dict) -> dict:
        self.calls.append(("create", (plural, namespace, body)))
        self._maybe_fail("create")
        return {**body, "metadata": {**body["metadata"], "name": "t-x7k2p"}}


def forbidden(verb: str, resource: str) -> ApiException:
    e = ApiException(status=403, reason="Forbidden")
    e.body = json.dumps({"message": f'taskruns.kubetasks.io "r" is forbidden: User "u" cannot {verb} resource '
                                    f'"{resource}" in API group "kubetasks.io"'})
    return e


def test_cancel_patches_spec_cancel_as_the_user():
    kube = FakeKube()
    status, body = dashboard.cancel(kube, {"namespace": "a", "name": "r"})
    assert (status, body["ok"]) == (200, True)
    assert ("patch", ("taskruns", "a", "r", {"spec": {"cancel": True}})) in kube.calls


def test_cancel_of_a_finished_run_is_a_409_without_a_patch():
    kube = FakeKube(phase="Succeeded")
    status, body = dashboard.cancel(kube, {"namespace": "a", "name": "r"})
    assert status == 409 and "already finished (Succeeded)" in body["message"]
    assert not [c for c in kube.calls if c[0] == "patch"]


def test_cancel_forbidden_returns_the_api_servers_403_and_words():
    kube = FakeKube(fail={"patch": forbidden("patch", "taskruns")})
    status, body = dashboard.cancel(kube, {"namespace": "a", "name": "r"})
    assert (status, body["ok"]) == (403, False)
    assert 'cannot patch resource "taskruns"' in body["message"]


def _runs() -> list[dict]:
    def run(name: str, task: str, phase: str | None, tags: list[str], created: str, **spec: Any) -> dict:
        return {"metadata": {"name": name, "namespace": "a", "creationTimestamp": f"2026-12-07T10:00:0{created}Z"},
                "spec": {"taskRef": task, "tags": tags, **spec}, "status": {"phase": phase} if phase else {}}

    return [run("q2", "sync", "Queued", ["eu"], "2"), run("q1", "sync", "Queued", [], "1"),
            run("r", "sync", "Running", ["eu"], "3"), run("done", "sync", "Failed", ["eu"], "4"),
            run("asked", "sync", "Queued", ["eu"], "5", cancel=True), run("other", "mail", None, ["eu"], "6")]


def test_cancel_matching_patches_every_unfinished_run_the_filter_keeps():
    kube = FakeKube(runs=_runs())
    status, body = dashboard.cancel_matching(kube, {"namespace": "a", "task": "sync", "phase": "Queued"})
    assert (status, body) == (200, {"ok": True, "message": "2 cancels requested (of sync in phase Queued)"})
    assert [c[1][2] for c in kube.calls if c[0] == "patch"] == ["q1", "q2"]  # oldest first; "asked" was asked
    kube = FakeKube(runs=_runs())
    status, body = dashboard.cancel_matching(kube, {"namespace": "a", "tag": "eu"})
    assert [c[1][2] for c in kube.calls if c[0] == "patch"] == ["q2", "r", "other"] and "tagged eu" in body["message"]
    status, body = dashboard.cancel_matching(FakeKube(runs=_runs()), {"namespace": "a", "task": "none"})
    assert (status, body["message"]) == (200, "No unfinished runs of none to cancel.")


def test_cancel_matching_needs_a_namespace_and_a_task_or_tag_and_says_what_it_did_before_an_error():
    for fields in ({"namespace": "a"}, {"namespace": "a", "phase": "Queued"}, {"task": "sync"},
                   {"namespace": "a", "task": "sync", "after": "soon"}):
        kube = FakeKube(runs=_runs())
        assert dashboard.cancel_matching(kube, fields)[0] == 400 and not kube.calls, fields

    class Flaky(FakeKube):
        def patch_spec(self, plural: str, namespace: str, name: str, patch: dict) -> None:
            if name == "q2":
                raise forbidden("patch", "taskruns")
            super().patch_spec(plural, namespace, name, patch)

    status, body = dashboard.cancel_matching(Flaky(runs=_runs()), {"namespace": "a", "task": "sync"})
    assert status == 403 and body["message"].startswith("1 cancel requested, then: ") and "cannot patch" in body["message"]
    status, body = dashboard.cancel_matching(FakeKube(fail={"list": forbidden("list", "taskruns")}),
                                             {"namespace": "a", "tag": "eu"})
    assert status == 403 and "cannot list" in body["message"]


def test_actions_need_their_fields():
    kube = FakeKube()
    assert dashboard.cancel(kube, {"namespace": "a"})[0] == 400
    status, body = dashboard.trigger(kube, {"task": "t"})
    assert status == 400 and "namespace" in body["message"]
    assert not kube.calls


def test_trigger_creates_a_run_of_the_task_with_the_payload():
    kube = FakeKube()
    status, body = dashboard.trigger(kube, {"namespace": "a", "task": "t", "payload": '{"n": 2}'})
    assert (status, body["run"]) == (201, {"namespace": "a", "name": "t-x7k2p"})
    (created,) = [args for verb, args in kube.calls if verb == "create"]
    plural, ns, run = created
    assert (plural, ns, run["spec"]) == ("taskruns", "a", {"taskRef": "t", "payload": {"n": 2}})
    assert run["metadata"]["generateName"] == "t-" and run["metadata"]["labels"]["kubetasks.io/task"] == "the-id"


def test_trigger_with_bad_json_creates_nothing():
    kube = FakeKube()
    status, body = dashboard.trigger(kube, {"namespace": "a", "task": "t", "payload": "{oops"})
    assert status == 400 and "not valid JSON" in body["message"]
    assert not [c for c in kube.calls if c[0] == "create"]


def test_trigger_forbidden():
    status, body = dashboard.trigger(FakeKube(fail={"create": forbidden("create", "taskruns")}),
                                     {"namespace": "a", "task": "t"})
    assert status == 403 and 'cannot create resource "taskruns"' in body["message"]


def test_replay_creates_the_replay_the_cli_would_as_the_user():
    kube = FakeKube(phase="Failed")
    status, body = dashboard.replay(kube, {"namespace": "a", "name": "r", "from_step": "one"})
    assert (status, body["ok"], body["run"]) == (201, True, {"namespace": "a", "name": "t-x7k2p"})
    assert body["message"] == "taskrun/t-x7k2p created: replays r"
    (created,) = [args for verb, args in kube.calls if verb == "create"]
    plural, ns, run = created
    assert (plural, ns, run["metadata"]["generateName"]) == ("taskruns", "a", "r-replay-")
    assert run["spec"] == {"taskRef": "t", "payload": {"n": 1},
                           "replayOf": {"name": "r", "uid": "uid-r", "fromStep": "one"}}
    assert dashboard.replay(kube, {"namespace": "a", "name": "r", "from_step": ""})[0] == 201
    assert "fromStep" not in kube.calls[-1][1][2]["spec"]["replayOf"]  # an empty field: from the step that failed


def test_replay_of_an_unfinished_run_or_an_unknown_step_is_a_409_without_a_create():
    status, body = dashboard.replay(FakeKube(phase="Running"), {"namespace": "a", "name": "r"})
    assert status == 409 and "is Running: only a finished run can be replayed" in body["message"]
    kube = FakeKube(phase="Failed")
    status, body = dashboard.replay(kube, {"namespace": "a", "name": "r", "from_step": "two"})
    assert status == 409 and "completed no step 'two'" in body["message"]
    assert not [c for c in kube.calls if c[0] == "create"]


def test_replay_forbidden_returns_the_api_servers_403_and_words():
    status, body = dashboard.replay(FakeKube(phase="Failed", fail={"create": forbidden("create", "taskruns")}),
                                    {"namespace": "a", "name": "r"})
    assert (status, body["ok"]) == (403, False) and 'cannot create resource "taskruns"' in body["message"]
    assert dashboard.replay(FakeKube(), {"name": "r"})[0] == 400


# ---------------------------------------------------------------- the command

@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The scope probes and the informers without a cluster: the user may list where ``allowed`` says."""
    allowed: list[str | None] = [None]
    monkeypatch.setattr(informers, "may_list", lambda api, ns: ns in allowed)
    monkeypatch.setattr(informers, "allow_deep_json", lambda: None)  # the test process's threads stay as they are
    monkeypatch.setattr("kubetasks.cli.common.namespace_of", lambda args: getattr(args, "namespace", None) or "team-a")

    async def start(self: informers.Informers, timeout: float = 0) -> None:
        return None
    monkeypatch.setattr(informers.Informers, "start", start)
    return allowed


def test_a_taken_port_is_a_clear_error(capsys, no_cluster):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", "--no-open", "--port", str(port)]) == 1
    assert f"error: cannot serve on 127.0.0.1:{port}: " in capsys.readouterr().err


def test_a_user_who_may_list_runs_nowhere_is_told_why(capsys, no_cluster):
    no_cluster[:] = []
    assert main(["dashboard", "--no-open", "-n", "team-b"]) == 1
    err = capsys.readouterr().err
    assert "may not list TaskRuns and Tasks in all namespaces, nor in namespace team-b" in err
