"""@task definitions, their Task manifests, and the TaskRuns that triggering creates."""

import copy
import importlib
from datetime import timedelta

import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

from kubetasks.api.common import Machine
from kubetasks.api.task import TaskSpec
from kubetasks.api.taskrun import TaskRunSpec
from kubetasks.core.naming import idempotent_run_name
from kubetasks.runtime import PermanentError, RunFailed, TaskDefinition, get_task, task
from kubetasks.runtime.errors import IdempotencyConflict
from kubetasks.runtime.task import call_arguments, register, default_task_id, payload_model_of
from kubetasks.runtime.trigger import (
    finished_result, payload_of, task_id_of, taskrun_manifest, trigger, trigger_digest,
)

trigger_module = importlib.import_module("kubetasks.runtime.trigger")  # the package exports a function of that name


class Email(BaseModel):
    to: str
    subject: str = ""


class Sent(BaseModel):
    message_id: str


@task(id="send-email", retry=5, machine="small-2x", max_duration=600, stop_grace_period="30s", payload=None)
def send_email(payload: Email, ctx) -> Sent:
    return Sent(message_id=f"<{payload.to}>")


@task
def resize_images(payload):
    return payload


def test_a_task_keeps_its_settings_and_still_calls_the_function():
    assert isinstance(send_email, TaskDefinition)
    assert send_email.id == "send-email" and get_task("send-email") is send_email
    assert send_email.retry.max_attempts == 5
    assert send_email.machine == Machine(preset="small-2x")
    assert send_email.max_duration == "600s"
    assert send_email.payload_model is Email and send_email.result_model is Sent
    assert send_email(Email(to="a@b"), None) == Sent(message_id="<a@b>")
    assert send_email.__name__ == "send_email" and send_email.entrypoint == f"{__name__}:send_email"


def test_ids_default_to_the_function_name_and_must_be_dns_labels():
    assert resize_images.id == "resize-images" == default_task_id(resize_images.fn)
    with pytest.raises(ValueError, match="DNS-1123"):
        task(id="Bad_Id")(lambda p: p)
    with pytest.raises(ValidationError):
        task(id="ok-machine", machine="huge")(lambda p: p)


def test_an_id_names_one_function():
    def other(payload):
        return None

    with pytest.raises(ValueError, match="already used by"):
        task(id="send-email")(other)
    again = task(id="send-email")(send_email.fn)  # re-declaring the same function (a re-import) is fine
    assert get_task("send-email") is again
    register(send_email)


def test_payload_models_come_from_the_first_parameter_or_the_decorator():
    def annotated(order: Email, ctx):
        pass

    def untyped(payload, ctx):
        pass

    def ctx_only(ctx: Email):
        pass

    assert payload_model_of(annotated) is Email
    assert payload_model_of(untyped) is None and payload_model_of(ctx_only) is None
    assert payload_model_of(untyped, Email) is Email


def test_call_arguments_follow_the_signature():
    assert call_arguments(lambda: 0, "p", "c") == ()
    assert call_arguments(lambda payload: 0, "p", "c") == ("p",)
    assert call_arguments(lambda ctx: 0, "p", "c") == ("c",)
    assert call_arguments(lambda payload, ctx: 0, "p", "c") == ("p", "c")
    assert call_arguments(lambda *args: 0, "p", "c") == ("p", "c")


def test_task_manifest_is_a_valid_task_with_the_payload_schema():
    manifest = send_email.to_task_manifest("registry.example/app:1.2", namespace="jobs", concurrency=4)
    assert manifest["apiVersion"] == "kubetasks.io/v1alpha1" and manifest["kind"] == "Task"
    assert manifest["metadata"] == {"name": "send-email", "namespace": "jobs"}
    spec = manifest["spec"]
    assert spec["entrypoint"] == f"{__name__}:send_email"
    assert spec["retry"] == {"maxAttempts": 5} and spec["machine"] == {"preset": "small-2x"}
    assert spec["maxDuration"] == "600s" and spec["concurrency"] == {"limit": 4} and spec["stopGracePeriod"] == "30s"
    assert spec["payloadSchema"]["required"] == ["to"]
    assert TaskSpec.model_validate(spec).entrypoint == spec["entrypoint"]
    assert resize_images.to_task_manifest("img:1", entrypoint="app.jobs:resize")["spec"] == {
        "image": "img:1", "entrypoint": "app.jobs:resize"}


def test_taskrun_manifest_uses_generate_name_without_a_key():
    body = taskrun_manifest("send-email", {"to": "x"}, namespace="jobs")
    assert body["metadata"] == {"namespace": "jobs", "labels": {"kubetasks.io/task": "send-email"},
                                "generateName": "send-email-"}
    assert body["spec"] == {"taskRef": "send-email", "payload": {"to": "x"}}


