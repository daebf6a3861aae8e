"""A reverse proxy in front of the test cluster's kube-apiserver that can hold requests back.

    with ApiProxy(delay=lambda call: 30 if call.verb == "LIST" and call.resource == "jobs" else 0) as proxy:
        OperatorProcess(..., env={"KUBECONFIG": str(proxy.kubeconfig)}).start()
        ...
        proxy.count("LIST", "taskruns")

It listens on 127.0.0.1 (plain HTTP, no credentials asked) and forwards every request to the
API server of a kubeconfig (the admin one of the local cluster by default) with that
kubeconfig's client certificate. Responses are streamed chunk by chunk as they arrive, so
watches behave as they do without it. ``delay(call)`` gives the seconds to hold a request before
forwarding it (0: at once); every request is recorded in ``calls``, as kube-apiserver's metrics
would count it (verb and resource), but for this proxy's clients only.

It runs its own event loop in a daemon thread (aiohttp), so synchronous tests can use it.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import yaml
from aiohttp import web
from yarl import URL

from tests.conftest import KUBECONFIG

# Hop-by-hop and framing headers: the proxy frames its own responses.
DROPPED = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade",
           "proxy-authorization", "proxy-authenticate", "te", "trailer"}


@dataclass(frozen=True)
class Call:
    """One request as the API server sees it."""

    method: str
    path: str
    query: dict[str, str]
    at: float = field(default=0.0, compare=False)  # time.monotonic() when it arrived

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")

    @property
    def resource(self) -> str:
        """``taskruns``, ``jobs``, ``leases``...; subresources as ``taskruns/status``."""
        parts = self._parts()
        return "/".join(parts[0:1] + parts[2:3])

    @property
    def verb(self) -> str:
        """kube-apiserver's verb: LIST and WATCH for reads of a collection, GET for one object."""
        if self.method == "GET":
            if self.watch:
                return "WATCH"
            return "LIST" if len(self._parts()) == 1 else "GET"
        return self.method

    def _parts(self) -> list[str]:
        parts = self.path.strip("/").split("/")
        parts = parts[2:] if parts[:1] == ["api"] else parts[3:] if parts[:1] == ["apis"] else []
        return parts[2:] if parts[:1] == ["namespaces"] and len(parts) > 2 else parts


class ApiProxy:
    def __init__(self, delay: Callable[[Call], float] = lambda call: 0.0, kubeconfig: str | Path = KUBECONFIG,
                 workdir: Path | None = None) -> None:
        self.delay = delay
        self.upstream, self._ssl = _upstream(Path(kubeconfig))
        self._dir = tempfile.TemporaryDirectory(prefix="apiproxy-") if workdir is None else None
        self.kubeconfig = Path(workdir or self._dir.name) / "proxy.kubeconfig"  # type: ignore[union-attr]
        self.calls: list[Call] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="apiproxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # Use -----------------------------------------------------------------------------------
    def __enter__(self) -> ApiProxy:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        self.url = f"http://127.0.0.1:{port}"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "proxy",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}]}))
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if self._dir is not None:
            self._dir.cleanup()

    def count(self, verb: str, resource: str, since: float = 0.0) -> int:
        """Requests with this verb on this resource that arrived at or after ``since`` (monotonic)."""
        return sum(1 for c in list(self.calls) if c.verb == verb and c.resource == resource and c.at >= since)

    def counts(self, since: float = 0.0) -> Counter[str]:
        """``"VERB resource"`` -> requests, since ``since``."""
        return Counter(f"{c.verb} {c.resource}" for c in list(self.calls) if c.at >= since)

    # The server ------------------------------------------------------------------------------
    async def _start(self) -> int:
        # No pool limit (every watch holds a connection) and no decompression: bodies pass as sent.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
                                              auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        # A client that goes away cancels its request, and so closes the upstream one (a watch).
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True,
                                    shutdown_timeout=2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._session is not None:  # first: ends the upstream watches, and so their handlers
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        call = Call(request.method, request.path, dict(parse_qsl(request.query_string)), time.monotonic())
        self.calls.append(call)
        if (hold := self.delay(call)) > 0:
            await asyncio.sleep(hold)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED}
        body = await request.read()
        url = URL(self.upstream + request.raw_path, encoded=True)  # the query as the client encoded it
        try:
            # Nothing added: aiohttp would give a body without a Content-Type (the official client
            # sends none) one of application/octet-stream, which kube-apiserver refuses.
            upstream = await self._session.request(request.method, url, headers=headers, data=body or None,
                                                   skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent"),
                                                   allow_redirects=False)
        except aiohttp.ClientConnectionError as e:  # kube-apiserver down (restarted, say): as a gateway says it
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 502,
                                      "reason": "BadGateway", "message": str(e)}, status=502)
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in DROPPED:
                    response.headers.add(name, value)
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():  # as it arrives: a watch's events one by one
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientError):
                pass  # one side went away mid-stream: the other sees the connection end, as it would
            return response


def _upstream(kubeconfig: Path) -> tuple[str, ssl.SSLContext]:
    """The server of the kubeconfig's current context, and a TLS context with its CA and client certificate."""
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    tls = ssl.create_default_context()
    with tempfile.TemporaryDirectory() as scratch:
        def path(section: dict[str, Any], key: str) -> str:
            if f"{key}-data" in section:
                target = Path(scratch) / key
                target.write_bytes(base64.b64decode(section[f"{key}-data"]))
                return str(target)
            return str(section[key])

        tls.load_verify_locations(path(cluster, "certificate-authority"))
        tls.load_cert_chain(path(user, "client-certificate"), path(user, "client-key"))
    return cluster["server"].rstrip("/"), tls
