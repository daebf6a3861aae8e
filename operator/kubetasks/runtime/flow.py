"""The flow-control fields of a new TaskRun (issue 19): its concurrency key, priority and debounce,
as ``trigger(...)`` and ``kubetasks run`` take them, checked before the create.

The checks are the API's own: the pydantic models of :mod:`kubetasks.api` (lengths, bounds, the
duration pattern), and, in Python, the CEL rules the API server would apply (a debounce's delays
more than 0s, at most MAX_DEBOUNCE, delay not above maxDelay). A bad value fails in the caller
with a message naming the option, not as a 422 from the API server or a run that never starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from kubetasks.api.durations import parse_duration
from kubetasks.api.flow import MAX_DEBOUNCE, Debounce
from kubetasks.api.taskrun import TaskRunSpec
from kubetasks.runtime.durations import duration_string, seconds_of

DebounceLike = Debounce | Mapping[str, Any]
_DEBOUNCE_FIELDS = {"key": "key", "delay": "delay", "max_delay": "maxDelay", "maxDelay": "maxDelay", "mode": "mode"}


def debounce_of(value: DebounceLike) -> Debounce:
    """A :class:`Debounce` from itself or a mapping (``key``, ``delay``, ``max_delay``, ``mode``;
    the delays as seconds, a timedelta or "30s"), with the API server's rules checked too."""
    if isinstance(value, Debounce):
        fields: dict[str, Any] = value.to_api()
    elif isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in _DEBOUNCE_FIELDS)
        if unknown:
            raise ValueError(f"debounce: unknown field(s) {', '.join(unknown)} (it takes key, delay, max_delay, mode)")
        fields = {_DEBOUNCE_FIELDS[k]: v for k, v in value.items() if v is not None}
    else:
        raise TypeError(f"debounce is a Debounce or a dict of key, delay, max_delay and mode, not {type(value).__name__}")
    for name in ("delay", "maxDelay"):
        if name not in fields:
            raise ValueError(f"debounce: {'max_delay' if name == 'maxDelay' else name} is required")
        try:
            fields[name] = duration_string(fields[name])
        except (TypeError, ValueError) as e:
            raise ValueError(f"debounce.{name}: {e}") from None
    cap = parse_duration(MAX_DEBOUNCE).total_seconds()
    for name in ("delay", "maxDelay"):
        if not 0 < seconds_of(fields[name]) <= cap:
            raise ValueError(f"debounce.{name} must be more than 0s and at most {MAX_DEBOUNCE}, not {fields[name]}")
    if seconds_of(fields["delay"]) > seconds_of(fields["maxDelay"]):
        raise ValueError(f"debounce.delay ({fields['delay']}) must not exceed debounce.maxDelay ({fields['maxDelay']})")
    try:
        return Debounce.model_validate(fields)
    except ValidationError as e:
        raise ValueError(f"invalid TaskRun option: {_problems(e, 'debounce')}") from None


def flow_spec(*, concurrency_key: str | None = None, priority: int | None = None,
              debounce: DebounceLike | None = None) -> dict[str, Any]:
    """The TaskRun spec fields (camelCase) for these options; those not given are left out.
    Raises ValueError (or TypeError for a value of the wrong kind) with what is wrong."""
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise TypeError(f"priority is a whole number of seconds, not {type(priority).__name__}")
    if concurrency_key is not None and not isinstance(concurrency_key, str):
        raise TypeError(f"concurrency_key is a string, not {type(concurrency_key).__name__}")
    fields: dict[str, Any] = {}
    if concurrency_key is not None:
        fields["concurrencyKey"] = concurrency_key
    if priority:
        fields["priority"] = priority
    if debounce is not None:
        fields["debounce"] = debounce_of(debounce).to_api()
    try:
        # Only these fields (and the required taskRef) are checked: the rest of the spec is
        # built and checked by its own callers.
        TaskRunSpec.model_validate({"taskRef": "x", **fields})
    except ValidationError as e:
        raise ValueError(f"invalid TaskRun option: {_problems(e)}") from None
    return fields


def _problems(error: ValidationError, *within: str) -> str:
    """Each of pydantic's complaints on one line, named as the caller's option is."""
    names = {"concurrencyKey": "concurrency_key", "maxDelay": "max_delay"}
    return "; ".join(".".join(names.get(str(part), str(part)) for part in (*within, *err["loc"])) + f": {err['msg']}"
                     for err in error.errors())
