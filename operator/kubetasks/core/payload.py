"""Payloads: validation against a Task's JSON Schema (jsonschema: the reference implementation),
and whether a payload can reach its task."""

from __future__ import annotations

from typing import Any

import jsonschema

from kubetasks import protocol


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


def payload_file_text(payload: Any) -> str | None:
    """The payload's file content (put in the run's checkpoint ConfigMap), or None when it is over
    ``protocol.PAYLOAD_FILE_LIMIT``: such a payload reaches only tasks that read the TaskRun."""
    text = protocol.encode_payload(payload)
    return text if len(text.encode()) <= protocol.PAYLOAD_FILE_LIMIT else None


def payload_data(payload: Any) -> dict[str, str]:
    """The run's checkpoint ConfigMap data at creation: the payload's file, when it fits."""
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