def test_taskrun_manifest_with_every_option_is_a_valid_spec():
    body = taskrun_manifest("send-email", [1], namespace="jobs", delay=timedelta(minutes=5),
                            idempotency_key="order-7", tags=["a", "b"], machine="large-1x", parent_run="parent-x1")
    assert body["metadata"]["name"] == idempotent_run_name("send-email", "order-7")
    assert body["metadata"]["annotations"] == {"kubetasks.io/idempotent-trigger": trigger_digest("send-email", "order-7", [1])}
    assert "generateName" not in body["metadata"]
    assert body["spec"] == {"taskRef": "send-email", "payload": [1], "delay": "300s", "idempotencyKey": "order-7",
                            "tags": ["a", "b"], "machine": {"preset": "large-1x"}, "parentRun": "parent-x1"}
    TaskRunSpec.model_validate(body["spec"])
    assert taskrun_manifest("t", None, namespace="n", machine={"memory": "2Gi"})["spec"]["machine"] == {"memory": "2Gi"}


def test_payloads_are_checked_before_a_run_is_created():
    assert payload_of(send_email, {"to": "x"}) == {"to": "x"}
    assert payload_of("any-task", Email(to="y")) == {"to": "y", "subject": ""}
    with pytest.raises(ValidationError):
        payload_of(send_email, {"subject": "no recipient"})
    with pytest.raises(TypeError):
        payload_of("any-task", {"x": object()})


def test_tasks_are_referenced_by_definition_or_id():
    assert task_id_of(send_email) == "send-email" and task_id_of("other") == "other"
    with pytest.raises(TypeError):
        task_id_of(42)


def test_finished_results_and_failures():
    assert finished_result("r", {}) == (False, None)
    assert finished_result("r", {"phase": "Running"}) == (False, None)
    assert finished_result("r", {"phase": "Succeeded", "result": {"ok": 1}}) == (True, {"ok": 1})
    with pytest.raises(RunFailed, match="TaskRun r ended Failed: KeyError: 'x'") as failed:
        finished_result("r", {"phase": "Failed", "error": {"type": "KeyError", "message": "'x'"}})
    assert failed.value.phase == "Failed" and failed.value.error["type"] == "KeyError"
    for phase in ("Cancelled", "TimedOut"):
        with pytest.raises(RunFailed, match=phase):
            finished_result("r", {"phase": phase})


# Idempotency keys: a run that holds the key's name is returned only when it is this trigger's ----

class FakeCustomApi:
    """The calls trigger() makes, on an in-memory set of TaskRuns."""

    def __init__(self, *runs: dict, readable: bool = True) -> None:
        self.runs = {r["metadata"]["name"]: copy.deepcopy(r) for r in runs}
        self.readable = readable
        self.creates = 0

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.creates += 1
        if body["metadata"]["name"] in self.runs:
            raise ApiException(status=409, reason="AlreadyExists")
        self.runs[body["metadata"]["name"]] = copy.deepcopy(body)
        return copy.deepcopy(body)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        if not self.readable:
            raise ApiException(status=403, reason="Forbidden")
        if name not in self.runs:
            raise ApiException(status=404, reason="NotFound")
        return copy.deepcopy(self.runs[name])


@pytest.fixture
def fake_api(monkeypatch):
    def install(*runs: dict, readable: bool = True) -> FakeCustomApi:
        api = FakeCustomApi(*runs, readable=readable)
        monkeypatch.setattr(trigger_module, "_custom", lambda: api)
        monkeypatch.delenv("KUBETASKS_RUN", raising=False)
        return api
    return install


ORDER = {"to": "a@b", "subject": "order 99"}


def keyed(payload=ORDER, key="order-99", task_id="send-email"):
    return taskrun_manifest(task_id, payload, namespace="jobs", idempotency_key=key)


def test_a_keyed_run_carries_the_digest_of_task_key_and_payload():
    body = keyed()
    digest = body["metadata"]["annotations"]["kubetasks.io/idempotent-trigger"]
    assert digest == trigger_digest("send-email", "order-99", ORDER) == trigger_digest("send-email", "order-99", dict(ORDER))
    assert len({digest, trigger_digest("send-email", "order-98", ORDER), trigger_digest("other", "order-99", ORDER),
                trigger_digest("send-email", "order-99", {**ORDER, "subject": "x"})}) == 4
    assert trigger_digest("t", "k", {"n": 1.0}) == trigger_digest("t", "k", {"n": 1})  # as the API server returns it
    assert "annotations" not in taskrun_manifest("send-email", ORDER, namespace="jobs")["metadata"]


def test_triggering_a_key_again_returns_the_same_run(fake_api):
    api = fake_api()
    first = trigger(send_email, ORDER, idempotency_key="order-99", namespace="jobs")
    again = trigger(send_email, dict(ORDER), idempotency_key="order-99", namespace="jobs")
    assert first.name == again.name == idempotent_run_name("send-email", "order-99")
    assert api.creates == 2 and list(api.runs) == [first.name]


