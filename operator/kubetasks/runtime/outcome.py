"""How an attempt ends: its exit code and the Report written to the termination message.

Pure functions from what the task did (returned, raised, slept) to an :class:`Exit`; the entry
point only writes the report and exits with the code.
"""

from __future__ import annotations

import os
import traceback as tb
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from kubetasks import protocol
from kubetasks.protocol import Report
from kubetasks.runtime.encoding import encode_json, task_result
from kubetasks.runtime.errors import InvalidResult, PermanentError, ResultTooLarge

MESSAGE_LIMIT = 1024  # error messages are cut here, so the termination message stays valid JSON
_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


@dataclass(frozen=True)
class Exit:
    code: int
    report: Report


Keep = Callable[[str], dict[str, Any]]  # a result's JSON text -> its ref, once kept (runtime.results)


def succeeded(value: Any, keep: Keep | None = None) -> Exit:
    """Success with the task's return value, or a permanent failure when it cannot be reported.
    A result over the termination message's room is ``keep``-t elsewhere and reported by its ref."""
    try:
        text = encode_json(value)
        if len(text.encode()) <= protocol.RESULT_LIMIT or keep is None:
            return Exit(protocol.EXIT_SUCCESS, Report(outcome="succeeded", result=task_result(value)))
        return Exit(protocol.EXIT_SUCCESS, Report(outcome="succeeded", result_ref=keep(text)))
    except (InvalidResult, ResultTooLarge) as e:
        return failed(e, with_traceback=False)
    except Exception as e:  # keeping it failed (an upload that did not go through): retryable
        return failed(e, with_traceback=False)


def sleeping(wake_at: datetime) -> Exit:
    """A durable sleep: the attempt ends well and the operator starts the next one at wake_at."""
    return Exit(protocol.EXIT_SUCCESS, Report(outcome="sleeping", wake_at=wake_at))


def waiting() -> Exit:
    """A durable wait for child runs: the attempt ends well; the operator starts the next one when
    the runs its checkpoint names have finished."""
    return Exit(protocol.EXIT_SUCCESS, Report(outcome="waiting"))


def failed(exc: BaseException, with_traceback: bool = True) -> Exit:
    """Permanent (78) for :class:`PermanentError`, else retryable (1)."""
    code = protocol.EXIT_PERMANENT if isinstance(exc, PermanentError) else protocol.EXIT_RETRYABLE
    message = str(exc) or type(exc).__name__
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 3] + "..."
    trace = format_traceback(exc) if with_traceback and exc.__traceback__ else None
    return Exit(code, Report(outcome="failed", error_type=type(exc).__name__, error_message=message, traceback=trace))


def not_retried(ended: Exit) -> Exit:
    """A failure whose catch_error hook chose to skip retrying: permanent (78), and said so in the
    report, so a Task whose permanentExitCodes lack 78 fails it at once all the same."""
    return Exit(protocol.EXIT_PERMANENT, replace(ended.report, skip_retrying=True))


def retried_at(ended: Exit, at: datetime) -> Exit:
    """A failure whose catch_error hook chose when the next attempt starts."""
    return Exit(ended.code, replace(ended.report, retry_at=at))


def format_traceback(exc: BaseException) -> str:
    """The traceback from the task's code on: the runtime frames that called it are left out."""
    error = tb.TracebackException.from_exception(exc)
    frames = list(error.stack)
    while len(frames) > 1 and frames[0].filename.startswith(_RUNTIME_DIR):
        frames.pop(0)
    error.stack = tb.StackSummary.from_list(frames)
    return "".join(error.format())


def exited(code: Any) -> Exit:
    """``sys.exit(code)`` from task code: keep the code (so permanentExitCodes apply) and say so."""
    if code is None or code == 0:
        return Exit(protocol.EXIT_SUCCESS, Report(outcome="succeeded", result=None))
    number = code if isinstance(code, int) else protocol.EXIT_RETRYABLE
    number = number if 0 < number < 256 else protocol.EXIT_RETRYABLE
    return Exit(number, Report(outcome="failed", error_type="SystemExit",
                               error_message=f"the task called sys.exit({code!r})"))
