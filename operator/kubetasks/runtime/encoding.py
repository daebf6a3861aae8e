"""JSON encoding of task and step results: one strict encoder, so what is checked is what is sent.

Results travel as JSON (termination message, checkpoint ConfigMap). Values are converted the way
pydantic's JSON mode does (models dumped by alias, datetimes as ISO strings, tuples as lists); anything
else that is not JSON, and NaN or infinities (which the API server rejects), is an error.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from kubetasks import protocol
from kubetasks.runtime.errors import InvalidResult, ResultTooLarge


def to_json_value(value: Any, what: str = "result") -> Any:
    """Plain JSON data (dicts, lists, str, numbers, bools, None) for ``value``."""
    try:
        return to_jsonable_python(value, by_alias=True)
    except PydanticSerializationError as e:
        raise InvalidResult(f"{what} is not JSON-serialisable: {e}") from None


def encode_json(value: Any, what: str = "result") -> str:
    """Compact JSON text of ``value``, encoded as the termination message encodes it."""
    try:
        return json.dumps(to_json_value(value, what), separators=(",", ":"), allow_nan=False)
    except ValueError as e:  # NaN/Infinity, circular references
        raise InvalidResult(f"{what} is not valid JSON: {e}") from None


def round_trip(value: Any, what: str = "result") -> Any:
    """``value`` as it reads back from JSON: what a retry would see, so first runs see it too."""
    return json.loads(encode_json(value, what))


def task_result(value: Any, limit: int = protocol.RESULT_LIMIT) -> Any:
    """The JSON value to report for a task's return value; raises when it cannot be reported."""
    size = len(encode_json(value).encode())
    if size > limit:
        raise ResultTooLarge(
            f"result is {size} bytes; the limit is {limit}: store large results elsewhere and return a reference"
        )
    return to_json_value(value)


def model_type(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model class an annotation names, if it names one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def revive(value: Any, annotation: Any) -> Any:
    """Validates decoded JSON into the pydantic model of ``annotation``; other values pass through."""
    model = model_type(annotation)
    return model.model_validate(value) if model is not None else value


__all__ = ["encode_json", "model_type", "revive", "round_trip", "task_result", "to_json_value"]
