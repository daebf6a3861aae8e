"""Serves the operator's validating admission webhook (aiohttp, HTTPS, in the operator's loop):
a TaskRun created while its TaskQueue is full (``maxWaiting``) is refused with a message that
names the queue. A ValidatingAdmissionPolicy cannot count objects; the operator's memory can
(controller.queues answers, core.queues decides). The chart registers it with
``failurePolicy: Ignore``: an operator that is down must not stop every create, so the operator
also fails a run that got past it (QueueFull, at its first reconcile).

Environment: KUBETASKS_WEBHOOK_PORT (0 = off, the default outside the chart),
KUBETASKS_WEBHOOK_CERT_DIR (tls.crt and tls.key, required: kube-apiserver calls HTTPS only; a
renewed pair is served within a minute), KUBETASKS_WEBHOOK_BIND_ADDRESS (0.0.0.0).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from kubetasks.controller.metrics_server import start_site
from kubetasks.controller.queues import QueueAdmission

log = logging.getLogger(__name__)
PATH = "/validate-taskruns"


def answer(request: Mapping[str, Any], refused: str | None) -> dict[str, Any]:
    """The AdmissionReview response to ``request``: allowed, or refused with the message."""
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": refused is None}
    if refused is not None:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": refused}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def app(admission: QueueAdmission, ready: Any = lambda: True) -> web.Application:
    async def review(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            req = body["request"]
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="not an AdmissionReview\n")
        refused = None
        if ready() and req.get("operation") == "CREATE":
            try:
                refused = admission.review(req)
            except Exception:  # never refuse a create over the operator's own fault: it also checks later
                log.exception("reviewing a TaskRun create failed; allowed")
        return web.json_response(answer(req, refused))

    application = web.Application(client_max_size=4 * 1024 * 1024)  # a run's payload travels in the review
    application.router.add_post(PATH, review)
    return application


async def serve(admission: QueueAdmission, ready: Any, env: Mapping[str, str] = os.environ) -> web.AppRunner | None:
    """Starts the webhook the environment asks for; None when it is off."""
    port = int(env.get("KUBETASKS_WEBHOOK_PORT") or 0)
    cert_dir = env.get("KUBETASKS_WEBHOOK_CERT_DIR")
    if not port:
        return None
    if not cert_dir:
        log.warning("admission webhook off: KUBETASKS_WEBHOOK_PORT is set but not KUBETASKS_WEBHOOK_CERT_DIR "
                    "(kube-apiserver calls webhooks over HTTPS only)")
        return None
    address = env.get("KUBETASKS_WEBHOOK_BIND_ADDRESS") or "0.0.0.0"
    runner = await start_site(app(admission, ready), address, port, cert_dir, "webhook")
    log.info("admission webhook on https://%s:%d%s", address, port, PATH)
    return runner
