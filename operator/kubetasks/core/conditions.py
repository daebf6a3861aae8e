"""Kubernetes-style conditions: set one, keeping lastTransitionTime while its status holds."""

from __future__ import annotations

from datetime import datetime

from kubetasks.api.common import Condition, ConditionStatus
from kubetasks.core.echo import printable


def set_condition(conditions: list[Condition], new: Condition) -> list[Condition]:
    """Returns conditions with ``new`` in place of the one of its type."""
    old = next((c for c in conditions if c.type == new.type), None)
    if old is not None and old.status == new.status:
        new = new.model_copy(update={"last_transition_time": old.last_transition_time})
    return [c for c in conditions if c.type != new.type] + [new]


def condition(type_: str, status: ConditionStatus, reason: str, message: str, now: datetime, generation: int | None) -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=printable(message),
                     last_transition_time=now.replace(microsecond=0), observed_generation=generation)


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
