"""The pure parts of the ``kubetasks`` CLI: rows, argument parsing, errors. No cluster."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import MaxRetryError

from kubetasks.cli import main as cli
from kubetasks.cli import tables
from kubetasks.cli.describe import describe_lines

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def ago(**kw) -> str:
    return (NOW - timedelta(**kw)).isoformat().replace("+00:00", "Z")


def taskrun(name: str, task: str = "hello", created: str | None = None, **status) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created or ago(seconds=30)},
            "spec": {"taskRef": task}, "status": status}


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (45, "45s"), (60, "1m"), (192, "3m12s"), (720, "12m"), (3600, "1h"), (7500, "2h5m"),
    (86400 * 4 + 3 * 3600, "4d3h"), (86400 * 30, "30d"),
])
def test_human_age(seconds, text):
    assert tables.human_age(ago(seconds=seconds), NOW) == text


def test_human_age_without_a_time():
    assert tables.human_age(None, NOW) == "<unknown>"
    assert tables.human_age("garbage", NOW) == "<unknown>"


def test_run_row_of_a_finished_run():
    run = taskrun("hello-1", created=ago(minutes=2), phase="Succeeded", attempt=2, duration="1m5s")
    assert tables.run_row(run, NOW) == ("hello-1", "hello", "Succeeded", "2", "-", "2m", "1m5s")


def test_run_row_of_a_new_run_without_status():
    run = taskrun("hello-2")
    run.pop("status")
    assert tables.run_row(run, NOW) == ("hello-2", "hello", "Pending", "0", "-", "30s", "-")


def test_run_rows_filter_by_task_and_sort_oldest_first():
    runs = [taskrun("b", created=ago(seconds=10)), taskrun("other", task="x", created=ago(seconds=50)),
            taskrun("a", created=ago(seconds=40))]
    assert [r[0] for r in tables.run_rows(runs, now=NOW)] == ["other", "a", "b"]
    assert [r[0] for r in tables.run_rows(runs, tables.run_filter("hello"), now=NOW)] == ["a", "b"]
    assert tables.run_rows(runs, tables.run_filter("x"), now=NOW, with_namespace=True)[0][:2] == ("ns", "other")
    assert len(tables.RUN_COLUMNS) == len(tables.run_rows(runs, now=NOW)[0])


def test_run_filter_by_phase_phase_group_and_creation():
    runs = [taskrun("new", created=ago(seconds=10)), taskrun("queued", created=ago(minutes=5), phase="Queued"),
            taskrun("failed", created=ago(hours=2), phase="Failed"), taskrun("done", created=ago(days=2), phase="Succeeded")]

    def names(**kw):
        return [r[0] for r in tables.run_rows(runs, tables.run_filter(**kw), now=NOW)]

    assert names(phase="Failed") == ["failed"]
    assert names(phase="Pending") == ["new"]  # no status yet reads as Pending, as the table shows it
    assert names(phase="active") == ["queued", "new"]
    assert names(phase="finished") == ["done", "failed"]
    assert names(created_after=NOW - timedelta(hours=1)) == ["queued", "new"]
    assert names(phase="finished", created_after=NOW - timedelta(days=1)) == ["failed"]
    assert names(task="hello", phase="Running") == []


def test_job_for_attempt_defaults_to_the_latest_and_uses_recorded_names():
    run = taskrun("r", attempt=2, attempts=[{"attempt": 1, "jobName": "r-1"}, {"attempt": 2, "jobName": "r-2"}])
    assert cli.job_for_attempt(run) == (2, "r-2")
    assert cli.job_for_attempt(run, 1) == (1, "r-1")
    with pytest.raises(cli.CliError, match="no attempt 3"):
        cli.job_for_attempt(run, 3)


def test_job_for_attempt_without_a_record_uses_the_deterministic_name():
    assert cli.job_for_attempt(taskrun("r", attempt=1)) == (1, "r-1")
    long = "x" * 70
    attempt, job = cli.job_for_attempt(taskrun(long, attempt=1))
    assert attempt == 1 and len(job) <= 63 and job.endswith("-1")


def test_job_for_attempt_before_any_attempt():
    with pytest.raises(cli.CliError, match="not started"):
        cli.job_for_attempt(taskrun("r"))


def test_parse_payload():
    assert cli.parse_payload('{"x": [1, 2]}') == {"x": [1, 2]}
    assert cli.parse_payload(None) is None
    with pytest.raises(cli.CliError, match="not valid JSON"):
        cli.parse_payload("{bad")


def test_new_taskrun_is_labelled_with_the_task_id():
    hello = {"metadata": {"name": "hello"}, "spec": {"image": "i"}}
    body = cli.new_taskrun(hello, {"x": 1})
    assert body["metadata"] == {"generateName": "hello-", "labels": {"kubetasks.io/task": "hello"}}
    assert body["spec"] == {"taskRef": "hello", "payload": {"x": 1}}
    assert "payload" not in cli.new_taskrun(hello, None)["spec"]
    renamed = {"metadata": {"name": "resize-v2"}, "spec": {"id": "resize"}}
    assert cli.new_taskrun(renamed, None)["metadata"]["labels"] == {"kubetasks.io/task": "resize"}


def test_describe_lines():
    run = taskrun("r", phase="Failed", attempt=1, duration="3s")
    run["spec"]["payload"] = {"a": 1}
    lines = dict(describe_lines(run, NOW))
    assert lines["Phase"] == "Failed" and lines["Task"] == "hello" and lines["Payload"] == '{"a": 1}'
    assert "Next retry" not in lines and lines["Created"].endswith("(30s ago)")


@pytest.mark.parametrize("argv, expected", [
    (["run", "hello", "--payload", "{}", "--wait", "--timeout", "30", "-n", "ns"],
     {"command": "run", "task": "hello", "payload": "{}", "wait": True, "timeout": 30.0, "namespace": "ns"}),
    (["run", "hello"], {"wait": False, "timeout": 600.0, "payload": None, "payload_file": None, "namespace": None}),
    (["run", "hello", "--payload-file", "-"], {"payload": None, "payload_file": "-"}),
    (["runs"], {"command": "runs", "task": None, "all_namespaces": False}),
    (["runs", "hello", "-A"], {"task": "hello", "all_namespaces": True}),
    (["describe", "r"], {"command": "describe", "run": "r"}),
    (["logs", "r"], {"attempt": None, "follow": False}),
    (["logs", "r", "--attempt", "2", "-f"], {"attempt": 2, "follow": True}),
    (["cancel", "r", "--namespace", "x"], {"command": "cancel", "run": ["r"], "namespace": "x", "task": None, "tag": None}),
    (["crds"], {"write": None}),
    (["crds", "--write"], {"write": "crds"}),
    (["crds", "--write", "out"], {"write": "out"}),
    (["runs", "-w"], {"watch": True, "output": None}),
    (["runs", "hello", "-o", "name"], {"task": "hello", "output": "name", "watch": False}),
    (["runs", "--phase", "Failed", "--since", "24h"], {"phase": "Failed", "since": "24h", "tag": None}),
    (["runs", "--phase", "active"], {"phase": "active", "since": None}),
    (["cancel", "--task", "t", "--phase", "Queued"], {"run": [], "task": "t", "phase": "Queued"}),
    (["completion", "fish"], {"command": "completion", "shell": "fish"}),
    # kubectl's flags, as a plugin gets them: before the command or after it, the later winning.
    (["-n", "a", "runs"], {"namespace": "a", "kubeconfig": None, "context": None}),
    (["--context", "c", "--kubeconfig", "k", "runs", "-n", "b"], {"context": "c", "kubeconfig": "k", "namespace": "b"}),
    (["-n", "a", "describe", "r", "--namespace", "b", "--context", "c"], {"namespace": "b", "context": "c"}),
    (["logs", "r", "--kubeconfig", "k"], {"kubeconfig": "k", "namespace": None, "context": None}),
])
def test_parsing(argv, expected):
    args = vars(cli.build_parser().parse_args(argv))
    assert {k: args[k] for k in expected} == expected


@pytest.mark.parametrize("argv", [
    [], ["run"], ["logs", "r", "--attempt", "0"], ["logs", "r", "--attempt", "x"],
    ["run", "t", "--timeout", "-1"], ["nope"], ["runs", "-w", "-o", "name"], ["runs", "-o", "wide"],
    ["completion", "tcsh"], ["completion"], ["runs", "--phase", "failed"], ["cancel", "--task", "t", "--phase", "Failed"],
])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(argv)
    assert e.value.code == 2


def api_error(status: int, body: object, reason: str = "Not Found") -> ApiException:
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps(body) if not isinstance(body, str) else body
    return e


def test_format_api_error_uses_the_status_message():
    e = api_error(404, {"kind": "Status", "message": 'taskruns.kubetasks.io "x" not found'})
    assert cli.format_error(e) == 'error: taskruns.kubetasks.io "x" not found (404)'


def test_format_api_error_without_a_json_body():
    assert cli.format_error(api_error(500, "<html>oops</html>", "Internal Server Error")) == \
        "error: Internal Server Error (500)"


def test_format_multiline_errors_as_one_line():
    e = api_error(422, {"message": "TaskRun is invalid:\n spec.taskRef: Required"}, "Unprocessable")
    line = cli.format_error(e)
    assert "\n" not in line and line.endswith("spec.taskRef: Required (422)")


def test_format_other_errors():
    assert cli.format_error(cli.CliError("no such run")) == "error: no such run"
    assert cli.format_error(ConfigException("Invalid kube-config file.")).startswith(
        "error: no usable Kubernetes configuration: Invalid kube-config file.")
    assert cli.format_error(MaxRetryError(None, "/apis", "refused")).startswith("error: cannot reach the Kubernetes API")
    assert cli.format_error(ConnectionRefusedError("refused")).startswith("error: cannot reach")


def test_main_prints_one_line_and_exits_1(monkeypatch, capsys):
    def boom(*_):
        raise api_error(403, {"message": 'taskruns is forbidden: User "x" cannot list'}, "Forbidden")

    monkeypatch.setitem(cli.COMMANDS, "runs", boom)
    assert cli.main(["runs", "-n", "ns"]) == 1
    err = capsys.readouterr().err
    assert err == 'error: taskruns is forbidden: User "x" cannot list (403)\n'


def test_main_bad_payload_exits_1_before_any_api_call(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_namespace", lambda args: pytest.fail("no API call expected"))
    assert cli.main(["run", "hello", "--payload", "nope"]) == 1
    assert capsys.readouterr().err.startswith("error: --payload is not valid JSON")


def test_a_payload_file_takes_what_the_command_line_cannot(tmp_path, monkeypatch):
    big = {"blob": "x" * 300_000}  # over the 128 KiB one argument holds, and over apply's 256 KiB annotation
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(big))
    assert cli.read_payload(None, str(path)) == big
    monkeypatch.setattr("sys.stdin", io.StringIO('{"n": 1}'))
    assert cli.read_payload(None, "-") == {"n": 1}
    assert cli.read_payload('{"n": 2}', None) == {"n": 2}
    with pytest.raises(cli.CliError, match="--payload-file .*missing.json: No such file"):
        cli.read_payload(None, str(tmp_path / "missing.json"))
    path.write_text("{bad")
    with pytest.raises(cli.CliError, match="--payload-file .* is not valid JSON"):
        cli.read_payload(None, str(path))


def test_run_creates_the_taskrun_without_an_applied_copy(monkeypatch, tmp_path, capsys):
    from kubetasks import kube

    created = []
    monkeypatch.setattr(kube, "get_custom", lambda plural, ns, name: {"metadata": {"name": name}, "spec": {}})
    monkeypatch.setattr(kube, "create_custom", lambda plural, ns, body: created.append(body) or
                        {**body, "metadata": {**body["metadata"], "name": "hello-x1"}})
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"blob": "x" * 300_000}))
    assert cli.main(["run", "hello", "--payload-file", str(path), "-n", "ns"]) == 0
    (body,) = created
    assert len(body["spec"]["payload"]["blob"]) == 300_000
    assert "annotations" not in body["metadata"]
    assert capsys.readouterr().out.strip() == "taskrun/hello-x1 created"


def test_run_wait_follows_a_superseded_run_to_the_one_that_ran(monkeypatch, capsys):
    from kubetasks import kube

    runs = {"hello-x1": {"phase": "Superseded", "supersededBy": "hello-x0"},
            "hello-x0": {"phase": "Succeeded", "result": {"n": 0}, "duration": "3s"}}
    monkeypatch.setattr(kube, "get_custom", lambda plural, ns, name: {"metadata": {"name": name}, "spec": {}})
    monkeypatch.setattr(kube, "create_custom", lambda plural, ns, body: {**body, "metadata": {"name": "hello-x1"}})
    monkeypatch.setattr(kube, "watch_custom", lambda plural, ns, name, timeout: iter([{"status": runs[name]}]))
    assert cli.main(["run", "hello", "-n", "ns", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "taskrun/hello-x1 Superseded: following taskrun/hello-x0" in out
    assert "taskrun/hello-x0 Succeeded in 3s" in out and '"n": 0' in out


def test_crds_prints_every_definition(capsys):
    assert cli.main(["crds"]) == 0
    out = capsys.readouterr().out
    assert out.count("kind: CustomResourceDefinition") == 5 and "\n---\n" in out


def test_crds_write(tmp_path, capsys):
    assert cli.main(["crds", "--write", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["kubetasks.io_taskevents.yaml", "kubetasks.io_taskqueues.yaml", "kubetasks.io_taskruns.yaml", "kubetasks.io_tasks.yaml",
                                                                             "kubetasks.io_waitpoints.yaml"]


def test_kubeconfig_and_context_flags_choose_the_default_namespace(tmp_path, monkeypatch):
    config = tmp_path / "config"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "one",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "one", "context": {"cluster": "c", "user": "u", "namespace": "ns-one"}},
                     {"name": "two", "context": {"cluster": "c", "user": "u", "namespace": "ns-two"}}]}))
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    from kubetasks import kube

    monkeypatch.setattr(kube, "_context", kube._context)  # --context sets it: put back for later tests
    parse = cli.build_parser().parse_args
    for argv, expected in [(["runs", "--kubeconfig", str(config)], "ns-one"),
                           (["--kubeconfig", str(config), "runs", "--context", "two"], "ns-two"),
                           (["runs", "--kubeconfig", str(config), "--context", "two", "-n", "x"], "x")]:
        args = parse(argv)
        cli.use_kube_flags(args)
        assert cli._namespace(args) == expected
    with pytest.raises(cli.CliError, match="context 'three' not found"):
        cli.current_namespace("three")


def test_runs_prints_names_only_with_output_name(monkeypatch, capsys):
    from kubetasks import kube

    monkeypatch.setattr(kube, "list_custom", lambda plural, namespace: [
        taskrun("b", created=ago(seconds=10)), taskrun("a", created=ago(seconds=40)), taskrun("x", task="other")])
    assert cli.main(["runs", "hello", "-n", "ns", "-o", "name"]) == 0
    assert capsys.readouterr().out == "a\nb\n"


def test_runs_filters_by_phase_and_age_and_refuses_a_bad_age(monkeypatch, capsys):
    from kubetasks import kube

    monkeypatch.setattr(kube, "list_custom", lambda plural, namespace: [
        taskrun("old", created=ago(days=3), phase="Failed"), taskrun("new", phase="Failed"),
        taskrun("ok", phase="Succeeded"), taskrun("q", phase="Queued")])
    monkeypatch.setattr(cli, "datetime", type("Clock", (), {"now": staticmethod(lambda tz=None: NOW)}))
    assert cli.main(["runs", "-n", "ns", "--phase", "Failed", "-o", "name"]) == 0
    assert capsys.readouterr().out == "old\nnew\n"
    assert cli.main(["runs", "-n", "ns", "--phase", "Failed", "--since", "24h", "-o", "name"]) == 0
    assert capsys.readouterr().out == "new\n"
    assert cli.main(["runs", "-n", "ns", "--phase", "active", "-o", "name"]) == 0
    assert capsys.readouterr().out == "q\n"
    assert cli.main(["runs", "-n", "ns", "--since", "a while"]) == 1
    assert capsys.readouterr().err.startswith("error: --since: ")


def test_bash_completion_loads_and_completes_commands_and_options():
    """The script `kubetasks completion bash` prints, sourced in bash, asks this very program."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "kubetasks").exists():
        pytest.fail(f"no kubetasks console script beside {sys.executable}: pip install -e .")
    script = r"""
        source <(kubetasks completion bash)
        complete -p kubetasks kubectl-kubetasks
        complete_line() {
            COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<<"$1"; COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
            _python_argcomplete kubetasks; echo "[$1] ${COMPREPLY[*]}"
        }
        complete_line "kubetasks desc"
        complete_line "kubetasks runs --wa"
        complete_line "kubetasks completion "
    """
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([shutil.which("bash") or "bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("complete ") and lines[0].endswith(" kubetasks"), done.stdout
    assert lines[1].endswith(" kubectl-kubetasks")
    assert "[kubetasks desc] describe" in lines[2].rstrip()
    assert "[kubetasks runs --wa] --watch" in lines[3].rstrip()
    assert {"bash", "fish", "zsh"} <= set(lines[4].split("] ")[1].split())


@pytest.mark.parametrize("argv, expected", [
    (["runs", "--w"], "--watch\n:4\n"),
    (["__complete", "completion", "f"], "fish\n:4\n"),
    (["desc"], "describe\n:4\n"),
])
def test_kubectl_plugin_completion_speaks_cobra(argv, expected):
    """What kubectl (1.26+) reads from kubectl_complete-kubetasks: a completion a line, then :4.
    In a process of its own, as kubectl runs it (argcomplete opens fd 9, pytest's, for debugging)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "from kubetasks.cli.main import kubectl_complete; kubectl_complete()",
                           *argv], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, expected), done.stderr


def _runs_to_cancel() -> list[dict]:
    def run(name: str, task: str, phase: str | None, created: str, tags: list[str] | None = None,
            cancel: bool = False) -> dict:
        return {"metadata": {"name": name, "creationTimestamp": created},
                "spec": {"taskRef": task, "tags": tags or [], **({"cancel": True} if cancel else {})},
                "status": {"phase": phase} if phase else {}}

    return [run("b", "sync", "Running", "2026-12-07T10:00:02Z", ["nightly"]),
            run("a", "sync", None, "2026-12-07T10:00:01Z"),  # just created: no status yet
            run("c", "sync", "Succeeded", "2026-12-07T10:00:00Z", ["nightly"]),
            run("d", "sync", "Queued", "2026-12-07T10:00:03Z", ["nightly"], cancel=True),  # asked already
            run("e", "mail", "Sleeping", "2026-12-07T10:00:04Z", ["nightly"])]


def test_cancel_candidates_are_the_unfinished_matching_runs_not_yet_asked():
    runs = _runs_to_cancel()
    def candidates(task=None, tag=None, phase=None):
        return cli.cancel_candidates(runs, tables.run_filter(task, tag, phase))

    assert candidates("sync") == ["a", "b"]  # oldest first
    assert candidates(tag="nightly") == ["b", "e"]
    assert candidates("sync", "nightly") == ["b"]
    assert candidates("other") == []
    assert candidates("sync", phase="Pending") == ["a"] and candidates(tag="nightly", phase="Sleeping") == ["e"]
    assert candidates("sync", phase="Queued") == []  # d was asked already


def test_cancel_by_task_patches_each_match_and_says_how_many(monkeypatch, capsys):
    from kubetasks import kube

    patched = []
    monkeypatch.setattr(kube, "list_custom", lambda plural, ns: _runs_to_cancel())
    monkeypatch.setattr(kube, "patch_spec", lambda plural, ns, name, patch: patched.append((ns, name, patch)))
    assert cli.main(["cancel", "--task", "sync", "-n", "ns"]) == 0
    assert patched == [("ns", "a", {"spec": {"cancel": True}}), ("ns", "b", {"spec": {"cancel": True}})]
    assert capsys.readouterr().out.splitlines() == [
        "taskrun/a cancel requested", "taskrun/b cancel requested", "2 cancels requested (of sync)"]
    assert cli.main(["cancel", "--tag", "none", "-n", "ns"]) == 0 and len(patched) == 2
    assert capsys.readouterr().err.strip() == "No unfinished runs tagged none to cancel."
    assert cli.main(["cancel", "--task", "sync", "--phase", "Running", "-n", "ns"]) == 0
    assert patched[2:] == [("ns", "b", {"spec": {"cancel": True}})]
    assert capsys.readouterr().out.splitlines()[-1] == "1 cancel requested (of sync in phase Running)"


def test_cancel_of_several_names_cancels_the_unfinished_and_names_the_rest(monkeypatch, capsys):
    from kubetasks import kube

    runs = {r["metadata"]["name"]: r for r in _runs_to_cancel()}
    patched = []
    monkeypatch.setattr(kube, "get_custom", lambda plural, ns, name: runs[name])
    monkeypatch.setattr(kube, "patch_spec", lambda plural, ns, name, patch: patched.append(name))
    assert cli.main(["cancel", "c", "b", "a", "-n", "ns"]) == 1
    assert patched == ["b", "a"]  # the finished one stopped neither
    captured = capsys.readouterr()
    assert captured.err == "error: taskrun c already finished (Succeeded)\n"
    assert captured.out.splitlines() == ["taskrun/b cancel requested", "taskrun/a cancel requested"]


@pytest.mark.parametrize("argv, said", [
    (["cancel"], "name the runs to cancel, or give --task TASK or --tag TAG"),
    (["cancel", "r", "--task", "sync"], "name the runs to cancel, or give --task TASK or --tag TAG"),
    (["cancel", "r", "--phase", "Queued"], "--phase chooses among the runs of --task or --tag"),
])
def test_cancel_takes_names_or_a_filter(argv, said, monkeypatch, capsys):
    from kubetasks import kube

    monkeypatch.setattr(kube, "patch_spec", lambda *a: pytest.fail("nothing is to be cancelled"))
    assert cli.main([*argv, "-n", "ns"]) == 1
    assert said in capsys.readouterr().err
