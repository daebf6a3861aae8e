"""Waiting for an event: a run that waits, with no pod, for ``kubetasks send order.paid``.

``await_payment`` waits for an ``order.paid`` event whose data names its order
(``match: data.order == "<order>"``, CEL), for ``timeout`` (default 1h). Events sent from
``lookback`` seconds before the step was first reached count too (default 60): one sent while
the pod was still starting is not missed. The chosen event is recorded once: replays get the same.

Payload: ``order`` (the order id), ``timeout``, ``lookback``, ``pause`` (seconds the pod stays up
before it reaches the wait).
"""

from __future__ import annotations

import time
from typing import Any

from kubetasks.runtime import Context, EventTimeout, task


@task(id="await-payment")
def await_payment(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    order = str(payload.get("order", ""))
    time.sleep(float(payload.get("pause", 0)))
    try:
        paid = ctx.step.wait_for_event("paid", "order.paid", match=f"data.order == {order!r}",
                                       timeout=payload.get("timeout", "1h"), lookback=payload.get("lookback", 60))
    except EventTimeout:
        return {"order": order, "paid": False, "attempt": ctx.attempt}
    return {"order": order, "paid": True, "id": paid.id, "data": paid.data, "sentAt": paid.sent_at,
            "attempt": ctx.attempt}


@task(id="paid-or-approved")
def paid_or_approved(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The first of a payment event for the order and a person's approval (a token), or a timeout."""
    order = str(payload.get("order", ""))
    fired = ctx.step.wait_any("either", tokens=["approve"], events=[("order.paid", f"data.order == {order!r}")],
                              timeout=payload.get("timeout", "1h"), lookback=payload.get("lookback", 60))
    return {"kind": fired.kind, "key": fired.key, "index": fired.index,
            "id": fired.value.id if fired.kind == "event" else None}
