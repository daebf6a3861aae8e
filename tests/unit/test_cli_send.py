"""kubetasks send: the TaskEvent it creates (named from event and id, labelled for the operator
instance), what it refuses before any request, and a resend that changes nothing (exit 0)."""

from __future__ import annotations

from typing import Any

import pytest

from kubetasks import kube
from kubetasks.cli import main as cli
from kubetasks.core.events import event_object_name


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = []

    def create_or_get(body: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        for old in made:
            if old["metadata"]["name"] == body["metadata"]["name"]:
                return False, {**old, "status": {"runs": ["welcome-ev-1"]}}
        made.append(body)
        return True, body

    monkeypatch.setattr(kube, "create_or_get", create_or_get)
    monkeypatch.delenv("KUBETASKS_INSTANCE_ID", raising=False)
    return made


def test_send_creates_the_event_once_per_id(created, capsys):
    assert cli.main(["send", "user.created", "--data", '{"plan": "pro"}', "--id", "u-1", "-n", "shop",
                     "--instance", "blue"]) == 0
    [body] = created
    assert body["metadata"] == {"name": event_object_name("user.created", "u-1"), "namespace": "shop",
                                "labels": {"kubetasks.io/instance": "blue"}}
    assert body["spec"] == {"event": "user.created", "id": "u-1", "data": {"plan": "pro"}}
    assert cli.main(["send", "user.created", "--data", '{"plan": "free"}', "--id", "u-1", "-n", "shop"]) == 0
    out = capsys.readouterr().out
    assert "already sent: nothing changed (runs: welcome-ev-1)" in out and len(created) == 1


def test_send_makes_up_an_id(created):
    assert cli.main(["send", "user.created", "-n", "shop"]) == 0
    assert len(created[0]["spec"]["id"]) == 36 and "data" not in created[0]["spec"]


@pytest.mark.parametrize("argv, words", [
    (["send", "User.Created"], "is not a dotted name"),
    (["send", "user.created", "--id=bad id"], "is not letters"),
    (["send", "user.created", "--data", '"' + "x" * 70000 + '"'], "more than an event takes"),
    (["send", "user.created", "--data", "{bad"], "--data is not valid JSON"),  # the option given, not --payload
    (["send", "user.created", "--data-file", "/no/such/file"], "--data-file /no/such/file: No such file"),
])
def test_send_refuses_before_any_request(created, capsys, argv, words):
    assert cli.main([*argv, "-n", "shop"]) == 1
    assert words in capsys.readouterr().err and not created
