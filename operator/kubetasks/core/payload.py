"""Payloads: validation against a Task's JSON Schema (jsonschema: the reference implementation),
and whether a payload can reach its task.

Validation is local and bounded, because it runs in the operator for objects anyone who may
create a Task or a TaskRun wrote:

- nothing is ever fetched: only local references (``#...``) are allowed, and the validator's
  ``referencing`` registry refuses to retrieve any URI;
- regular expressions (``pattern``, ``patternProperties``, and ``additionalProperties`` next to
  them) are matched by RE2, in time linear in the input, never by Python's backtracking ``re``;
  ``unevaluatedProperties`` next to ``patternProperties`` is refused, since jsonschema matches
  those with ``re``;
- a payload (or a schema) nested deeper than :data:`MAX_DEPTH` is refused, checked without
  recursion, so the validator's own recursion stays bounded;
- messages say where and which keyword failed, bounded to :data:`MESSAGE_LIMIT` characters,
  and never quote the payload (jsonschema's own messages do).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import jsonschema.validators
import re2  # type: ignore[import-untyped]  # google-re2 ships no type hints
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable

from kubetasks import protocol
from kubetasks.core.echo import bounded

MAX_DEPTH = 64  # levels of arrays and objects in a payload or a payloadSchema
MESSAGE_LIMIT = 400

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is reported in the Task's status, not on stderr


def _refuse(uri: str) -> Any:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class mypy cannot see into


# Resolves references inside the schema itself (its root resource); retrieves nothing.
_REGISTRY: Registry[Any] = Registry(retrieve=_refuse)  # type: ignore[call-arg]


def _bounded(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return bounded(text, limit)  # printable too: a payload's keys and a schema's patterns are echoed


def depth_error(value: Any, what: str = "payload") -> str | None:
    """Why ``value`` is nested too deep, or None. Iterative: a value nested 100,000 deep is fine."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth >= MAX_DEPTH:
            return f"the {what} is nested deeper than {MAX_DEPTH} levels of arrays and objects, the limit"
        stack.extend((child, depth + 1) for child in children)
    return None


def _walk(schema: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object in a schema, with its JSON pointer; iterative (depth is checked before)."""
    stack: list[tuple[str, Any]] = [("", schema)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            yield where or "/", node
            stack.extend((f"{where}/{key}", child) for key, child in node.items())
        elif isinstance(node, list):
            stack.extend((f"{where}/{i}", child) for i, child in enumerate(node))


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> Any:
    return re2.compile(pattern, _RE2_OPTIONS)


def _search(pattern: str, text: str) -> bool:
    return _regex(pattern).search(text) is not None


def schema_error(schema: Any) -> str | None:
    """What makes ``schema`` unusable as a Task's payloadSchema, or None when it is usable."""
    if schema is None or isinstance(schema, bool):
        return None
    if not isinstance(schema, dict):
        return (f"payloadSchema must be a JSON Schema: an object or a boolean, not {type(schema).__name__}")
    error = depth_error(schema, "payloadSchema")
    if error:
        return error
    for where, node in _walk(schema):
        for keyword in ("$ref", "$dynamicRef", "$recursiveRef"):
            ref = node.get(keyword)
            if isinstance(ref, str) and not ref.startswith("#"):
                return _bounded(f"payloadSchema at {where}: {keyword} {ref[:120]!r} is not local: only references "
                                "within the schema (#...) are allowed; nothing is fetched")
        patterns = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        if isinstance(node.get("patternProperties"), dict):
            patterns += list(node["patternProperties"])
            if "unevaluatedProperties" in node:
                return _bounded(f"payloadSchema at {where}: unevaluatedProperties next to patternProperties is not "
                                "supported (its patterns would be matched by a backtracking engine)")
        for pattern in patterns:
            try:
                _regex(pattern)
            except re2.error as e:
                return _bounded(f"payloadSchema at {where}: pattern {pattern[:120]!r} is not a regular expression "
                                f"that RE2 matches in linear time (no backreferences or lookaround): {_text(e)}")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        where = e.json_path.removeprefix("$") or "(root)"
        return _bounded(f"payloadSchema is not a valid JSON Schema: at {where}, {e.message}")
    return None


def _text(error: Exception) -> str:
    arg = error.args[0] if error.args else error
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


# -- keywords that match regular expressions, with RE2 ---------------------------------------------

def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"does not match the pattern {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [key for key in instance
              if key not in properties and not any(_search(p, key) for p in patterns)]
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        yield ValidationError(f"{len(extras)} propert{'y is' if len(extras) == 1 else 'ies are'} not allowed")


