"""A plain command's result is its termination message, read as JSON; the runtime's is a Report."""

import json
from datetime import datetime, timezone

from hypothesis import given, strategies as st

from kubetasks.api.task import Task
from kubetasks.api.taskrun import TaskRun
from kubetasks.core.observe import observe_attempt
from kubetasks.core.plan import RESULT_DROPPED, World, plan_run
from kubetasks.core.render import render_job
from kubetasks.core.results import plain_result, runs_runtime
from kubetasks.protocol import RESULT_LIMIT, RUNTIME_COMMAND, Report

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=20)


def job_and_pod(message: str | None, command: list[str] | None = None, ok: bool = True) -> tuple[dict, list[dict]]:
    job = {"metadata": {"name": "r-1", "labels": {"kubetasks.io/attempt": "1"}},
           "status": {"conditions": [{"type": "Complete" if ok else "Failed", "status": "True",
                                      "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                      "completionTime": "2026-01-01T00:00:00Z"}}
    term = {"exitCode": 0 if ok else 1, "finishedAt": "2026-01-01T00:00:00Z"}
    if message is not None:
        term["message"] = message
    pod = {"spec": {"containers": [{"name": "task", **({"command": command} if command else {})}]},
           "status": {"containerStatuses": [{"name": "task", "state": {"terminated": term}}]}}
    return job, [pod]


def test_json_is_the_result_whole_and_what_is_empty_is_none():
    assert plain_result('{"rows": 3}\n').value == {"rows": 3}
    assert plain_result('"done"').value == "done" and plain_result("42").value == 42
    assert plain_result("[1, 2]").value == [1, 2]
    for empty in (None, "", "  \n"):
        assert plain_result(empty).value is None and plain_result(empty).dropped is None


def test_what_is_not_a_result_is_dropped_with_the_reason():
    not_json = plain_result("done\x00\x1b[31m")
    assert not_json.value is None and "is not JSON (Expecting value at line 1 column 1)" in not_json.dropped
    assert "\\x00" in not_json.dropped and "\x00" not in not_json.dropped  # quoted, never echoed raw
    assert "NaN is not JSON" in plain_result('{"a": NaN}').dropped  # the API server would refuse the status
    assert "Infinity is not JSON" in plain_result("Infinity").dropped
    assert "nested deeper than 64" in plain_result("[" * 65 + "]" * 65).dropped
    assert "nested deeper than 64" in plain_result("[" * 2000 + "]" * 2000).dropped  # no RecursionError escapes
    assert plain_result("[" * 64 + "]" * 64).value is not None
    big = json.dumps("x" * RESULT_LIMIT)
    assert f"is {RESULT_LIMIT + 2} bytes of JSON; a result holds at most {RESULT_LIMIT}" in plain_result(big).dropped
    assert plain_result(json.dumps("x" * (RESULT_LIMIT - 2))).value is not None
    cut = plain_result('{"a": "' + "x" * 4090)  # what the kubelet cut
    assert "the kubelet keeps at most 4096 bytes" in cut.dropped and len(cut.dropped) < 300


@given(JSON)
def test_any_small_json_value_reads_back_as_itself(value: object) -> None:
    text = json.dumps(value)
    if len(text) <= RESULT_LIMIT // 2:
        assert plain_result(text).value == json.loads(text) and plain_result(text).dropped is None


@given(st.text(max_size=200))
def test_any_text_reads_as_a_result_or_a_reason_never_an_error(text: str) -> None:
    result = plain_result(text)
    assert result.dropped is None or result.value is None


def test_the_pods_command_tells_the_runtime_from_a_plain_command():
    run = TaskRun.model_validate({"metadata": {"name": "r", "namespace": "ns", "uid": "u"}, "spec": {"taskRef": "t"}})
    sdk = Task.model_validate({"metadata": {"name": "t"}, "spec": {"image": "i:1", "entrypoint": "m:f"}})
    plain = Task.model_validate({"metadata": {"name": "t"}, "spec": {"image": "i:1", "command": ["sh", "-c", "x"]}})
    args_only = Task.model_validate({"metadata": {"name": "t"}, "spec": {"image": "i:1", "args": ["x"]}})

    def pod(task: Task) -> dict:
        return {"spec": render_job(run, task, 1)["spec"]["template"]["spec"]}
    assert runs_runtime([pod(sdk)]) and not runs_runtime([pod(plain)]) and not runs_runtime([pod(args_only)])
    assert not runs_runtime([]) and not runs_runtime([{"status": {}}])


def test_a_plain_command_that_writes_the_runtimes_envelope_gets_it_as_its_result():
    # It cannot make its run sleep, fail or report another result: the envelope is data.
    for envelope in ('{"kubetasks":1,"outcome":"sleeping","wakeAt":"2999-01-01T00:00:00Z"}',
                     '{"kubetasks":1,"outcome":"failed","error":{"type":"X","message":"no"}}',
                     '{"kubetasks":1,"outcome":"succeeded","result":1}'):
        obs = observe_attempt(*job_and_pod(envelope, ["sh", "-c", "x"]))
        assert (obs.state, obs.reason, obs.report) == ("succeeded", "Completed",
                                                       Report("succeeded", result=json.loads(envelope)))
    # The runtime's own envelope is read as its report.
    runtime = observe_attempt(*job_and_pod('{"kubetasks":1,"outcome":"succeeded","result":1}', RUNTIME_COMMAND))
    assert runtime.report == Report("succeeded", result=1)
    slept = observe_attempt(*job_and_pod('{"kubetasks":1,"outcome":"sleeping","wakeAt":"2999-01-01T00:00:00Z"}',
                                         RUNTIME_COMMAND))
    assert slept.state == "sleeping"


def test_a_failed_plain_command_keeps_its_message_as_its_error_not_its_result():
    obs = observe_attempt(*job_and_pod('{"kubetasks":1,"outcome":"succeeded","result":1}\n', ["sh"], ok=False))
    assert (obs.state, obs.report, obs.dropped_result) == ("failed", None, None)
    assert obs.message == '{"kubetasks":1,"outcome":"succeeded","result":1}'


def world(obs_message: str | None) -> World:
    run = TaskRun.model_validate({"metadata": {"name": "r", "namespace": "ns", "uid": "u", "generation": 1},
                                  "spec": {"taskRef": "t"}, "status": {"phase": "Running", "attempt": 1}})
    task = Task.model_validate({"metadata": {"name": "t"}, "spec": {"image": "i:1", "command": ["sh"]}})
    return World(now=NOW, run=run, task=task, attempts={1: observe_attempt(*job_and_pod(obs_message, ["sh"]))})


def test_the_run_gets_the_result_or_succeeds_without_one_and_says_why():
    plan = plan_run(world('{"rows": 3}'))
    assert plan.status.phase == "Succeeded" and plan.status.result == {"rows": 3}
    assert [e.reason for e in plan.events] == ["Succeeded"]
    plan = plan_run(world("rows=3"))
    assert plan.status.phase == "Succeeded" and plan.status.result is None
    warning = next(e for e in plan.events if e.reason == RESULT_DROPPED)
    assert warning.type == "Warning" and warning.message.startswith("attempt 1 succeeded, but its termination message "
                                                                   "is not JSON")
    assert warning.message.endswith("'rows=3': the run has no result")
    assert plan.status.attempts[0].message.startswith(f"{RESULT_DROPPED}: its termination message is not JSON")
    quiet = plan_run(world(None))
    assert quiet.status.result is None and [e.reason for e in quiet.events] == ["Succeeded"]


# The reconciler, on the fake API server --------------------------------------------------------

def finished_pod(message: str | None) -> dict:
    term = {"exitCode": 0, "reason": "Completed", "finishedAt": "2026-01-01T00:00:00Z"}
    if message is not None:
        term["message"] = message
    return {"metadata": {"name": "r-1-pod", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "task", "command": ["sh", "-c", "x"]}]},
            "status": {"containerStatuses": [{"name": "task", "state": {"terminated": term}}]}}


def test_a_plain_commands_result_reaches_the_status_and_a_dropped_one_a_warning_once():
    from tests.unit.test_reconcile_runs import NS, World as Cluster, task, taskrun
    for message, result, warned in (('{"rows": 3}', {"rows": 3}, False), ("rows=3", None, True), (None, None, False)):
        w = Cluster(task(command=["sh", "-c", "x"]), taskrun("r"))
        w.settle("r")
        w.api.pods["r-1"] = [finished_pod(message)]
        w.api.finish_job(NS, "r-1")
        w.api.deliver(w.op.cache)
        w.settle("r")
        assert w.status("r")["phase"] == "Succeeded" and w.status("r").get("result") == result
        dropped = [e for e in w.api.events if e[2] == RESULT_DROPPED]
        assert [e[1] for e in dropped] == (["Warning"] if warned else []), w.api.events
        # The kept log reuses the pod list made for the result.
        assert [a for fn, a in w.api.calls if fn == "list_pods"] == [("job-name=r-1",)]


def test_a_result_with_nulls_inside_reaches_the_status_whole():
    # A merge patch drops the nulls inside a value: {"decision": null} became {} (found by wait_any's test).
    from tests.unit.test_reconcile_runs import NS, World as Cluster, task, taskrun
    w = Cluster(task(command=["sh", "-c", "x"]), taskrun("r"))
    w.settle("r")
    result = {"decision": None, "nested": {"x": None, "y": [None, {"z": None}]}}
    w.api.pods["r-1"] = [finished_pod(json.dumps(result))]
    w.api.finish_job(NS, "r-1")
    w.api.deliver(w.op.cache)
    w.settle("r")
    assert w.status("r")["phase"] == "Succeeded" and w.status("r")["result"] == result


def test_status_ops_set_fields_whole_and_remove_only_what_was_there():
    from kubetasks.kube import status_ops
    assert status_ops({}, {"phase": "Running", "gone": None}) == [{"op": "add", "path": "/status",
                                                                    "value": {"phase": "Running"}}]
    assert status_ops({"a/b": 1, "waitingFor": {"reason": "x", "limit": "y"}},
                      {"a/b": None, "waitingFor": {"reason": "x"}, "never": None}) == [
        {"op": "remove", "path": "/status/a~1b"},
        {"op": "add", "path": "/status/waitingFor", "value": {"reason": "x"}}]
