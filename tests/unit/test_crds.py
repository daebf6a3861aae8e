"""The checked-in CRDs are generated from the pydantic models; they must not drift."""

from pathlib import Path

import yaml

from kubetasks.api.crd import dump, render_crds

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_checked_in_crds_match_the_models():
    for name, crd in render_crds().items():
        path = CRDS / name
        assert path.exists(), f"{path} is missing: run `kubetasks crds --write`"
        assert path.read_text() == dump(crd), f"{path} drifted from the models: run `kubetasks crds --write`"


def _walk(node, path="$"):
    yield path, node
    for key, value in (node.get("properties") or {}).items():
        yield from _walk(value, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")


def test_schemas_are_structural():
    for crd in render_crds().values():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"


def test_printer_columns_and_names():
    crds = render_crds()
    runs = crds["kubetasks.io_taskruns.yaml"]["spec"]
    assert [c["name"] for c in runs["versions"][0]["additionalPrinterColumns"]][:5] == \
        ["Task", "Phase", "Attempt", "Age", "Duration"]
    assert runs["names"]["categories"] == ["kubetasks"] and runs["names"]["shortNames"] == ["ktr"]
    tasks = crds["kubetasks.io_tasks.yaml"]["spec"]
    columns = [c["name"] for c in tasks["versions"][0]["additionalPrinterColumns"]]
    assert {"Machine", "Retries", "Runs", "Last Run", "Schedule"} <= set(columns)
    conditions = tasks["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"


def test_generated_yaml_parses():
    for crd in render_crds().values():
        assert yaml.safe_load(dump(crd)) == crd


def test_the_chart_ships_the_same_crds():
    chart = CRDS.parent / "charts" / "kubetasks" / "crds"
    for name in render_crds():
        assert (chart / name).read_text() == (CRDS / name).read_text(), "run `make crds`"


def test_checked_in_admission_objects_match_and_ship_with_the_chart():
    from kubetasks.api.crd import rendered_files

    chart = CRDS.parent / "charts" / "kubetasks" / "crds"
    for name, text in rendered_files().items():
        assert (CRDS / name).read_text() == text, f"{name} drifted: run `make crds`"
        assert (chart / name).read_text() == text, "run `make crds`"


def _rules(node):
    return [v["rule"] for v in node.get("x-kubernetes-validations", [])]


def test_admission_rules_name_their_limits():
    crds = render_crds()
    task = crds["kubetasks.io_tasks.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    run = crds["kubetasks.io_taskruns.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = task["properties"]
    assert "duration('8760h')" in _rules(props["maxDuration"])[0] and "duration('0s')" in _rules(props["maxDuration"])[0]
    assert "duration('168h')" in _rules(props["retry"]["properties"]["maxDelay"])[0]
    assert "duration('8760h')" in _rules(run["properties"]["delay"])[0]
    assert "quantity('0')" in _rules(props["machine"]["properties"]["cpu"])[0]
    assert "KUBETASKS_" in _rules(props["env"]["items"])[0]
    assert props["payloadSchema"] == {**props["payloadSchema"], "type": "object",
                                      "x-kubernetes-preserve-unknown-fields": True}
    assert run["properties"]["taskRef"]["maxLength"] == 253
    # The retry policy checks itself, so a TaskRun's override is checked as the Task's is.
    for retry in (props["retry"], run["properties"]["retry"]):
        assert any("duration(self.minDelay) <= duration(self.maxDelay)" in r for r in _rules(retry))


def test_the_payload_policy_keeps_absent_absent_and_present_equal():
    from kubetasks.api.crd import render_admission

    policy, binding, *_ = render_admission()["kubetasks.io_admission.yaml"]
    expression = policy["spec"]["validations"][0]["expression"]
    assert "has(object.spec.payload) == has(oldObject.spec.payload)" in expression
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == ["UPDATE"]
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]


def test_a_runs_instance_label_is_immutable_absent_or_present():
    from kubetasks.api.crd import INSTANCE_POLICY, render_admission
    from kubetasks.core.naming import LABEL_INSTANCE

    objects = render_admission()["kubetasks.io_admission.yaml"]
    policy, binding = [o for o in objects if o["metadata"]["name"] == INSTANCE_POLICY]
    (rule,) = policy["spec"]["validations"]
    assert rule["expression"].count(f"'{LABEL_INSTANCE}' in") == 2  # the same label, old and new
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == ["UPDATE"]
    assert binding["spec"] == {"policyName": INSTANCE_POLICY, "validationActions": ["Deny"]}


def test_the_runs_of_a_task_are_selectable_by_their_task_ref():
    # `kubectl get taskruns --field-selector spec.taskRef=NAME`: no label patched onto runs for it.
    version = render_crds()["kubetasks.io_taskruns.yaml"]["spec"]["versions"][0]
    assert version["selectableFields"] == [{"jsonPath": ".spec.taskRef"}]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["taskRef"]["type"] == "string" and "taskRef" in spec["required"]
