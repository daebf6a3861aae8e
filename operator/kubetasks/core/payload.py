"""Payload validation against a Task's JSON Schema (jsonschema: the reference implementation)."""

from __future__ import annotations

from typing import Any

import jsonschema


def payload_error(schema: Any, payload: Any) -> str | None:
    """A one-line reason the payload does not match, or None when it does (or no schema is set)."""
    if schema is None:
        return None
    try:
        jsonschema.validate(payload, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        return f"payload at {where}: {e.message}"
    except jsonschema.SchemaError as e:
        return f"the Task's payloadSchema is not a valid JSON Schema: {e.message}"
    return None
