"""Flow-control options of a new run (issue 19): trigger(), batch_trigger() and a task's own
methods write concurrencyKey, priority and debounce into the spec, and refuse a bad value
before anything is created."""

import importlib
from datetime import timedelta

import pytest

from kubetasks import Debounce as TopLevelDebounce
from kubetasks.api.taskrun import TaskRunSpec
from kubetasks.runtime import Debounce, batch_trigger, task, trigger
from kubetasks.runtime.flow import debounce_of, flow_spec
from kubetasks.runtime.trigger import taskrun_manifest

trigger_module = importlib.import_module("kubetasks.runtime.trigger")


@task(id="flow-sdk-report")
def report(payload: dict) -> None:
    return None


class Creates:
    """The create calls trigger() makes (generateName taken as the name)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.bodies.append(body)
        return {"metadata": {"name": f"{body['metadata']['generateName']}{len(self.bodies)}"}}


@pytest.fixture
def api(monkeypatch):
    creates = Creates()
    monkeypatch.setattr(trigger_module, "_custom", lambda: creates)
    monkeypatch.delenv("KUBETASKS_RUN", raising=False)
    return creates


def test_the_options_are_written_into_the_spec_and_it_validates():
    body = taskrun_manifest("report", {"n": 1}, namespace="jobs", concurrency_key="tenant-a", priority=600,
                            debounce={"key": "doc-7", "delay": timedelta(seconds=3), "max_delay": "1m",
                                      "mode": "trailing"})
    assert body["spec"] == {"taskRef": "report", "payload": {"n": 1}, "concurrencyKey": "tenant-a", "priority": 600,
                            "debounce": {"key": "doc-7", "delay": "3s", "maxDelay": "1m", "mode": "trailing"}}
    spec = TaskRunSpec.model_validate(body["spec"])
    assert (spec.concurrency_key, spec.priority, spec.debounce.max_delay) == ("tenant-a", 600, "1m")


def test_options_not_given_leave_the_spec_as_it_was():
    assert taskrun_manifest("report", None, namespace="jobs")["spec"] == {"taskRef": "report", "payload": None}
    assert flow_spec() == {} and flow_spec(priority=0) == {}
    assert flow_spec(concurrency_key="") == {"concurrencyKey": ""}  # a run without a key is under ""
    assert flow_spec(priority=-86400) == {"priority": -86400}


def test_the_typed_debounce_is_the_api_model_and_takes_camel_or_snake_names():
    assert TopLevelDebounce is Debounce
    typed = Debounce(key="k", delay="2s", max_delay="10s")
    assert debounce_of(typed).to_api() == {"key": "k", "delay": "2s", "maxDelay": "10s", "mode": "leading"}
    assert debounce_of({"key": "k", "delay": 1.5, "maxDelay": 60}).to_api() == {
        "key": "k", "delay": "1500ms", "maxDelay": "60s", "mode": "leading"}


@pytest.mark.parametrize("options, error, words", [
    ({"priority": 86401}, ValueError, "priority: Input should be less than or equal to 86400"),
    ({"priority": -86401}, ValueError, "priority: Input should be greater than or equal to -86400"),
    ({"priority": 1.5}, TypeError, "priority is a whole number of seconds, not float"),
    ({"priority": True}, TypeError, "not bool"),
    ({"concurrency_key": "k" * 257}, ValueError, "concurrency_key: String should have at most 256 characters"),
    ({"concurrency_key": 7}, TypeError, "concurrency_key is a string"),
    ({"debounce": {"key": "k", "delay": "3s"}}, ValueError, "debounce: max_delay is required"),
    ({"debounce": {"key": "k", "max_delay": "3s"}}, ValueError, "debounce: delay is required"),
    ({"debounce": {"key": "k", "delay": "5m", "max_delay": "1m"}}, ValueError,
     "debounce.delay (5m) must not exceed debounce.maxDelay (1m)"),
    ({"debounce": {"key": "k", "delay": 0, "max_delay": "1m"}}, ValueError, "more than 0s and at most 168h, not 0s"),
    ({"debounce": {"key": "k", "delay": "1s", "max_delay": "169h"}}, ValueError, "debounce.maxDelay must be"),
    ({"debounce": {"key": "k", "delay": "soon", "max_delay": "1m"}}, ValueError, "debounce.delay: invalid duration"),
    ({"debounce": {"key": "", "delay": "1s", "max_delay": "1m"}}, ValueError,
     "debounce.key: String should have at least 1 character"),
    ({"debounce": {"key": "k", "delay": "1s", "max_delay": "1m", "mode": "middle"}}, ValueError,
     "debounce.mode: Input should be 'leading' or 'trailing'"),
    ({"debounce": {"key": "k", "delay": "1s", "max_delay": "1m", "wait": 1}}, ValueError, "unknown field(s) wait"),
    ({"debounce": "k"}, TypeError, "debounce is a Debounce or a dict"),
])
def test_a_bad_option_fails_before_any_create_and_says_what_is_wrong(api, options, error, words):
    with pytest.raises(error) as raised:
        trigger("report", {"n": 1}, namespace="jobs", **options)
    assert words in str(raised.value)
    with pytest.raises(error):
        batch_trigger("report", [{"n": 1}, {"n": 2}], namespace="jobs", **options)
    with pytest.raises(error):
        report.trigger({"n": 1}, namespace="jobs", **options)
    assert api.bodies == []


def test_trigger_batch_trigger_and_the_task_methods_send_the_options(api):
    trigger("report", {"n": 1}, namespace="jobs", concurrency_key="a", priority=-30)
    report.trigger({"n": 2}, namespace="jobs", concurrency_key="b", priority=600)
    report.batch_trigger([{"n": 3}, {"n": 4}], namespace="jobs", concurrency_key="c",
                         debounce=Debounce(key="d", delay="1s", max_delay="5s", mode="trailing"))
    specs = [b["spec"] for b in api.bodies]
    assert [(s.get("concurrencyKey"), s.get("priority")) for s in specs] == [("a", -30), ("b", 600), ("c", None),
                                                                              ("c", None)]
    assert specs[2]["debounce"] == specs[3]["debounce"] == {"key": "d", "delay": "1s", "maxDelay": "5s",
                                                            "mode": "trailing"}
