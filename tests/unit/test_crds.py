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
