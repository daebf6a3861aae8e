"""Waiting for a person: a run that asks for an approval and waits for it with no pod.

``approval`` makes its token first (``create_token``: its name is what you send to whoever
approves, e.g. in a Slack message), then waits for it (``wait_for_token``). The attempt ends; the
run is Waiting, with no pod, until someone runs ``kubetasks complete <token> --data '{...}'`` (RBAC:
``update`` on ``waitpoints/status``), or the token times out and the task sees ``TokenTimeout``.
The first completion wins; one made before the run suspended is kept.

Where the operator serves signed completion URLs (the chart's ``tokens.completionUrl``), the
token's ``url`` completes it with a POST of the data as JSON, for systems that cannot talk to
Kubernetes.

Payload: ``timeout`` (e.g. "1h", default none), ``pause`` (seconds the pod stays up after making
the token, before it waits), ``counter`` (a ConfigMap to count the step before the wait in),
``showUrl`` (put the token's URL in the run's metadata, for the tests).
"""

from __future__ import annotations

import time
from typing import Any

from kubetasks.runtime import Context, TokenTimeout, task
from kubetasks_examples.steps import bump


@task(id="approval")
def approval(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    ctx.step.run("before", bump, ctx, payload.get("counter"), "before")
    token = ctx.step.create_token("approve", timeout=payload.get("timeout"))
    print(f"approve with: kubetasks complete {token} -n {ctx.namespace} --data '{{\"approved\": true}}'", flush=True)
    if token.url and payload.get("showUrl"):  # where the operator serves signed completion URLs
        # Whoever holds the URL may complete the token: a real task sends it to the approver
        # (a Slack message, an email), not to the run's metadata, which whoever reads runs sees.
        ctx.metadata.set("completionUrl", token.url)
    time.sleep(float(payload.get("pause", 0)))  # a completion may come before the wait: it is kept
    try:
        decision = ctx.step.wait_for_token("approve")
    except TokenTimeout:
        return {"token": token, "decision": None, "timedOut": True, "attempt": ctx.attempt}
    return {"token": token, "decision": decision, "timedOut": False, "attempt": ctx.attempt}


@task(id="decide")
def decide(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The first of an approval and a check run by another task, or a timeout (``wait_any``): the
    check still running when the approval comes is cancelled. Needs ``allowTrigger: [square]``."""
    from kubetasks_examples.fan_out import square

    fired = ctx.step.wait_any("decide", tokens=["approve"],
                              runs=[(square, {"n": 3, "seconds": payload.get("seconds", 0)})],
                              timeout=payload.get("timeout"))
    return {"kind": fired.kind, "key": fired.key, "index": fired.index, "value": fired.value,
            "error": type(fired.error).__name__ if fired.error else None}
