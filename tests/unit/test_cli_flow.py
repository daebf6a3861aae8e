"""``kubetasks run``'s flow-control flags (issue 19) and the runs table's WAITING column. No cluster."""

from __future__ import annotations

import pytest

from kubetasks.api.taskrun import TaskRunSpec
from kubetasks.cli import main as cli
from kubetasks.cli import tables


def options(*argv: str) -> dict:
    return cli.flow_options(cli.build_parser().parse_args(["run", "hello", *argv]))


def test_no_flow_flags_add_nothing():
    assert options() == {}


def test_the_flags_become_spec_fields_that_validate():
    flow = options("--concurrency-key", "tenant-a", "--priority", "600", "--debounce-key", "doc-7",
                   "--debounce-delay", "3s", "--debounce-max-delay", "1m", "--debounce-mode", "trailing")
    assert flow == {"concurrencyKey": "tenant-a", "priority": 600,
                    "debounce": {"key": "doc-7", "delay": "3s", "maxDelay": "1m", "mode": "trailing"}}
    TaskRunSpec.model_validate({"taskRef": "hello", **flow})
    assert options("--priority", "-30", "--debounce-key", "k", "--debounce-delay", "1s",
                   "--debounce-max-delay", "5s")["debounce"]["mode"] == "leading"


@pytest.mark.parametrize("argv, words", [
    (["--priority", "90000"], "priority: Input should be less than or equal to 86400"),
    (["--concurrency-key", "k" * 300], "concurrency_key: String should have at most 256 characters"),
    (["--debounce-key", "k", "--debounce-delay", "3s"], "missing --debounce-max-delay"),
    (["--debounce-delay", "3s", "--debounce-max-delay", "5s"], "missing --debounce-key"),
    (["--debounce-mode", "trailing"], "missing --debounce-key, --debounce-delay, --debounce-max-delay"),
    (["--debounce-key", "k", "--debounce-delay", "5m", "--debounce-max-delay", "1m"],
     "debounce.delay (5m) must not exceed debounce.maxDelay (1m)"),
    (["--debounce-key", "k", "--debounce-delay", "soon", "--debounce-max-delay", "1m"], "invalid duration 'soon'"),
])
def test_a_bad_flag_fails_with_what_is_wrong(argv, words):
    with pytest.raises(cli.CliError) as raised:
        options(*argv)
    assert words in str(raised.value)


@pytest.mark.parametrize("argv", [["--priority", "soon"], ["--debounce-mode", "middle"]])
def test_argparse_refuses_what_is_not_a_value_of_the_flag(argv):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "hello", *argv])


def test_a_bad_flag_exits_1_before_any_api_call(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_namespace", lambda args: pytest.fail("no API call expected"))
    assert cli.main(["run", "hello", "--priority", "-90000"]) == 1
    assert capsys.readouterr().err.startswith("error: invalid TaskRun option: priority: Input should be greater")


def test_run_sends_the_flow_fields(monkeypatch, capsys):
    from kubetasks import kube

    created = []
    monkeypatch.setattr(kube, "get_custom", lambda plural, ns, name: {"metadata": {"name": name}, "spec": {}})
    monkeypatch.setattr(kube, "create_custom", lambda plural, ns, body: created.append(body) or
                        {**body, "metadata": {**body["metadata"], "name": "hello-x1"}})
    assert cli.main(["run", "hello", "-n", "ns", "--payload", "{}", "--concurrency-key", "acme",
                     "--priority", "60"]) == 0
    (body,) = created
    assert body["spec"] == {"taskRef": "hello", "payload": {}, "concurrencyKey": "acme", "priority": 60}


def test_the_waiting_column_shows_what_holds_a_run():
    run = {"metadata": {"name": "r", "creationTimestamp": "2025-01-01T00:00:00Z"}, "spec": {"taskRef": "t"},
           "status": {"phase": "Queued", "waitingFor": {"reason": "KeyLimit", "limit": "Task/t/key/acme"}}}
    row = tables.run_row(run)
    assert row[tables.RUN_COLUMNS.index("WAITING")] == "KeyLimit"
    assert row[tables.RUN_COLUMNS.index("PHASE")] == "Queued"
    run["status"] = {"phase": "Running"}
    assert tables.run_row(run)[tables.RUN_COLUMNS.index("WAITING")] == "-"
