"""How the runtime gets its payload: the file the operator mounts, else (too large for the file)
the TaskRun; and the payload's share of the checkpoint ConfigMap."""

import base64
import hashlib
import json
import os

import pytest
from kubernetes.client.exceptions import ApiException

from kubetasks import protocol
from kubetasks.protocol import Report
from kubetasks.runtime import MemoryStore, kube
from kubetasks.runtime.checkpoints import Checkpoint, Checkpoints, configmap_key
from kubetasks.runtime.entry import Invocation, invocation_from_env, main, payload_text, run_task
from kubetasks.runtime.errors import CheckpointTooLarge

HERE = __name__


def digest(payload, ctx):
    return {"sha256": hashlib.sha256(json.dumps(payload).encode()).hexdigest(), "type": type(payload).__name__}


class FakeRuns:
    """Stands in for GET taskruns: records calls, answers with one TaskRun."""

    def __init__(self, payload=None, uid="uid-1"):
        self.run = {"metadata": {"name": "r1", "namespace": "ns", "uid": uid}, "spec": {"taskRef": "t", "payload": payload}}
        self.calls: list[tuple[str, str]] = []

    def __call__(self, namespace, name):
        self.calls.append((namespace, name))
        return self.run


def invocation(payload_file=None, payload=None) -> Invocation:
    return Invocation(entrypoint=f"{HERE}:digest", payload=payload, run="r1", run_uid="uid-1", namespace="ns",
                      task="t", payload_file=None if payload_file is None else str(payload_file))


def sha(payload) -> str:
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def test_the_operator_names_the_file_in_the_environment():
    inv = invocation_from_env({protocol.ENV_PAYLOAD_FILE: "/var/run/kubetasks/payload.json", protocol.ENV_RUN: "r"})
    assert inv.payload_file == "/var/run/kubetasks/payload.json" and inv.payload is None


def test_the_payload_is_read_from_its_file(tmp_path):
    path = tmp_path / "payload.json"
    payload = {"name": "bø", "n": [1, 2]}
    path.write_text(protocol.encode_payload(payload), encoding="utf-8")
    runs = FakeRuns()
    result = run_task(invocation(path), MemoryStore(), read_run=runs)
    assert result.code == 0 and result.report.result == {"sha256": sha(payload), "type": "dict"}
    assert runs.calls == []  # the file is enough: no API call


def test_without_the_file_the_payload_comes_from_the_taskrun(tmp_path):
    big = base64.b64encode(os.urandom(1024 * 1024)).decode()  # over the file limit, as the operator leaves it out
    runs = FakeRuns({"blob": big})
    result = run_task(invocation(tmp_path / "absent.json"), MemoryStore(), read_run=runs)
    assert result.code == 0, result.report
    assert result.report.result["sha256"] == sha({"blob": big})
    assert runs.calls == [("ns", "r1")]


def test_a_taskrun_recreated_under_the_same_name_is_not_this_run(tmp_path):
    result = run_task(invocation(tmp_path / "absent.json"), MemoryStore(), read_run=FakeRuns({"a": 1}, uid="uid-2"))
    assert result.code == protocol.EXIT_RETRYABLE
    assert "is now another run (uid uid-2, this attempt's is uid-1)" in result.report.error_message


def test_reading_the_taskrun_failing_is_a_retryable_attempt(tmp_path):
    def forbidden(namespace, name):
        raise ApiException(status=403, reason="Forbidden")

    result = run_task(invocation(tmp_path / "absent.json"), MemoryStore(), read_run=forbidden)
    assert result.code == protocol.EXIT_RETRYABLE and "Forbidden" in result.report.error_message


def test_payload_in_the_environment_still_works_for_local_runs_and_older_operators(tmp_path):
    runs = FakeRuns()
    assert payload_text(invocation(tmp_path / "absent.json", payload='{"a":1}'), runs) == '{"a":1}'
    assert payload_text(invocation(), runs) is None  # no file named, nothing given: no payload
    assert runs.calls == []


def test_main_reads_the_file_at_the_limit_intact(tmp_path):
    payload = "x" * (protocol.PAYLOAD_FILE_LIMIT - 2)
    path = tmp_path / "payload.json"
    path.write_text(protocol.encode_payload(payload))
    assert path.stat().st_size == protocol.PAYLOAD_FILE_LIMIT
    log = tmp_path / "termination-log"
    env = {protocol.ENV_ENTRYPOINT: f"{HERE}:digest", protocol.ENV_PAYLOAD_FILE: str(path), protocol.ENV_RUN: "r1",
           "KUBETASKS_TERMINATION_LOG": str(log)}
    assert main(env) == 0
    assert Report.decode(log.read_text()).result == {"sha256": sha(payload), "type": "str"}


def test_the_payload_counts_against_the_configmaps_total(tmp_path):
    payload = "x" * (protocol.PAYLOAD_FILE_LIMIT - 2)
    store = MemoryStore({protocol.PAYLOAD_KEY: protocol.encode_payload(payload)})
    checkpoints = Checkpoints(store)
    room = protocol.TOTAL_LIMIT - protocol.PAYLOAD_FILE_LIMIT - len(protocol.PAYLOAD_KEY)
    for i in range(3):  # three records of 200 KiB fit next to a 256 KiB payload...
        checkpoints.put(Checkpoint(key=f"s{i}", result="y" * 200 * 1024, attempt=1))
        room -= len(store.data[configmap_key(f"s{i}")]) + len(configmap_key(f"s{i}"))
    assert 0 < room < 200 * 1024
    with pytest.raises(CheckpointTooLarge, match=r"the payload's 262144 included; the limit is 921600"):
        checkpoints.put(Checkpoint(key="s3", result="y" * 200 * 1024, attempt=1))  # ...a fourth does not
    assert protocol.PAYLOAD_KEY in store.data and configmap_key("s3") not in store.data


def test_the_payload_key_is_not_a_checkpoint(caplog):
    from kubetasks.runtime.checkpoints import parse_checkpoints, steps_from_configmap

    assert steps_from_configmap is protocol.steps_from_configmap  # the operator's old import still works
    assert parse_checkpoints({protocol.PAYLOAD_KEY: "{}"}) == {}
    assert "unreadable" not in caplog.text


def test_transient_api_errors_are_retried(monkeypatch):
    monkeypatch.setattr(kube.time, "sleep", lambda s: None)
    answers = [ApiException(status=503), ApiException(status=429), {"ok": True}]

    def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert kube.with_retries(call, "x") == {"ok": True}
    with pytest.raises(ApiException):
        kube.with_retries(lambda: (_ for _ in ()).throw(ApiException(status=404)), "x")


def test_the_sdk_client_gives_every_request_a_timeout(monkeypatch):
    import kubernetes

    from kubetasks.runtime import kube as runtime_kube

    seen = {}
    monkeypatch.setattr(kubernetes.client.ApiClient, "call_api",
                        lambda self, method, url, *a, **kw: seen.setdefault("timeout", kw.get("_request_timeout")))
    monkeypatch.setattr(kubernetes.config, "load_kube_config", lambda **kw: None)  # no cluster needed
    monkeypatch.setattr(runtime_kube, "_client", None)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    runtime_kube.api_client().call_api("GET", "https://127.0.0.1:1/api")
    assert seen["timeout"] == runtime_kube.REQUEST_TIMEOUT
    monkeypatch.setattr(runtime_kube, "_client", None)
