"""CustomResourceDefinitions generated from the pydantic models.

Pydantic's JSON Schema is turned into a structural OpenAPI v3 schema: references inlined,
optional fields unwrapped from ``anyOf [X, null]``, JSON values marked
``x-kubernetes-preserve-unknown-fields``, titles dropped. Run ``kubetasks crds --write`` (or
``python -m kubetasks.api.crd``) after changing a model; a test fails when ``crds/`` drifts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kubetasks.api.common import GROUP, VERSION
from kubetasks.api.flow import TaskQueueSpec, TaskQueueStatus
from kubetasks.api.task import TaskSpec, TaskStatus
from kubetasks.api.taskevent import TaskEventSpec, TaskEventStatus
from kubetasks.api.taskrun import TaskRunSpec, TaskRunStatus
from kubetasks.api.waitpoint import WaitpointSpec, WaitpointStatus

_KEEP = frozenset({
    "type", "format", "description", "default", "enum", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems",
    "items", "properties", "required", "additionalProperties",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
})


def structural(schema: dict[str, Any], defs: dict[str, Any], keep: frozenset[str] = _KEEP) -> dict[str, Any]:
    """Converts one pydantic JSON Schema node into a structural OpenAPI v3 node, with the keywords
    in ``keep``."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs, keep)
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        if len(branches) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            if rest.get("default", ...) is None:
                del rest["default"]
            return structural({**branches[0], **rest}, defs, keep)
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        kept: dict[str, Any] = {k: schema[k] for k in ("description", "type") if k in schema}
        return {**kept, "x-kubernetes-preserve-unknown-fields": True}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in keep:
            continue
        if key == "properties":
            value = {name: structural(prop, defs, keep) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = structural(value, defs, keep)
        out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
        for name, prop in out["properties"].items():
            # Conditions are a map keyed by type, as the Kubernetes API conventions ask.
            if name == "conditions" and prop.get("type") == "array":
                prop["x-kubernetes-list-type"] = "map"
                prop["x-kubernetes-list-map-keys"] = ["type"]
    if out.get("default") is None:
        out.pop("default", None)
    return out


def model_schema(model: type[BaseModel], keep: frozenset[str] = _KEEP) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return structural(schema, schema.get("$defs", {}), keep)


# Status without its CEL rules: the API server runs every rule of the object on every status
# write (regexes compiled again each time, as its CEL programs track cost), while only the
# operator writes status, from input its rules already checked (a run's locked Task version
# repeats the Task's spec). Types, patterns and bounds stay.
_STATUS_KEEP = _KEEP - {"x-kubernetes-validations"}


def _crd(kind: str, plural: str, short: list[str], spec: type[BaseModel], status: type[BaseModel],
         columns: list[dict[str, Any]], selectable: tuple[str, ...] = ()) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": columns,
        "schema": {"openAPIV3Schema": {
            "type": "object",
            "required": ["spec"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": model_schema(spec),
                "status": model_schema(status, _STATUS_KEEP),
            },
        }},
    }
    if selectable:  # field selectors on these (CRD selectableFields: beta, on by default since Kubernetes 1.31)
        version["selectableFields"] = [{"jsonPath": path} for path in selectable]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower(), "shortNames": short, "categories": ["kubetasks"]},
            "scope": "Namespaced",
            "versions": [version],
        },
    }


