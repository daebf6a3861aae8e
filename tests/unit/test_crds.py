"""The checked-in CRDs are generated from the pydantic models; they must not drift."""

from datetime import timedelta
from pathlib import Path

import yaml
from hypothesis import given, strategies as st

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
    columns = runs["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns][:6] == ["Task", "Phase", "Attempt", "Waiting", "Progress", "Age"]
    assert columns[4]["jsonPath"] == ".status.metadata.progress"  # ctx.metadata.set("progress", ...)
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


# -- the regular expressions of the CEL rules (RE2 in the API server, google-re2 here) ------------

def _literals():
    """Every regex literal (r'...') in the CEL rules of both CRDs."""
    import re

    found = []

    def walk(node):
        if isinstance(node, dict):
            for v in node.get("x-kubernetes-validations", []):
                found.extend(re.findall(r"r'([^']*)'", v["rule"]))
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)
    for crd in render_crds().values():
        walk(crd)
    return found


def _re2(pattern):
    import re2

    return re2.compile(pattern)


def test_status_has_no_cel_rules_and_keeps_its_types():
    # The API server runs every rule on every status write; only the operator writes status.
    taskruns = render_crds()["kubetasks.io_taskruns.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    status = taskruns["properties"]["status"]
    assert not [path for path, node in _walk(status) if "x-kubernetes-validations" in node]
    retry = status["properties"]["taskVersion"]["properties"]["spec"]["properties"]["retry"]
    assert retry["properties"]["minDelay"]["type"] == "string"
    spec_rules = [path for path, node in _walk(taskruns["properties"]["spec"]) if "x-kubernetes-validations" in node]
    assert len(spec_rules) >= 5  # the user's input is still checked at admission


def test_every_cel_regex_is_re2():
    literals = _literals()
    assert len(literals) >= 8
    for pattern in literals:
        _re2(pattern)


VALID_IMAGES = [
    "python", "python:3.12-slim", "library/python:3.12", "docker.io/library/python:3.12",
    "localhost/kubetasks/kubetasks:dev", "localhost:5000/a/b", "registry.example.com:443/team/app_x:1.0.0",
    "ghcr.io/acme/worker:1.4", "[::1]:5000/app:v1", "a/b__c/d-e.f:TAG_1",
    "python@sha256:" + "a" * 64, "ghcr.io/acme/worker:1.4@sha512:" + "0" * 128, "Registry.Example.com/app",
]
INVALID_IMAGES = [
    "", "Python:3", "python:", "python:-1", "python@sha256:abc", ":tag", "python 3", "a//b", "a/b/", "-a",
    "python:3.12\n", "python:" + "x" * 129, "a" * 10_000, "ghcr.io/acme/Worker:1", "app;rm -rf /", "app:1@",
    "UPPER", "a..b", "a/.b",
]


def _admitted(image):
    """What the Task's image rules admit: maxLength, the grammar, the name's length."""
    from kubetasks.api.images import IMAGE_NAME, IMAGE_REFERENCE, MAX_IMAGE_LENGTH, MAX_IMAGE_NAME_LENGTH

    name = _re2(IMAGE_NAME).search(image)
    return (0 < len(image) <= MAX_IMAGE_LENGTH and _re2(IMAGE_REFERENCE).search(image) is not None
            and len(name.group(0) if name else "") <= MAX_IMAGE_NAME_LENGTH)


def test_image_references_follow_the_distribution_grammar():
    for image in VALID_IMAGES:
        assert _admitted(image), image
    for image in INVALID_IMAGES + ["a" * 256 + ":1", "a/" * 200 + "b"]:
        assert not _admitted(image), image[:80]


def test_an_images_name_is_what_comes_before_its_tag_and_digest():
    from kubetasks.api.images import IMAGE_NAME

    regex = _re2(IMAGE_NAME)
    cases = {"python:3.12": "python", "localhost:5000/a/b:1": "localhost:5000/a/b", "ghcr.io/x/y@sha256:" + "a" * 64:
             "ghcr.io/x/y", "a" * 300 + ":1": "a" * 300}
    for image, name in cases.items():
        assert regex.search(image).group(0) == name


def test_every_image_the_project_uses_is_a_valid_reference():
    import re

    from kubetasks.api.images import IMAGE_REFERENCE
    from tests.conftest import TASK_IMAGE, VERSIONS

    regex = _re2(IMAGE_REFERENCE)
    root = CRDS.parent
    texts = [p.read_text() for d in ("examples", "charts", "bench", "tests") for p in (root / d).rglob("*")
             if p.is_file() and p.suffix in (".yaml", ".yml", ".py") and "bad" not in p.parts]  # bad: refused on purpose
    images = {m for t in texts for m in re.findall(r"\bimage[:=][ \t]*['\"]?([a-z0-9][^\s'\"{}$,)]*)", t)}
    images |= {TASK_IMAGE, VERSIONS["PYTHON_IMAGE"]}
    assert len(images) >= 3
    for image in images:
        assert regex.search(image), image


def test_the_image_rules_are_on_the_task():
    task = render_crds()["kubetasks.io_tasks.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    image = task["properties"]["spec"]["properties"]["image"]
    assert image["maxLength"] <= 4096
    rules = _rules(image)
    assert any(".matches(r'^" in r for r in rules) and any(".find(" in r and "<= 255" in r for r in rules)


# -- durations: what duration() is given never overflows, and any sane duration is given to it ---

def _convertible_python():
    from kubetasks.api.durations import DURATION_CONVERTIBLE

    return DURATION_CONVERTIBLE  # RE2 and Python's re read it alike


GO_MAX_DURATION_HOURS = (2**63 - 1) / 3.6e12  # Go's time.Duration, in hours (about 2562047)


@given(st.from_regex(_convertible_python(), fullmatch=True))
def test_a_convertible_duration_never_overflows_go(text):
    from kubetasks.api.durations import parse_duration

    assert parse_duration(text).total_seconds() / 3600 < GO_MAX_DURATION_HOURS


@given(st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(hours=8760)))
def test_every_duration_up_to_a_year_is_convertible(delta):
    from kubetasks.api.durations import DURATION_CONVERTIBLE, format_duration

    assert _re2(DURATION_CONVERTIBLE).search(format_duration(delta))


def test_durations_that_overflow_or_are_not_durations_are_refused_with_the_rules_message():
    from kubetasks.api.durations import DURATION_CONVERTIBLE

    regex = _re2(DURATION_CONVERTIBLE)
    for text in ["99999999h", "2562048h", "9999999999999ms", "-1s", "soon", "", "1h" * 9, "1.5.5h", "1d"]:
        assert not regex.search(text), text
    for text in ["1h30m", "8760h", "525600m", "31536000s", "31536000000ms", "0.5h", "1h1m1s1ms", "90s30s"]:
        assert regex.search(text), text
    task = render_crds()["kubetasks.io_tasks.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = task["properties"]["spec"]["properties"]
    for node in (spec["maxDuration"], spec["retry"]["properties"]["minDelay"], spec["retry"]):
        for rule in _rules(node):
            # Every duration() call is behind the guard (&& and || short-circuit CEL's errors).
            assert rule.count("duration(self") <= 1 + rule.count(".matches(r'^([0-9]{1,5}"), rule
            assert rule.index(".matches(") < rule.index("duration(self")
    assert "must be a duration more than 0s and at most 8760h" in spec["maxDuration"]["x-kubernetes-validations"][0][
        "message"]


# -- names, quantities, schedules: the rules that say in words what a pattern says in regex ------

def test_name_rules_say_what_a_name_is():
    from kubetasks.api.common import DNS1123_SUBDOMAIN

    task = render_crds()["kubetasks.io_tasks.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    run = render_crds()["kubetasks.io_taskruns.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in (task["properties"]["spec"]["properties"]["id"], task["properties"]["spec"]["properties"]["entrypoint"],
                 task["properties"]["spec"]["properties"]["serviceAccountName"],
                 run["properties"]["spec"]["properties"]["taskRef"]):
        (rule,) = node["x-kubernetes-validations"]
        assert "lowercase letters" in rule["message"] or "module:function" in rule["message"]
    regex = _re2(DNS1123_SUBDOMAIN)
    assert regex.search("a.b-c.d") and not regex.search("Bad_Name") and not regex.search("a..b")


def test_quantity_rules_check_it_is_a_quantity_before_converting():
    task = render_crds()["kubetasks.io_tasks.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    cpu = task["properties"]["spec"]["properties"]["machine"]["properties"]["cpu"]
    (rule,) = cpu["x-kubernetes-validations"]
    assert rule["rule"].startswith("isQuantity(self) && ")
    assert "e.g. '500m'" in rule["message"] and cpu["maxLength"] <= 64


SCHEDULES_OK = ["* * * * *", "*/15 * * * *", "0 9 * * MON-FRI", "30 2 1,15 * ?", "0 0 L * *", "0 0 * * 5#3",
                "@daily", "@HOURLY", "  0 0 * * *  ", "0\t0 * * *"]
SCHEDULES_REFUSED = ["every day at noon", "* * * *", "* * * * * *", "@reboot", "@every 5m", "", "* * * * * ; rm",
                     "0 0 * * * *"]


def test_schedule_shape_admits_what_the_operator_can_parse_and_refuses_what_it_never_could():
    from kubetasks.api.task import MACROS, SCHEDULE_SHAPE
    from kubetasks.core.schedule import MACROS as SCHEDULE_MACROS
    from kubetasks.core.schedule import validate_schedule

    assert set(MACROS) == set(SCHEDULE_MACROS)
    regex = _re2(SCHEDULE_SHAPE)
    for expr in SCHEDULES_OK:
        assert regex.search(expr), expr
        assert validate_schedule(expr, "UTC") is None, expr
    for expr in SCHEDULES_REFUSED:
        assert not regex.search(expr), expr
        assert validate_schedule(expr, "UTC") is not None, expr


@given(st.text(alphabet="0123456789*/,-? LW#ABCDEFGHIJKLMNOPQRSTUVWXYZ@", max_size=30))
def test_whatever_the_shape_refuses_the_operator_refuses_too(expr):
    from kubetasks.api.task import SCHEDULE_SHAPE
    from kubetasks.core.schedule import validate_schedule

    if not _re2(SCHEDULE_SHAPE).search(expr):
        assert validate_schedule(expr, "UTC") is not None


def test_env_values_with_a_nul_are_refused_and_bounded():
    from kubetasks.api.task import NUL

    task = render_crds()["kubetasks.io_tasks.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    env = task["properties"]["spec"]["properties"]["env"]
    assert env["maxItems"] and env["items"]["properties"]["value"]["maxLength"]
    assert any("NUL" in v["message"] for v in env["items"]["x-kubernetes-validations"])
    assert _re2(NUL).search("a\0b") and not _re2(NUL).search("a\nb")


def test_kubectl_explain_tells_to_create_large_payloads_not_apply_them():
    run = render_crds()["kubetasks.io_taskruns.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    task = render_crds()["kubetasks.io_tasks.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for payload in (run["properties"]["spec"]["properties"]["payload"], task["properties"]["spec"]["properties"]["payload"]):
        assert "kubectl create" in payload["description"] and "--server-side" in payload["description"]


def test_the_runs_of_a_task_are_selectable_by_their_task_ref():
    # `kubectl get taskruns --field-selector spec.taskRef=NAME`: no label patched onto runs for it.
    version = render_crds()["kubetasks.io_taskruns.yaml"]["spec"]["versions"][0]
    assert version["selectableFields"] == [{"jsonPath": ".spec.taskRef"}]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["taskRef"]["type"] == "string" and "taskRef" in spec["required"]
