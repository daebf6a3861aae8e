"""A user's tasks, in their own image (see ../Dockerfile): ``kubetasks deploy tasks.py --image ...``
from this directory, or ``kubetasks deploy app/tasks.py --image ...`` from the one above."""

from __future__ import annotations

from pydantic import BaseModel

from kubetasks import task


class Order(BaseModel):
    id: str
    items: list[int]


@task(retry=3, max_duration="5m")
def total_order(order: Order) -> dict[str, object]:
    """The order's total: the payload is validated against Order (its JSON schema is the Task's
    payloadSchema, so the operator refuses a bad payload before a pod starts)."""
    # The app's own dependency (../requirements.txt), imported where it is used: `kubetasks deploy`
    # imports this module to read its decorators, and needs only kubetasks where it runs (a CI job).
    import humanize

    return {"order": order.id, "total": sum(order.items), "lines": humanize.apnumber(len(order.items))}


@task(machine="small-1x")
def ping() -> str:
    return "pong"
