"""Typed payload and result with pydantic, in an async task.

The payload is validated before the function runs (a bad one fails the run at once with
InvalidPayload), the model's JSON Schema becomes the Task's payloadSchema, and
``typed.trigger_and_wait(...)`` returns a ``Receipt``.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kubetasks.runtime import Context, task


class Order(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    item: str = Field(min_length=1)
    quantity: int = Field(ge=1, le=100)
    unit_price_cents: int = Field(ge=0)


class Receipt(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    item: str
    quantity: int
    total_cents: int


async def price(order: Order) -> int:
    await asyncio.sleep(0)  # stands in for a call to a pricing service
    return order.quantity * order.unit_price_cents


@task(id="typed")
async def typed(payload: Order, ctx: Context) -> Receipt:
    total = await ctx.step.run_async("price", price, payload)
    return Receipt(item=payload.item, quantity=payload.quantity, total_cents=total)
