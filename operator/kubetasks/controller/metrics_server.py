"""Serves /metrics (aiohttp, in the operator's loop): to a bearer token whose user may ``get`` the
non-resource URL /metrics (core.metrics_access decides), over TLS when a certificate is given;
without a token on a loopback address only (a scrape sidecar).

And, on the same port, ``GET /why/<namespace>/<name>``: why that run waits, live (JSON, from
``explain``), to a bearer token whose user may ``get`` that TaskRun (core.why decides); a token is
needed on every address. 403 before 404: a refused caller does not learn whether the run exists.
``GET /results/<namespace>/<name>``, to the same callers: the run's result kept in the object store
(controller.results), its bytes read with the operator's credentials and verified by sha256.
``PUT /payloads/<namespace>``, to a caller who may ``create`` TaskRuns there: a payload for a
run's spec.payloadRef, kept in the object store (controller.payloads).
``GET /logs/<namespace>/<name>/<attempt>``, to the same callers: that attempt's archived log,
streamed from the object store (controller.log_archive), its size and sha256 in the headers.

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
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from kubetasks import kube
from kubetasks.api.storage import BlobRef
from kubetasks.blobs import BlobError
from kubetasks.core.log_archive import LOGS_PREFIX, SHA256_HEADER
from kubetasks.core.metrics_access import (METRICS_PATH, METRICS_VERB, Verdict, VerdictCache, authenticated,
                                           authorized, bearer_token, needs_token)
from kubetasks.controller.payloads import Payloads, serve_upload
from kubetasks.core.operator_address import RESULTS_PREFIX
from kubetasks.core.payload_refs import PAYLOADS_PREFIX, UPLOAD_VERB, upload_access
from kubetasks.core.why import TOKEN_HEADER, WHY_PREFIX, WHY_VERB, access_key, caller_token, run_access

log = logging.getLogger(__name__)
REVIEWS_AT_ONCE = 4  # a flood of new tokens waits here, not on the API server
RELOAD_SECONDS = 60.0  # how soon a renewed certificate is served
Explain = Callable[[str, str], dict[str, Any] | None]  # (namespace, name) -> the live answer; None: no such run
# (namespace, name) -> the store-held result's ref and bytes (controller.results.open_result)
OpenResult = Callable[[str, str], tuple[BlobRef, Iterator[bytes]]]
# (namespace, name, attempt) -> the archived log's ref and bytes (controller.log_archive.LogArchive.open)
OpenLog = Callable[[str, str, int], tuple[BlobRef, Iterator[bytes]]]


class MetricsServer:
    def __init__(self, secure: bool, review_token: Callable[[str], dict[str, Any]] = kube.review_token,
                 review_access: Callable[[dict[str, Any], str, str], dict[str, Any]] = kube.review_access,
                 clock: Callable[[], float] = time.monotonic, explain: Explain | None = None,
                 review_run: Callable[[dict[str, Any], str, str, str], dict[str, Any]] = kube.review_run_access,
                 open_result: OpenResult | None = None, open_log: OpenLog | None = None,
                 payloads: Payloads | None = None) -> None:
        self.secure, self.payloads = secure, payloads
        self.review_token, self.review_access, self.clock = review_token, review_access, clock
        self.explain, self.review_run, self.open_result, self.open_log = explain, review_run, open_result, open_log
        self.cache = VerdictCache()
        self._reviews = asyncio.Semaphore(REVIEWS_AT_ONCE)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(METRICS_PATH, self.metrics)
        if self.explain is not None:
            app.router.add_get(WHY_PREFIX + "{namespace}/{name}", self.why)
        if self.open_result is not None:
            app.router.add_get(RESULTS_PREFIX + "{namespace}/{name}", self.result)
        if self.open_log is not None:
            app.router.add_get(LOGS_PREFIX + "{namespace}/{name}/{attempt:[0-9]+}", self.logs)
        if self.payloads is not None:
            app.router.add_put(PAYLOADS_PREFIX + "{namespace}", self.upload_payload)
        return app

    async def upload_payload(self, request: web.Request) -> web.Response:
        """A payload for a run's spec.payloadRef, from a caller who may create TaskRuns in the namespace."""
        ns = request.match_info["namespace"]
        token = caller_token(request.headers.get("Authorization"), request.headers.get(TOKEN_HEADER))
        verdict = Verdict(401, "no bearer token") if token is None else await self.verdict(
            token, lambda user: upload_access(user, self.review_run(user, UPLOAD_VERB, ns, ""), ns),
            access_key(token, ns, "") + UPLOAD_VERB)
        if not verdict.allowed:
            return _refused(verdict, "kubetasks-payloads")
        assert self.payloads is not None
        return await serve_upload(self.payloads, ns, request)

    async def run_verdict(self, request: web.Request, ns: str, name: str) -> Verdict:
        """May the caller (its bearer token, reviewed) get the TaskRun ns/name?"""
        token = caller_token(request.headers.get("Authorization"), request.headers.get(TOKEN_HEADER))
        if token is None:
            return Verdict(401, "no bearer token")

        def review(user: dict[str, Any]) -> Verdict:
            return run_access(user, self.review_run(user, WHY_VERB, ns, name), ns, name)
        return await self.verdict(token, review, access_key(token, ns, name))

    async def result(self, request: web.Request) -> web.StreamResponse:
        """A run's result kept in the store, streamed to a caller who may get the run."""
        ns, name = request.match_info["namespace"], request.match_info["name"]
        assert self.open_result is not None
        return await self._blob(request, ns, name, "kubetasks-results", f"the result of {ns}/{name}",
                                lambda: self.open_result(ns, name))  # type: ignore[misc]

    async def why(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        verdict = await self.run_verdict(request, ns, name)
        if not verdict.allowed:
            return _refused(verdict, "kubetasks-why")
        assert self.explain is not None
        answer = self.explain(ns, name)  # in memory, in the loop: no await between the reads
        if answer is None:
            return web.json_response({"message": f"no TaskRun {ns}/{name} (or not one this operator serves)"},
                                     status=404)
        return web.json_response(answer, headers={"Cache-Control": "no-store"})

    async def logs(self, request: web.Request) -> web.StreamResponse:
        """An attempt's archived log, streamed to a caller who may get the run."""
        ns, name, attempt = request.match_info["namespace"], request.match_info["name"], int(request.match_info["attempt"])
        assert self.open_log is not None
        return await self._blob(request, ns, name, "kubetasks-logs", f"the log of {ns}/{name} attempt {attempt}",
                                lambda: self.open_log(ns, name, attempt))  # type: ignore[misc]

    async def _blob(self, request: web.Request, ns: str, name: str, realm: str, what: str,
                    open_blob: Callable[[], tuple[BlobRef, Iterator[bytes]]]) -> web.StreamResponse:
        """A blob of the run, to a caller who may get the run: streamed from the store as it is read
        (never whole in memory), its size and sha256 in the headers for the caller to check."""
        verdict = await self.run_verdict(request, ns, name)
        if not verdict.allowed:
            return _refused(verdict, realm)
        try:
            ref, chunks = await asyncio.to_thread(open_blob)
            first = await asyncio.to_thread(next, chunks, b"")  # a missing blob is known here, before a 200
        except (LookupError, BlobError) as e:
            return web.json_response({"message": str(e)}, status=404)
        except Exception as e:  # the API server or the store unreachable
            log.warning("could not open %s: %s", what, kube.error_line(e))
            return web.json_response({"message": f"could not read {what}: {kube.error_line(e)}"}, status=503)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream", "Cache-Control": "no-store",
                                               "Content-Length": str(ref.size), SHA256_HEADER: ref.sha256})
        await response.prepare(request)
        chunk = first
        try:
            while chunk:
                await response.write(chunk)
                chunk = await asyncio.to_thread(next, chunks, b"")
        except BlobError as e:  # its end differs from what was written: the caller sees a cut response
            log.warning("%s: %s", what, e)
            raise
        await response.write_eof()
        return response

    async def metrics(self, request: web.Request) -> web.Response:
        if self.secure:
            token = bearer_token(request.headers.get("Authorization"))
            verdict = Verdict(401, "no bearer token") if token is None else await self.verdict(token, self._metrics_access)
            if not verdict.allowed:
                return _refused(verdict, "kubetasks-metrics")
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _metrics_access(self, user: dict[str, Any]) -> Verdict:
        return authorized(user, self.review_access(user, METRICS_VERB, METRICS_PATH))

    async def verdict(self, token: str, authorize: Callable[[dict[str, Any]], Verdict] | None = None,
                      key: str | None = None) -> Verdict:
        """The token's user reviewed (TokenReview), then ``authorize``d (a SubjectAccessReview, in
        a thread); remembered by ``key`` (the token, by default)."""
        authorize = authorize or self._metrics_access
        key = key or token
        cached = self.cache.get(key, self.clock())
        if cached is not None:
            return cached
        async with self._reviews:
            try:
                reviewed = await asyncio.to_thread(self.review_token, token)
                verdict = authenticated(reviewed)
                if verdict is None:
                    verdict = await asyncio.to_thread(authorize, reviewed["user"])
            except Exception as e:  # not remembered: the next request asks again
                log.warning("could not review a request's token: %s", kube.error_line(e))
                return Verdict(503, "the API server could not review the token; try again")
        self.cache.put(key, verdict, self.clock())
        return verdict