def test_a_run_squatting_the_keys_name_is_never_returned(fake_api):
    name = idempotent_run_name("send-email", "order-99")
    squatter = {"metadata": {"name": name, "namespace": "jobs"},
                "spec": {"taskRef": "send-email", "payload": {"to": "attacker@evil"}, "idempotencyKey": "order-99"}}
    fake_api(squatter)
    with pytest.raises(IdempotencyConflict, match="has another payload") as conflict:
        trigger(send_email, ORDER, idempotency_key="order-99", namespace="jobs")
    assert conflict.value.run == name and "attacker" not in str(conflict.value)


@pytest.mark.parametrize("change, reason", [
    (lambda r: r["spec"].update(taskRef="privileged"), "runs task 'privileged'"),
    (lambda r: r["spec"].pop("idempotencyKey"), "has another idempotency key, or none"),
    (lambda r: r["metadata"].pop("annotations"), "was not made by trigger() with this key"),
    (lambda r: r["metadata"]["annotations"].update({"kubetasks.io/idempotent-trigger": "0" * 64}),
     "was not made by trigger() with this key"),
])
def test_every_difference_from_this_triggers_run_is_a_conflict(fake_api, change, reason):
    existing = keyed()
    change(existing)
    fake_api(existing)
    with pytest.raises(IdempotencyConflict) as conflict:
        trigger(send_email, ORDER, idempotency_key="order-99", namespace="jobs")
    assert reason in str(conflict.value)
    assert isinstance(conflict.value, PermanentError)  # inside a task: the run fails, no retry loop


def test_a_key_with_another_payload_than_its_first_trigger_is_a_conflict(fake_api):
    fake_api()
    trigger(send_email, ORDER, idempotency_key="order-99", namespace="jobs")
    with pytest.raises(IdempotencyConflict, match="has another payload"):
        trigger(send_email, {"to": "c@d"}, idempotency_key="order-99", namespace="jobs")


def test_a_run_that_cannot_be_read_is_not_returned_unverified(fake_api):
    fake_api(keyed(), readable=False)
    with pytest.raises(IdempotencyConflict, match="cannot be verified"):
        trigger(send_email, ORDER, idempotency_key="order-99", namespace="jobs")


def test_a_conflict_without_a_key_is_an_api_error(fake_api):
    api = fake_api()
    api.runs["x"] = {}
    body = taskrun_manifest("send-email", ORDER, namespace="jobs")
    body["metadata"]["name"] = "x"
    with pytest.raises(ApiException):
        trigger_module._create(body, None)


def test_wait_treats_403_and_404_as_not_yet_while_the_operator_grants_access(monkeypatch):
    from kubernetes.client.exceptions import ApiException

    trig = importlib.import_module("kubetasks.runtime.trigger")  # the package's `trigger` is the function
    answers = [ApiException(status=403), ApiException(status=404), {"phase": "Succeeded", "result": 7}]

    def get(self, name=None):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return {"status": answer}

    monkeypatch.setattr(trig.RunHandle, "get", get)
    monkeypatch.setattr(trig.time, "sleep", lambda s: None)
    assert trig.RunHandle("child", "ns").wait() == 7
    monkeypatch.setattr(trig, "ACCESS_GRACE_SECONDS", 0.0)  # past the grace, a 403 is an answer
    answers[:] = [ApiException(status=403)]
    with pytest.raises(ApiException):
        trig.RunHandle("child", "ns").wait()


def test_wait_follows_a_superseded_or_duplicate_run_to_the_one_that_ran(monkeypatch):
    trig = importlib.import_module("kubetasks.runtime.trigger")
    runs = {"d1": {"phase": "Duplicate", "duplicateOf": "d0"},  # a Duplicate of a run later superseded
            "d0": {"phase": "Superseded", "supersededBy": "d2"},
            "d2": {"phase": "Superseded", "supersededBy": "d3"},  # trailing: a chain
            "d3": {"phase": "Succeeded", "result": {"n": 3}}}
    asked: list[str] = []

    def get(self, name=None):
        asked.append(name or self.name)
        return {"status": runs[name or self.name]}

    monkeypatch.setattr(trig.RunHandle, "get", get)
    monkeypatch.setattr(trig.time, "sleep", lambda s: None)
    assert trig.RunHandle("d1", "ns").wait() == {"n": 3}
    assert asked == ["d1", "d0", "d2", "d3"]
    runs["d3"] = {"phase": "Skipped"}
    with pytest.raises(trig.RunFailed, match="d3 ended Skipped"):
        trig.RunHandle("d1", "ns").wait()


def test_a_misspelt_task_option_is_refused_not_ignored():
    with pytest.raises(TypeError, match="retires"):
        @task(id="spelt", retires=3)
        def spelt(payload: object) -> None: ...