def render_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD manifest."""
    return {
        "kubetasks.io_tasks.yaml": _crd("Task", "tasks", ["kt"], TaskSpec, TaskStatus, [
            {"name": "Machine", "type": "string", "jsonPath": ".status.machine"},
            {"name": "Retries", "type": "integer", "jsonPath": ".spec.retry.maxAttempts"},
            {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
            {"name": "Runs", "type": "integer", "jsonPath": ".status.runs"},
            {"name": "Last Run", "type": "date", "jsonPath": ".status.lastRunTime"},
            {"name": "Next Run", "type": "string", "jsonPath": ".status.nextScheduleTime", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ]),
        "kubetasks.io_taskruns.yaml": _crd("TaskRun", "taskruns", ["ktr"], TaskRunSpec, TaskRunStatus, [
            {"name": "Task", "type": "string", "jsonPath": ".spec.taskRef"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Attempt", "type": "integer", "jsonPath": ".status.attempt"},
            {"name": "Waiting", "type": "string", "jsonPath": ".status.waitingFor.reason"},
            {"name": "Progress", "type": "string", "jsonPath": ".status.metadata.progress"},  # ctx.metadata
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            {"name": "Duration", "type": "string", "jsonPath": ".status.duration"},
            {"name": "Version", "type": "string", "jsonPath": ".status.taskVersion.version"},  # locked image tag
            {"name": "Reason", "type": "string", "priority": 1,
             "jsonPath": ".status.conditions[?(@.type==\"Succeeded\")].reason"},
        ], selectable=(".spec.taskRef",)),  # `--field-selector spec.taskRef=NAME`: the runs of a Task
        "kubetasks.io_taskqueues.yaml": _crd("TaskQueue", "taskqueues", ["ktq"], TaskQueueSpec, TaskQueueStatus, [
            {"name": "Limit", "type": "integer", "jsonPath": ".spec.limit"},
            {"name": "Running", "type": "integer", "jsonPath": ".status.running"},
            {"name": "Waiting", "type": "integer", "jsonPath": ".status.waiting"},
            {"name": "Max Waiting", "type": "integer", "jsonPath": ".spec.maxWaiting", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ]),
        "kubetasks.io_waitpoints.yaml": _crd("Waitpoint", "waitpoints", ["wp"], WaitpointSpec, WaitpointStatus, [
            {"name": "Run", "type": "string", "jsonPath": ".spec.run"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Expires", "type": "date", "jsonPath": ".spec.expiresAt"},
            {"name": "Completed", "type": "date", "jsonPath": ".status.completedAt"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ]),
        # Not "events": core/v1 Events hold that name (kubectl get events).
        "kubetasks.io_taskevents.yaml": _crd("TaskEvent", "taskevents", ["kte"], TaskEventSpec, TaskEventStatus, [
            {"name": "Event", "type": "string", "jsonPath": ".spec.event"},
            {"name": "ID", "type": "string", "jsonPath": ".spec.id"},
            {"name": "Runs", "type": "string", "jsonPath": ".status.runs"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ]),
    }


PAYLOAD_POLICY = f"taskrun-payload-immutable.{GROUP}"
INSTANCE_POLICY = f"taskrun-instance-immutable.{GROUP}"
INSTANCE_LABEL = f"{GROUP}/instance"  # core.naming.LABEL_INSTANCE (api/ does not import core/)


def _policy(name: str, expression: str, message: str) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy on updates of TaskRuns (status writes, a subresource, are not
    matched), and its binding."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [GROUP], "apiVersions": ["*"], "operations": ["UPDATE"], "resources": ["taskruns"]}]},
            "validations": [{"expression": expression, "reason": "Invalid", "message": message}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
    return [policy, binding]


def _label(obj: str, key: str) -> str:
    return f"(has({obj}.metadata.labels) && '{key}' in {obj}.metadata.labels ? {obj}.metadata.labels['{key}'] : '')"


def render_admission() -> dict[str, list[dict[str, Any]]]:
    """File name -> admission objects that ship with the CRDs (and are applied with them).

    A TaskRun's payload is any JSON, so its schema node has no type, and CRD validation rules
    (CEL) cannot see a field without one: the transition rule that keeps the payload as it was
    at creation is a ValidatingAdmissionPolicy (GA since Kubernetes 1.30), which sees the whole
    object. Absent stays absent and present stays equal. The run's operator instance label is
    kept as it was by a second policy.
    """
    same = ("has(object.spec.payload) == has(oldObject.spec.payload) && "
            "(!has(object.spec.payload) || object.spec.payload == oldObject.spec.payload)")
    payload = _policy(PAYLOAD_POLICY, same, "spec.payload is immutable: every attempt of a run runs with the payload "
                                            "it was created with (create another TaskRun instead)")
    # A run handed to another operator instance mid-flight would be run twice: the new instance
    # does not see the Jobs labelled for the old one.
    instance = _policy(INSTANCE_POLICY, f"{_label('object', INSTANCE_LABEL)} == {_label('oldObject', INSTANCE_LABEL)}",
                       f"the label {INSTANCE_LABEL} of a TaskRun is immutable: it names the operator instance "
                       "that runs it (create another TaskRun instead)")
    return {"kubetasks.io_admission.yaml": payload + instance}


HEADER = "# Generated from kubetasks.api by `kubetasks crds --write`. Do not edit.\n"


def dump(crd: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=120)


def dump_all(objects: list[dict[str, Any]]) -> str:
    return HEADER + yaml.safe_dump_all(objects, sort_keys=False, width=120)


def rendered_files() -> dict[str, str]:
    """File name -> text of every generated file in ``crds/``: the CRDs and the admission objects."""
    files = {name: dump(crd) for name, crd in render_crds().items()}
    files.update({name: dump_all(objects) for name, objects in render_admission().items()})
    return files


def _write(directory: Path, files: dict[str, str]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def write_crds(directory: Path) -> list[Path]:
    """Writes the CRDs (``kubetasks crds --write``)."""
    return _write(directory, {name: dump(crd) for name, crd in render_crds().items()})


def write_admission(directory: Path) -> list[Path]:
    """Writes the admission objects that ship beside the CRDs (``python -m kubetasks.api.crd``)."""
    return _write(directory, {name: dump_all(objects) for name, objects in render_admission().items()})


if __name__ == "__main__":
    for target in sys.argv[1:] or ["crds"]:
        for path in [*write_crds(Path(target)), *write_admission(Path(target))]:
            print(path)