def _refused(verdict: Verdict, realm: str) -> web.Response:
    headers = {"WWW-Authenticate": f'Bearer realm="{realm}"'} if verdict.status == 401 else {}
    return web.Response(status=verdict.status, text=verdict.reason + "\n", headers=headers)


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


async def start_site(app: web.Application, address: str, port: int, cert_dir: str | None, name: str) -> web.AppRunner:
    """Serves ``app`` on ``address:port``: over TLS with the pair in ``cert_dir`` (reloaded when it
    is renewed), else plain HTTP."""
    context = tls_context(cert_dir) if cert_dir else None
    if context is not None and cert_dir:
        async def reloading(_: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(reload_certificates(context, cert_dir), name=f"{name}-certificate")
            yield
            task.cancel()
        app.cleanup_ctx.append(reloading)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address, port, ssl_context=context).start()
    return runner


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


async def serve(env: Mapping[str, str] = os.environ, explain: Explain | None = None,
                open_result: OpenResult | None = None, open_log: OpenLog | None = None,
                payloads: Payloads | None = None) -> web.AppRunner | None:
    """Starts the endpoint the environment asks for; None when it is off. With ``explain``, it
    answers /why/<namespace>/<name> too; with ``open_result``, /results/<namespace>/<name>."""
    port = int(env.get("KUBETASKS_METRICS_PORT", "9090"))
    if not port:
        return None
    address = env.get("KUBETASKS_METRICS_BIND_ADDRESS") or "0.0.0.0"
    cert_dir = env.get("KUBETASKS_METRICS_CERT_DIR")
    secure = needs_token(address)
    if secure and not cert_dir:
        log.warning("metrics on %s:%d over plain HTTP: scrapers' tokens cross the network in clear "
                    "(set KUBETASKS_METRICS_CERT_DIR)", address, port)
    server = MetricsServer(secure, explain=explain, open_result=open_result, open_log=open_log, payloads=payloads)
    runner = await start_site(server.app(),
                              address, port, cert_dir, "metrics")
    log.info("metrics on %s://%s:%d%s (%s)", "https" if cert_dir else "http", address, port, METRICS_PATH,
             "bearer token with get on the non-resource URL /metrics" if secure else "no token: loopback only")
    return runner
