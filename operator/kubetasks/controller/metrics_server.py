"""Serves /metrics (aiohttp, in the operator's loop): to a bearer token whose user may ``get`` the
non-resource URL /metrics (core.metrics_access decides), over TLS when a certificate is given;
without a token on a loopback address only (a scrape sidecar).

Environment: KUBETASKS_METRICS_PORT (9090; 0 = off), KUBETASKS_METRICS_BIND_ADDRESS (0.0.0.0;
127.0.0.1 serves the pod's own containers only, with no token), KUBETASKS_METRICS_CERT_DIR
(tls.crt and tls.key: HTTPS; the chart makes a self-signed pair, or mounts your Secret; a renewed
pair is served within a minute).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from kubetasks import kube
from kubetasks.core.metrics_access import (METRICS_PATH, METRICS_VERB, Verdict, VerdictCache, authenticated,
                                           authorized, bearer_token, needs_token)

log = logging.getLogger(__name__)
REVIEWS_AT_ONCE = 4  # a flood of new tokens waits here, not on the API server
RELOAD_SECONDS = 60.0  # how soon a renewed certificate is served


class MetricsServer:
    def __init__(self, secure: bool, review_token: Callable[[str], dict[str, Any]] = kube.review_token,
                 review_access: Callable[[dict[str, Any], str, str], dict[str, Any]] = kube.review_access,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.secure = secure
        self.review_token, self.review_access, self.clock = review_token, review_access, clock
        self.cache = VerdictCache()
        self._reviews = asyncio.Semaphore(REVIEWS_AT_ONCE)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(METRICS_PATH, self.metrics)
        return app

    async def metrics(self, request: web.Request) -> web.Response:
        if self.secure:
            token = bearer_token(request.headers.get("Authorization"))
            verdict = Verdict(401, "no bearer token") if token is None else await self.verdict(token)
            if not verdict.allowed:
                headers = {"WWW-Authenticate": 'Bearer realm="kubetasks-metrics"'} if verdict.status == 401 else {}
                return web.Response(status=verdict.status, text=verdict.reason + "\n", headers=headers)
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def verdict(self, token: str) -> Verdict:
        cached = self.cache.get(token, self.clock())
        if cached is not None:
            return cached
        async with self._reviews:
            try:
                reviewed = await asyncio.to_thread(self.review_token, token)
                verdict = authenticated(reviewed)
                if verdict is None:
                    user = reviewed["user"]
                    verdict = authorized(user, await asyncio.to_thread(self.review_access, user, METRICS_VERB,
                                                                      METRICS_PATH))
            except Exception as e:  # not remembered: the next scrape asks again
                log.warning("could not review a metrics scrape's token: %s", kube.error_line(e))
                return Verdict(503, "the API server could not review the token; try again")
        self.cache.put(token, verdict, self.clock())
        return verdict


def tls_context(cert_dir: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(os.path.join(cert_dir, "tls.crt"), os.path.join(cert_dir, "tls.key"))
    return context


def _stamp(cert_dir: str) -> tuple[float, ...]:
    try:  # a Secret volume swaps its files by a symlink: stat follows it
        return tuple(os.stat(os.path.join(cert_dir, f)).st_mtime for f in ("tls.crt", "tls.key"))
    except OSError:
        return ()


async def reload_certificates(context: Any, cert_dir: str, every: float = RELOAD_SECONDS) -> None:
    """Loads a renewed certificate (cert-manager's, rotated in the Secret) into ``context``: new
    connections get it, as controller-runtime's certwatcher does. A half-written pair is tried again."""
    seen = _stamp(cert_dir)
    while True:
        await asyncio.sleep(every)
        stamp = _stamp(cert_dir)
        if stamp == seen or not stamp:
            continue
        try:
            context.load_cert_chain(os.path.join(cert_dir, "tls.crt"), os.path.join(cert_dir, "tls.key"))
        except (OSError, ssl.SSLError) as e:
            log.warning("could not load the renewed metrics certificate from %s: %s", cert_dir, e)
            continue
        seen = stamp
        log.info("metrics certificate reloaded from %s", cert_dir)


async def serve(env: Mapping[str, str] = os.environ) -> web.AppRunner | None:
    """Starts the endpoint the environment asks for; None when it is off."""
    port = int(env.get("KUBETASKS_METRICS_PORT", "9090"))
    if not port:
        return None
    address = env.get("KUBETASKS_METRICS_BIND_ADDRESS") or "0.0.0.0"
    cert_dir = env.get("KUBETASKS_METRICS_CERT_DIR")
    secure = needs_token(address)
    if secure and not cert_dir:
        log.warning("metrics on %s:%d over plain HTTP: scrapers' tokens cross the network in clear "
                    "(set KUBETASKS_METRICS_CERT_DIR)", address, port)
    app = MetricsServer(secure).app()
    context = tls_context(cert_dir) if cert_dir else None
    if context is not None and cert_dir:
        async def reloading(_: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(reload_certificates(context, cert_dir), name="metrics-certificate")
            yield
            task.cancel()
        app.cleanup_ctx.append(reloading)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address, port, ssl_context=context).start()
    log.info("metrics on %s://%s:%d%s (%s)", "https" if cert_dir else "http", address, port, METRICS_PATH,
             "bearer token with get on the non-resource URL /metrics" if secure else "no token: loopback only")
    return runner
