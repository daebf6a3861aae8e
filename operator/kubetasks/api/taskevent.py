"""TaskEvent: something that happened (``user.created``), sent with ``kubetasks send`` (RBAC:
``create`` on taskevents). Every Task in its namespace subscribed to its name (``spec.on``) gets
one run, with the event's data as payload.

Named from (event, id) (core.events.event_object_name): a resend with the same id is a 409 and
starts nothing twice. The operator records which runs it started (status.runs) and deletes the
event once it is older than the chart's ``events.retention``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from kubetasks.api.common import JSON, Model, matches, rules

EVENT_DATA_LIMIT = 64 * 1024  # bytes of an event's JSON data: it becomes runs' payloads and CEL filters read it
# A dotted name, each part lowercase letters, digits, '-' or '_' (user.created, billing.invoice_paid);
# at most 63 characters, so it is also a label value on the runs it starts.
EVENT_NAME = r"^[a-z0-9]([-_a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-_a-z0-9]*[a-z0-9])?)*$"
EVENT_NAME_WORDS = ("a dotted name (user.created): parts of lowercase letters, digits, '-' and '_', starting and "
                    "ending with a letter or digit, at most 63 characters")
# A label value (at most 63, alphanumeric at both ends): the runs an event starts are labelled with it.
EVENT_ID = r"^[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?$"
EVENT_ID_WORDS = "letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most 63 characters"


class TaskEventSpec(Model):
    """The event, as sent. Immutable: the runs it started were started with it."""

    event: str = Field(max_length=63, description=f"The event's name: {EVENT_NAME_WORDS}.",
                       json_schema_extra=rules((matches("self", EVENT_NAME), f"event must be {EVENT_NAME_WORDS}")))
    id: str = Field(max_length=63, description="The event's id: a resend with the same id starts nothing. "
                                               f"{EVENT_ID_WORDS[0].upper()}{EVENT_ID_WORDS[1:]}.",
                    json_schema_extra=rules((matches("self", EVENT_ID), f"id must be {EVENT_ID_WORDS}")))
    data: JSON | None = Field(default=None, description="Any JSON, at most 64 KiB (kubetasks send checks; the "
                                                        "operator starts nothing for a larger one): the payload of "
                                                        "the runs it starts, `data` in subscriptions' filters.")

    model_config = Model.model_config | {"json_schema_extra": rules(
        ("self == oldSelf", "a TaskEvent's spec is immutable: send another event (another id) instead"))}


class TaskEventStatus(Model):
    runs: list[str] = Field(default_factory=list, description="The TaskRuns it started, one per subscribed Task.")
    dispatched_at: datetime | None = Field(default=None, description="When the operator started its runs.")
    message: str | None = Field(default=None, max_length=1024, description="Why it started nothing, if so.")


class TaskEvent(Model):
    api_version: str = "kubetasks.io/v1alpha1"
    kind: str = "TaskEvent"
    metadata: dict[str, JSON] = Field(default_factory=dict)
    spec: TaskEventSpec
    status: TaskEventStatus = Field(default_factory=TaskEventStatus)
