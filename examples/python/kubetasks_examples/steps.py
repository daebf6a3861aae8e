"""Three durable steps, each with a side effect that can be counted outside the pod.

Each step prints a line and adds one to its key ("step-1", "step-2", "step-3") in the ConfigMap
named by ``payload["counter"]`` (optional; use one per run). A run's pods may only touch their own
checkpoint ConfigMap, so whoever runs this example grants access to the counter: create the
ConfigMap and a Role with get/patch on it, bound to the task's service account (a Task with
``serviceAccountName`` and ``bindRunRole: true``, which keeps its checkpoints; or the group
``system:serviceaccounts:<namespace>``).

With ``payload["crash"]`` the first attempt dies between step 2 and step 3: ``true`` (or "exit")
exits hard with ``os._exit(1)`` as a killed process would, "raise" raises. The retry skips steps
1 and 2, so every counter ends at 1.
"""

from __future__ import annotations

import os
from typing import Any

from kubetasks.runtime import Context, task


def bump(ctx: Context, counter: str | None, name: str) -> int:
    """The side effect of a step: +1 on ``name`` in the counter ConfigMap; the new count."""
    print(f"side effect: {name} (run {ctx.run_id}, attempt {ctx.attempt}, "
          f"idempotency key {ctx.step.idempotency_key})", flush=True)
    if not counter:
        return 1
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    from kubetasks.runtime.kube import api_client

    api = CoreV1Api(api_client())
    for _ in range(10):
        cm = api.read_namespaced_config_map(counter, ctx.namespace)
        count = int((cm.data or {}).get(name, "0")) + 1
        # resourceVersion makes the merge patch conditional: a concurrent write is a 409, not lost.
        body = {"metadata": {"resourceVersion": cm.metadata.resource_version}, "data": {name: str(count)}}
        try:
            api.patch_namespaced_config_map(counter, ctx.namespace, body,
                                            _content_type="application/merge-patch+json")
            return count
        except ApiException as e:
            if e.status != 409:
                raise
    raise RuntimeError(f"counter {counter}: too many concurrent updates")


@task(id="steps", retry=3)
def steps(payload: dict[str, Any] | None, ctx: Context) -> dict[str, Any]:
    payload = payload or {}
    counter = payload.get("counter")
    one = ctx.step.run("step-1", bump, ctx, counter, "step-1")
    two = ctx.step.run("step-2", bump, ctx, counter, "step-2")
    crash = payload.get("crash")
    if crash and ctx.attempt == 1:
        if crash == "raise":
            raise RuntimeError("crashing between step 2 and step 3, as the payload asks")
        print("crashing hard between step 2 and step 3, as the payload asks", flush=True)
        os._exit(1)
    three = ctx.step.run("step-3", bump, ctx, counter, "step-3")
    return {"counts": [one, two, three], "attempt": ctx.attempt}
