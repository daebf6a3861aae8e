"""Who may read the operator's /metrics (they name every watched namespace's Tasks).

As controller-runtime's secure metrics: a bearer token, authenticated by the API server (a
TokenReview), whose user may ``get`` the non-resource URL ``/metrics`` (a SubjectAccessReview).
Verdicts are remembered briefly by the token's hash, so a scrape every 15 s costs no API call
each time; the clock is an argument. Served on a loopback address only (a scrape sidecar in the
operator's pod), /metrics needs no token: nothing outside the pod reaches it.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

METRICS_PATH = "/metrics"
METRICS_VERB = "get"
ALLOWED_TTL = 60.0  # a revoked right or token still scrapes this long: kube-rbac-proxy keeps 5 min
DENIED_TTL = 10.0  # a right just granted waits at most this long
CACHE_SIZE = 256  # tokens remembered; the oldest go first


@dataclass(frozen=True)
class Verdict:
    status: int  # 200, 401 (who are you?) or 403 (not you)
    reason: str

    @property
    def allowed(self) -> bool:
        return self.status == 200


def needs_token(bind_address: str) -> bool:
    """Metrics served on a loopback address are for the pod's own containers: no token."""
    if bind_address == "localhost":
        return False
    try:
        return not ipaddress.ip_address(bind_address).is_loopback
    except ValueError:
        return True


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticated(token_review: dict[str, Any]) -> Verdict | None:
    """A TokenReview's status: None when it names a user, else why not (401)."""
    if token_review.get("authenticated") and (token_review.get("user") or {}).get("username"):
        return None
    return Verdict(401, f"the token is not valid: {token_review.get('error') or 'not authenticated'}")


def access_verdict(user: dict[str, Any], access_review: dict[str, Any], what: str, advice: str = "") -> Verdict:
    """A SubjectAccessReview's status for ``user``: 200, or 403 saying who lacks ``what`` (a
    phrase: "get taskrun ns/name"), why, and what to do (``advice``)."""
    who = user.get("username", "")
    if access_review.get("allowed") and not access_review.get("denied"):
        return Verdict(200, f"{who} may {what}")
    why = access_review.get("reason") or access_review.get("evaluationError") or "no rule allows it"
    return Verdict(403, f"{who} may not {what} ({why}){': ' + advice if advice else ''}")


def authorized(user: dict[str, Any], access_review: dict[str, Any]) -> Verdict:
    """A SubjectAccessReview's status for ``user`` on the metrics."""
    return access_verdict(user, access_review, f"{METRICS_VERB} the non-resource URL {METRICS_PATH}",
                          "bind it to the ClusterRole <release>-metrics-reader")


def token_key(token: str) -> str:
    """What the cache keeps of a token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


class VerdictCache:
    """Verdicts by token hash, each for its TTL (allowed: longer; denied: shorter), at most
    ``size`` of them: a flood of new tokens evicts the oldest, never grows the memory."""

    def __init__(self, allowed_ttl: float = ALLOWED_TTL, denied_ttl: float = DENIED_TTL,
                 size: int = CACHE_SIZE) -> None:
        self.allowed_ttl, self.denied_ttl, self.size = allowed_ttl, denied_ttl, size
        self._entries: OrderedDict[str, tuple[float, Verdict]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> Verdict | None:
        key = token_key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry[0]:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, token: str, verdict: Verdict, now: float) -> None:
        ttl = self.allowed_ttl if verdict.allowed else self.denied_ttl
        key = token_key(token)
        self._entries.pop(key, None)
        self._entries[key] = (now + ttl, verdict)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
