"""A plain command's result: its termination message, read as JSON.

The kubetasks runtime answers with a Report (protocol.Report), an envelope around its result. A
plain ``command`` speaks no protocol: when it exits 0, what it wrote to ``/dev/termination-log``
is its result, taken whole when it is JSON (a string must be quoted: ``"done"``), at most
``protocol.RESULT_LIMIT`` bytes compact and ``MAX_DEPTH`` levels deep. Anything else is dropped,
with the reason said (the run still succeeded: its exit code says so), never guessed at.

Which of the two a pod speaks is told by its command (protocol.RUNTIME_COMMAND), never by what
its message looks like: a plain command that writes the runtime's envelope gets the envelope as
its result, and cannot make its run sleep or fail by it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubetasks import protocol
from kubetasks.core.payload import MAX_DEPTH, depth_error

EXCERPT = 60  # characters of a dropped message quoted in its reason


@dataclass(frozen=True)
class PlainResult:
    value: Any = None  # the run's result (JSON data); None also when there is none
    dropped: str | None = None  # why the termination message is not the run's result


def runs_runtime(pods: list[dict[str, Any]]) -> bool:
    """Whether the attempt's task container runs the kubetasks runtime, whose message is a Report."""
    return any(c.get("name") == "task" and c.get("command") == protocol.RUNTIME_COMMAND
               for pod in pods for c in (pod.get("spec") or {}).get("containers") or [])


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # the API server would refuse NaN and Infinity


def plain_result(message: str | None) -> PlainResult:
    """The result a plain command that exited 0 wrote to its termination message."""
    text = (message or "").strip()
    if not text:
        return PlainResult()
    cut = (f" (the kubelet keeps at most {protocol.TERMINATION_MESSAGE_LIMIT} bytes of it)"
           if len(text.encode()) >= protocol.TERMINATION_MESSAGE_LIMIT - 1 else "")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        return PlainResult(dropped=f"its termination message is nested deeper than {MAX_DEPTH} levels, the limit")
    except ValueError as e:
        why = f"{e.msg} at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        return PlainResult(dropped=f"its termination message is not JSON ({why}){cut}: {text[:EXCERPT]!r}"
                                   + ("..." if len(text) > EXCERPT else ""))
    too_deep = depth_error(value, "termination message")
    if too_deep:
        return PlainResult(dropped=f"{too_deep.replace('the termination', 'its termination')}")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > protocol.RESULT_LIMIT:
        return PlainResult(dropped=f"its termination message is {size} bytes of JSON; a result holds at most "
                                   f"{protocol.RESULT_LIMIT}: keep large results elsewhere and write a reference")
    return PlainResult(value=value)
