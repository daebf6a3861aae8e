"""Whether a run's status is the operator's: status that it did not write is not believed.

Anyone with rights on ``taskruns/status`` can write a run's status. The chart's admission policy
(templates/statuspolicy.yaml) refuses such writes; where it is not installed, the operator checks
the fields it decides from (:data:`GUARDED`) before it acts on them:

- against the status it last wrote itself (kept in memory by the controller): any difference is
  someone else's write, and the status it wrote is restored;
- with nothing in memory (after a restart, or a run it never wrote), against the run's Jobs: a
  ``Succeeded`` without an attempt, or whose attempt's Job has not succeeded (nor its pod), or
  with a later attempt still running, is not the operator's (it writes Succeeded only from a
  Complete Job or its succeeded pod).
  The status is then taken back to before the claimed outcome, and the Jobs decide.

Either way the Jobs decide what follows (core.plan), as after any status the operator wrote.
A forger could copy what the operator wrote before (there is no secret in it), so only a
status the operator once wrote can be put back, and that one is restored too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubetasks.api.taskrun import Phase
from kubetasks.core.children import attempt_ended, attempt_succeeded, controller_uid
from kubetasks.core.echo import bounded
from kubetasks.core.naming import LABEL_ATTEMPT

Body = dict[str, Any]
REASON = "StatusForged"
# What the operator decides from: a write of any of them by someone else is undone.
GUARDED = ("phase", "attempt", "attempts", "result", "resultRef", "error", "taskVersion")
# What a claimed outcome brings with it, dropped when the outcome is not believed.
OUTCOME = ("result", "resultRef", "error", "completionTime", "duration")


@dataclass(frozen=True)
class Forged:
    """A status that is not the operator's: ``status`` is the one to write back and decide from."""

    status: Body
    message: str

    @property
    def clear(self) -> tuple[str, ...]:
        """Fields to remove besides those the seen status shows: the operator's store keeps a
        finished run's status without its history and result, so a forged outcome's are unseen.
        (A finished status put back is as slim: it clears nothing.)"""
        if _finished(self.status):
            return ()
        return tuple(f for f in (*GUARDED, *OUTCOME) if f not in self.status)


def _finished(status: Body) -> bool:
    try:
        return Phase(status.get("phase") or Phase.PENDING).finished
    except ValueError:
        return False


def guarded(status: Body | None) -> dict[str, Any]:
    status = status or {}
    return {field: status.get(field) for field in GUARDED}


def _changed(seen: Body, written: Body) -> list[str]:
    """The guarded fields that differ, those the seen status shows first: a finished run's status
    is kept without its history and result (controller.cache), which is no change of its own."""
    a, b = guarded(seen), guarded(written)
    changed = [field for field in GUARDED if a[field] != b[field]]
    shown = [field for field in changed if field in seen]
    return [f"status.{field}" for field in shown or changed]


def _attempt(status: Body) -> int:
    value = status.get("attempt")
    return value if isinstance(value, int) else 0


def _attempt_of(job: Body) -> int:
    try:
        return int(((job.get("metadata") or {}).get("labels") or {}).get(LABEL_ATTEMPT, "0"))
    except ValueError:
        return 0


def _jobs_deny(status: Body, jobs: list[Body], of: Callable[[Body], list[Body]]) -> str | None:
    """Why the run's Jobs contradict its status, or None. Only a claimed success is checked: the
    operator writes Succeeded from a Complete Job or its succeeded pod alone, while other ends
    (Cancelled, TimedOut, a start that failed) are its decisions, made as a Job goes away."""
    if status.get("phase") != "Succeeded":
        return None
    attempt = _attempt(status)
    if attempt <= 0:
        return "it says Succeeded but no attempt has run"
    mine = [j for j in jobs if _attempt_of(j) == attempt]
    if mine and not any(attempt_succeeded(j, of(j)) for j in mine):
        running = not any(attempt_ended(j, of(j)) for j in mine)
        return f"it says Succeeded but the Job of attempt {attempt} {'is still running' if running else 'failed'}"
    later = sorted(_attempt_of(j) for j in jobs if _attempt_of(j) > attempt and not attempt_ended(j, of(j))
                   and not (j.get("metadata") or {}).get("deletionTimestamp"))
    if later:
        return f"it says Succeeded at attempt {attempt} but the Job of attempt {later[-1]} is still running"
    return None


def _before_outcome(status: Body) -> Body:
    """The status without its claimed outcome: the run's attempt as it was, for the Jobs to decide."""
    attempt = max(_attempt(status), 0)
    kept = {k: v for k, v in status.items() if k not in OUTCOME and k != "conditions"}
    return {**kept, "attempt": attempt, "phase": "Running" if attempt else "Pending"}


def judge_status(seen: Body | None, written: Body | None, uid: str, jobs: Iterable[Body],
                 pods_of: Callable[[Body], list[Body]] = lambda job: []) -> Forged | None:
    """None when the run's status (``seen``) can be believed; else what to decide from instead.

    ``written`` is the status this operator last wrote for the run (None when it has written none
    since it started); ``jobs`` are the Jobs of the run (only those its ``uid`` controls count);
    ``pods_of`` a Job's pods (looked up only when the status is not the operator's own).
    """
    seen = seen or {}
    if written is not None:
        changed = _changed(seen, written)
        if not changed:
            return None
        return Forged(dict(written), bounded(
            f"{', '.join(changed)} changed by someone other than the kubetasks operator (it last wrote phase "
            f"{written.get('phase') or 'Pending'}, attempt {written.get('attempt') or 0}): the status it wrote "
            "is restored and the run's Jobs decide; only the operator writes a run's status "
            "(to stop a run, set spec.cancel: true)"))
    why = _jobs_deny(seen, [j for j in jobs if controller_uid(j) == uid], pods_of)
    if why is None:
        return None
    restored = _before_outcome(seen)
    return Forged(restored, bounded(
        f"status not written by the kubetasks operator: {why}; the claimed outcome is dropped and the run "
        f"goes on as its Jobs say (from phase {restored['phase']}, attempt {restored['attempt']}); only the "
        "operator writes a run's status (to stop a run, set spec.cancel: true)"))
