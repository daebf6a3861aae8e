"""Why a run waits: who may ask the operator, and the live answer in words.

The operator answers ``GET /why/<namespace>/<name>`` with :meth:`FlowControl.explain`'s dict, to a
bearer token (a TokenReview) whose user may ``get`` that TaskRun (a SubjectAccessReview with its
namespace and name): what ``kubectl get taskrun`` would show them, never another run's namespace.
An unknown run is a 404 to an allowed caller only; everyone else gets the 403 first, so a refused
caller learns nothing, not even whether the run exists.

The CLI (``kubetasks why``) and the dashboard's run page render :func:`summary`; when the
operator cannot be reached they fall back to the run's own status (``status.waitingFor``, the
Succeeded condition's message) and say that the live answer was not available.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubetasks.api.common import GROUP
from kubetasks.core.metrics_access import Verdict, access_verdict, bearer_token

WHY_PREFIX = "/why/"
WHY_VERB = "get"
WHY_RESOURCE = "taskruns"
# The API server's service proxy drops the Authorization header once it has authenticated the
# caller; the CLI sends the user's token in this header too, for the operator to review.
TOKEN_HEADER = "X-Kubetasks-Authorization"


def why_path(namespace: str, name: str) -> str:
    return f"{WHY_PREFIX}{namespace}/{name}"


def caller_token(authorization: str | None, forwarded: str | None) -> str | None:
    """The caller's bearer token: ``Authorization``, else the one the service proxy let through."""
    return bearer_token(authorization) or bearer_token(forwarded)


def run_access(user: dict[str, Any], access_review: dict[str, Any], namespace: str, name: str) -> Verdict:
    """A SubjectAccessReview's status (``get`` the TaskRun ``namespace/name``) for ``user``."""
    return access_verdict(user, access_review, f"{WHY_VERB} taskruns.{GROUP} {name!r} in the namespace {namespace!r}")


def access_key(token: str, namespace: str, name: str) -> str:
    """What a verdict is remembered by (hashed by the cache): the token and the run it was for."""
    return f"{token}\n{namespace}/{name}"


# The ETA ----------------------------------------------------------------------------------------

def slot_eta(ahead: int, free: int, rate: float | None, since_release: float) -> float | None:
    """Seconds until a run with ``ahead`` runs before it in a limit's line starts, when ``free``
    slots are free now and the limit gives a slot up ``rate`` times a second (its last given up
    ``since_release`` seconds ago): the k-th release from now comes about ``k / rate`` after the
    last one, not after now (the run holding the slot is already part way through), and no
    sooner than ``(k - 1) / rate`` from now (a holder that is late is still to come). None: no
    rate seen yet."""
    if ahead < free:
        return 0.0
    if not rate:
        return None
    k = ahead - free + 1
    return max(k / rate - max(since_release, 0.0), (k - 1) / rate)


# The answer in words ------------------------------------------------------------------------------

def duration_text(seconds: float | None) -> str:
    """``45s``, ``3m10s``, ``2h05m``; ``unknown`` for None."""
    if seconds is None:
        return "unknown"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass(frozen=True)
class LimitLine:
    limit: str
    reason: str
    position: str  # "3 of 5", "-" when the run is not in its line
    holders: str  # "1/1: slow-1" for a slot limit; "5 per 10s" for a throttle
    window: str  # a throttle's next start; "-" for a slot limit
    rate: str  # the limit's observed service rate
    eta: str


@dataclass(frozen=True)
class Why:
    headline: str
    live: bool
    note: str | None = None  # why the live answer is missing, or what it could not tell
    limits: list[LimitLine] = field(default_factory=list)


def _limit_line(entry: dict[str, Any], now: datetime) -> LimitLine:
    position = entry.get("position")
    where = f"{position} of {entry.get('waiting', '?')}" if position else "-"
    if entry.get("reason") == "Throttled":
        held = f"{entry.get('startsPerPeriod')} per {entry.get('periodSeconds', 0):g}s ({entry.get('room', 0)} now)"
        window = "-"
        if entry.get("nextStartAt"):
            try:
                at = datetime.fromisoformat(str(entry["nextStartAt"]))
                window = f"{at.isoformat(timespec='seconds')} (in {duration_text((at - now).total_seconds())})"
            except ValueError:
                window = str(entry["nextStartAt"])
        rate = "-"
    else:
        names = [str(h.get("run")) for h in entry.get("holders") or [] if isinstance(h, dict)]
        shown = ", ".join(names[:5]) + (f", +{len(names) - 5}" if len(names) > 5 else "")
        held = f"{entry.get('used', 0)}/{entry.get('capacity', '?')}" + (f": {shown}" if shown else "")
        window = "-"
        per = entry.get("servicePerSecond")
        rate = f"{60 * per:.2g}/min" if isinstance(per, (int, float)) and per > 0 else "not seen yet"
    eta = entry.get("etaSeconds")
    return LimitLine(str(entry.get("limit", "")), str(entry.get("reason", "")), where, held, window, rate,
                     duration_text(eta) if isinstance(eta, (int, float)) else "-")


def _status_reason(run: dict[str, Any]) -> str:
    status = run.get("status") or {}
    waiting = status.get("waitingFor") or {}
    cond = next((c for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("type") == "Succeeded"), {})
    parts = []
    if waiting.get("reason"):
        parts.append(f"{waiting['reason']}" + (f" ({waiting['limit']})" if waiting.get("limit") else ""))
    if cond.get("message"):
        parts.append(str(cond["message"]))
    return ": ".join(parts) or f"phase {status.get('phase') or 'Pending'}"


def summary(run: dict[str, Any], answer: dict[str, Any] | None, problem: str | None, now: datetime) -> Why:
    """The operator's live ``answer`` for ``run`` in words; without one, what the status says
    and ``problem`` (why the operator could not answer)."""
    if answer is None:
        return Why(_status_reason(run), False, f"the live answer was not available: {problem or 'no operator'}")
    limits = [_limit_line(e, now) for e in answer.get("limits") or [] if isinstance(e, dict)]
    if not answer.get("waiting"):
        phase = (run.get("status") or {}).get("phase") or "Pending"
        note = None if limits else "its Task has no concurrency limit, queue or throttle"
        return Why(f"not waiting for a slot ({phase})", True, note, limits)
    held = answer.get("waitingFor") or {}
    eta = answer.get("etaSeconds")
    head = f"waiting for {held.get('limit') or 'a limit'} ({held.get('reason') or 'its turn'})" if held else \
        "waiting to start"
    head += f"; starts in about {duration_text(eta)}" if isinstance(eta, (int, float)) else \
        "; no ETA yet (no slot of its limit has been given up lately)"
    return Why(head, True, None, limits)