_RE2_KEYWORDS = {"pattern": _pattern, "patternProperties": _pattern_properties,
                 "additionalProperties": _additional_properties}


@functools.cache
def _safe_class(cls: Any) -> Any:
    return jsonschema.validators.extend(cls, {k: v for k, v in _RE2_KEYWORDS.items() if k in cls.VALIDATORS})


def _describe(e: ValidationError) -> str:
    """Which keyword failed and what the schema asked, never the payload's value."""
    keyword, wanted = e.validator, e.validator_value
    if keyword in ("pattern", "additionalProperties"):
        return f"{keyword}: {e.message}"
    if keyword == "required":
        return f"required: {e.message}"  # names the missing property (from the schema)
    shown = json.dumps(wanted, default=str) if not isinstance(wanted, (dict, list)) or len(str(wanted)) < 120 \
        else f"({type(wanted).__name__})"
    return f"{keyword}: must satisfy {keyword}={shown[:160]}"


def _where(e: ValidationError) -> str:
    parts = [str(p) if len(str(p)) <= 40 else str(p)[:37] + "..." for p in e.absolute_path]
    return _bounded("/" + "/".join(parts), 160) if parts else "(root)"


def payload_error(schema: Any, payload: Any) -> str | None:
    """A one-line reason the payload does not match, or None when it does (or no schema is set).
    A payload nested deeper than :data:`MAX_DEPTH` never matches. Call :func:`schema_error` first:
    a schema problem found here (a self-referencing schema, say) is reported as the payload's."""
    error = depth_error(payload)
    if error:
        return error
    if schema is None:
        return None
    problem = schema_error(schema)
    if problem:
        return problem
    try:
        validator = _safe_class(jsonschema.validators.validator_for(schema))(schema, registry=_REGISTRY)
        best = jsonschema.exceptions.best_match(validator.iter_errors(payload))
    except Unresolvable as e:
        return _bounded(f"the payloadSchema has a reference that cannot be resolved locally: {_text(e)[:200]}")
    except RecursionError:
        return f"the payloadSchema refers to itself without end (validation went deeper than {MAX_DEPTH} levels)"
    if best is None:
        return None
    return _bounded(f"payload at {_where(best)} does not match the payloadSchema: {_describe(best)}")


def payload_file_text(payload: Any) -> str | None:
    """The payload's file content (put in the run's checkpoint ConfigMap), or None when it is over
    ``protocol.PAYLOAD_FILE_LIMIT``: such a payload reaches only tasks that read the TaskRun."""
    text = protocol.encode_payload(payload)
    return text if len(text.encode()) <= protocol.PAYLOAD_FILE_LIMIT else None


def payload_data(payload: Any) -> dict[str, str]:
    """The run's payload ConfigMap data: the payload's file, when it fits."""
    text = payload_file_text(payload)
    return {} if text is None else {protocol.PAYLOAD_KEY: text}


def _size(n: int) -> str:
    value, unit = (n / 2**20, "MiB") if n >= 2**20 else (n / 2**10, "KiB")
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def payload_delivery_error(payload: Any, uses_runtime: bool) -> str | None:
    """Why the payload cannot reach the task, or None when it can. ``uses_runtime``: the task runs
    the kubetasks runtime (it has an ``entrypoint``), which reads payloads too large for the file
    from the TaskRun; a ``command`` has the file only."""
    size = len(protocol.encode_payload(payload).encode())
    if uses_runtime or size <= protocol.PAYLOAD_FILE_LIMIT:
        return None
    limit = protocol.PAYLOAD_FILE_LIMIT
    return (f"the payload is {size} bytes of JSON ({_size(size)}); tasks with `command` receive it as a file "
            f"({protocol.ENV_PAYLOAD_FILE}) of at most {limit} bytes ({_size(limit)}): use an `entrypoint` task, "
            "which reads larger payloads from the TaskRun, or a smaller payload (a reference to the data)")
