"""Leader election on a coordination.k8s.io Lease, decided without I/O (client-go's algorithm).

Two clocks, kept apart on purpose. Whether another replica's Lease has expired is judged only on
this process's monotonic clock: the Lease counts as held until ``leaseDurationSeconds`` have
passed since this replica last saw its record *change* (client-go's ``observedTime``), so the
nodes' wall clocks may disagree by any amount. The wall clock only stamps ``acquireTime`` and
``renewTime``, for people and other tools.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubetasks.api.times import format_time, parse_time


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """The election fields of a Lease's spec. No holder means released (or never held)."""

    holder: str | None = None
    duration_seconds: int | None = None
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> LeaseRecord:
        return cls(holder=spec.get("holderIdentity") or None,  # client-go releases with ""
                   duration_seconds=spec.get("leaseDurationSeconds"),
                   acquire_time=parse_time(spec.get("acquireTime")), renew_time=parse_time(spec.get("renewTime")),
                   transitions=spec.get("leaseTransitions") or 0)

    def to_spec(self) -> dict[str, Any]:
        """The spec fields to write; ``None`` (JSON null) clears a field in a replace."""
        return {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration_seconds,
                "acquireTime": _format(self.acquire_time), "renewTime": _format(self.renew_time),
                "leaseTransitions": self.transitions}


@dataclasses.dataclass(frozen=True)
class Observation:
    """A record (``None``: no Lease exists) and the monotonic time it was first seen as it is."""

    record: LeaseRecord | None
    changed_at: float


class Action(enum.Enum):
    ACQUIRE = "acquire"  # no Lease, released, or expired: write ourselves in
    RENEW = "renew"      # we hold it: write a new renewTime
    WAIT = "wait"        # another holder's Lease has not expired: write nothing


@dataclasses.dataclass(frozen=True)
class Decision:
    action: Action
    record: LeaseRecord | None = None  # what to write; None when waiting


def observe(previous: Observation | None, record: LeaseRecord | None, now: float) -> Observation:
    """What this replica knows after reading ``record`` at monotonic time ``now``: a record seen
    unchanged keeps the time it was first seen, so an unrenewed Lease ages on our clock only."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def expires_at(seen: Observation, default_seconds: int) -> float:
    """Monotonic time from which another holder's Lease may be taken (if nothing changes)."""
    record = seen.record
    duration = record.duration_seconds if record and record.duration_seconds else default_seconds
    return seen.changed_at + duration


def decide(seen: Observation, identity: str, now: float, wall: datetime, lease_seconds: int) -> Decision:
    """What ``identity`` does at monotonic ``now`` given what it has seen; ``wall`` stamps the record."""
    old = seen.record
    if old is not None and old.holder == identity:
        return Decision(Action.RENEW, dataclasses.replace(
            old, duration_seconds=lease_seconds, renew_time=wall, acquire_time=old.acquire_time or wall))
    if old is not None and old.holder is not None and now < expires_at(seen, lease_seconds):
        return Decision(Action.WAIT)
    transitions = 0 if old is None else old.transitions + 1
    return Decision(Action.ACQUIRE, LeaseRecord(identity, lease_seconds, wall, wall, transitions))


def released(record: LeaseRecord, wall: datetime) -> LeaseRecord:
    """The record a holder writes on a clean shutdown, so a standby takes over at once (as client-go
    does, with a 1 s duration for tools that look at renewTime)."""
    return dataclasses.replace(record, holder=None, duration_seconds=1, renew_time=wall)


def renew_overdue(renewed_at: float, now: float, renew_deadline: float) -> bool:
    """A leader that last renewed (sent a renewal that succeeded) at ``renewed_at`` must stop acting."""
    return now - renewed_at > renew_deadline


def request_timeout(renewed_at: float | None, now: float, renew_deadline: float, cap: float) -> float:
    """Timeout for the next request: a leader's ends by its renew deadline (it may be <= 0: too late
    to send); a standby (``renewed_at`` None) has no deadline, only the cap."""
    if renewed_at is None:
        return cap
    return min(cap, renewed_at + renew_deadline - now)


def _format(value: datetime | None) -> str | None:
    return None if value is None else format_time(value, "microseconds")
