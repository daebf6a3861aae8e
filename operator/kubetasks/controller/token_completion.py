"""Signed completion URLs of tokens, served (opt-in; core.token_urls has the scheme).

``POST <base>/tokens/<namespace>/<name>?run=..&expires=..&sig=..`` with the data as a JSON body (none:
null) completes the token, as ``kubetasks complete`` does: the first completion wins, and a later
one changes nothing and says so (200 both, ``completed`` true or false). A request whose signature
is not for exactly that token and expiry, signed with the run key of the run it names, is refused
(403) before anything is read; so is one for a token that run did not make; an expired one says
so (410).

On when ``KUBETASKS_TOKEN_URL_BASE`` (where the outside reaches this port: the chart's Service
behind the user's Ingress) and ``KUBETASKS_TOKEN_URL_KEY_FILE`` (the master key, from a Secret
mounted into the operator only) are both set. Its own port (``KUBETASKS_TOKEN_URL_PORT``, 8082):
unlike the grant port it is meant to be reached from outside the cluster, so nothing else is
served on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from kubetasks import kube
from kubetasks.api.taskrun import TaskRun
from kubetasks.api.waitpoint import TOKEN_DATA_LIMIT
from kubetasks.controller.metrics_server import start_site
from kubetasks.core.render import uid
from kubetasks.core.token_urls import KEY_BYTES, PREFIX, REFUSED, run_key, signature_refusal, token_refusal
from kubetasks.core.waits import COMPLETION_TRIES, completed_token, nothing_changed
from kubetasks.protocol import GRANT_TOKEN_URL_BASE, GRANT_TOKEN_URL_KEY

log = logging.getLogger(__name__)
_HEADERS = {"Cache-Control": "no-store"}


class TokenUrls:
    """The master key and the public base URL: what a run's grant gets (its run key) and what a
    request is checked against."""

    def __init__(self, master: bytes, base: str) -> None:
        if len(master) < KEY_BYTES:
            raise ValueError(f"the token URL key is {len(master)} bytes: at least {KEY_BYTES} are needed")
        self.master, self.base = master, base.rstrip("/")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TokenUrls | None:
        base, path = env.get("KUBETASKS_TOKEN_URL_BASE"), env.get("KUBETASKS_TOKEN_URL_KEY_FILE")
        if not base or not path:
            return None
        with open(path, "rb") as f:
            return cls(f.read().strip(), base)

    def grant_data(self, run: TaskRun) -> dict[str, str]:
        return {GRANT_TOKEN_URL_KEY: run_key(self.master, uid(run)).hex(), GRANT_TOKEN_URL_BASE: self.base}


class CompletionServer:
    def __init__(self, urls: TokenUrls, namespaces: Sequence[str] = ()) -> None:
        self.urls = urls
        self.namespaces = set(namespaces)  # empty: every namespace the operator watches

    def app(self) -> web.Application:
        app = web.Application(client_max_size=TOKEN_DATA_LIMIT + 1024)
        app.router.add_post(PREFIX + "{namespace}/{name}", self.complete)
        return app

    async def complete(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        query = request.rel_url.query
        run, expires, sig = (query.getall(k, []) for k in ("run", "expires", "sig"))
        run_uid = run[0] if len(run) == 1 else None
        if self.namespaces and namespace not in self.namespaces:
            return _answer(403, {"error": REFUSED})
        # The signature first: a forged request costs an HMAC, never an API request.
        refused = signature_refusal(self.urls.master, namespace, name, run_uid, expires[0] if len(expires) == 1 else None,
                                    sig[0] if len(sig) == 1 else None, time.time())
        if refused is not None:
            return _answer(refused[0], {"error": refused[1]})
        assert run_uid is not None
        try:
            waitpoint = await asyncio.to_thread(kube.get, kube.WAITPOINTS, namespace, name)
        except Exception as e:  # noqa: BLE001  (a malformed name is refused by the API server: 4xx)
            if kube.is_status(e, 400, 403, 422):
                return _answer(403, {"error": REFUSED})
            raise
        refused = token_refusal(waitpoint, run_uid)
        if refused is not None:
            return _answer(refused[0], {"error": refused[1]})
        try:
            text = await request.text()
            data = json.loads(text) if text.strip() else None
        except (ValueError, UnicodeDecodeError):
            return _answer(400, {"error": "the body is not JSON"})
        for _ in range(COMPLETION_TRIES):
            assert waitpoint is not None
            update = completed_token(waitpoint, data, datetime.now(timezone.utc))
            if update is None:
                return _answer(200, {"completed": False, "phase": (waitpoint.get("status") or {}).get("phase"),
                                     "message": nothing_changed(waitpoint)})
            meta = waitpoint["metadata"]
            try:  # at the version read (the operator may patch a token's status, not update it)
                written = await asyncio.to_thread(kube.patch_status, "waitpoints", namespace, name, update["status"],
                                                  meta.get("uid"), meta.get("resourceVersion"),
                                                  waitpoint.get("status") or {})
            except Exception as e:  # noqa: BLE001
                if not kube.is_conflict(e):
                    raise
                written = None
            if written is None:  # written meanwhile (or gone): read it again, it may have finished
                waitpoint = await asyncio.to_thread(kube.get, kube.WAITPOINTS, namespace, name)
                if token_refusal(waitpoint, run_uid) is not None:  # gone, or re-made by another run
                    return _answer(403, {"error": REFUSED})
                continue
            log.info("waitpoint %s/%s completed by its URL", namespace, name)
            return _answer(200, {"completed": True, "phase": "Completed"})
        return _answer(409, {"error": "the token kept changing while it was being completed: try again"})


def _answer(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status, headers=_HEADERS)


async def serve(urls: TokenUrls | None, env: Mapping[str, str], namespaces: Sequence[str]) -> web.AppRunner | None:
    if urls is None:
        return None
    port = int(env.get("KUBETASKS_TOKEN_URL_PORT") or "8082")
    runner = await start_site(CompletionServer(urls, namespaces).app(),
                              env.get("KUBETASKS_TOKEN_URL_BIND_ADDRESS") or "0.0.0.0", port, None, "token-urls")
    log.info("token completion URLs served on port %d as %s", port, urls.base)
    return runner
