"""Who may read /metrics: the decision (core.metrics_access) and the server over fake reviews
(controller.metrics_server), with the reviews counted: a scrape every 15 s costs none once cached."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException

from kubetasks.controller.metrics_server import MetricsServer, reload_certificates
from kubetasks.core.metrics_access import (ALLOWED_TTL, DENIED_TTL, Verdict, VerdictCache, authenticated,
                                           authorized, bearer_token, needs_token, token_key)

PROMETHEUS = {"username": "system:serviceaccount:monitoring:prometheus", "uid": "u1",
              "groups": ["system:serviceaccounts", "system:authenticated"]}
TASK_POD = {"username": "system:serviceaccount:team:report-1-0123abcd-run", "uid": "u2", "groups": []}


def test_bearer_tokens_only():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    for header in (None, "", "Bearer", "Bearer   ", "Basic YTpi", "abc"):
        assert bearer_token(header) is None, header


def test_loopback_needs_no_token_anything_else_does():
    for address in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert not needs_token(address), address
    for address in ("0.0.0.0", "::", "10.0.0.5", "operator.example"):
        assert needs_token(address), address


def test_the_verdicts_say_who_and_what():
    assert authenticated({"authenticated": True, "user": PROMETHEUS}) is None
    unknown = authenticated({"authenticated": False, "error": "token expired"})
    assert unknown == Verdict(401, "the token is not valid: token expired")
    assert authenticated({"authenticated": True, "user": {}}).status == 401  # type: ignore[union-attr]
    assert authorized(PROMETHEUS, {"allowed": True}).allowed
    no = authorized(TASK_POD, {"allowed": False, "reason": ""})
    assert no.status == 403 and TASK_POD["username"] in no.reason and "metrics-reader" in no.reason
    assert authorized(PROMETHEUS, {"allowed": True, "denied": True}).status == 403


def test_cache_keeps_hashes_expires_and_stays_bounded():
    cache = VerdictCache(size=3)
    yes, no = Verdict(200, "ok"), Verdict(403, "no")
    cache.put("a", yes, now=0)
    cache.put("b", no, now=0)
    assert cache.get("a", now=ALLOWED_TTL - 1) == yes
    assert cache.get("b", now=DENIED_TTL - 1) == no
    assert cache.get("b", now=DENIED_TTL) is None  # a right just granted is seen soon
    assert cache.get("a", now=ALLOWED_TTL) is None
    assert "a" not in str(cache._entries) and token_key("a") not in cache._entries  # expired entries go
    for i in range(10):
        cache.put(f"t{i}", yes, now=100)
    assert len(cache) == 3 and cache.get("t9", now=100) == yes and cache.get("t0", now=100) is None


@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), st.booleans(), st.floats(0, 200)), max_size=40))
def test_cache_never_exceeds_its_size_nor_serves_an_expired_verdict(ops):
    cache = VerdictCache(size=5)
    now = 0.0
    for token, allowed, step in ops:
        now += step
        cache.put(token, Verdict(200 if allowed else 403, ""), now)
        assert len(cache) <= 5
        got = cache.get(token, now + (ALLOWED_TTL if allowed else DENIED_TTL))
        assert got is None


class Reviews:
    """The API server's reviews: tokens -> users, and who may get /metrics; counted."""

    def __init__(self) -> None:
        self.tokens = {"prom-token": PROMETHEUS, "pod-token": TASK_POD}
        self.readers = {PROMETHEUS["username"]}
        self.calls: list[str] = []
        self.fail = False

    def review_token(self, token: str) -> dict[str, Any]:
        self.calls.append("TokenReview")
        if self.fail:
            raise ApiException(status=500, reason="etcd is away")
        user = self.tokens.get(token)
        return {"authenticated": True, "user": user} if user else {"authenticated": False, "error": "invalid bearer token"}

    def review_access(self, user: dict[str, Any], verb: str, path: str) -> dict[str, Any]:
        self.calls.append("SubjectAccessReview")
        assert (verb, path) == ("get", "/metrics")
        return {"allowed": user["username"] in self.readers}


def serve(test: Callable[[TestClient, Reviews, list[float]], Awaitable[None]], secure: bool = True) -> None:
    reviews, now = Reviews(), [0.0]

    async def main() -> None:
        server = MetricsServer(secure, reviews.review_token, reviews.review_access, clock=lambda: now[0])
        async with TestClient(TestServer(server.app())) as client:
            await test(client, reviews, now)
    asyncio.run(main())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_reader_scrapes_with_two_reviews_a_minute_at_most():
    async def test(client: TestClient, reviews: Reviews, now: list[float]) -> None:
        for second in range(0, 60, 15):  # a scrape every 15 s
            now[0] = second
            response = await client.get("/metrics", headers=bearer("prom-token"))
            assert response.status == 200 and "kubetasks_api_requests_total" in await response.text()
            assert response.headers["Content-Type"].startswith("text/plain; version=")
        assert reviews.calls == ["TokenReview", "SubjectAccessReview"]
        now[0] = 61  # the verdict expired: reviewed again
        assert (await client.get("/metrics", headers=bearer("prom-token"))).status == 200
        assert len(reviews.calls) == 4
    serve(test)


def test_no_token_a_bad_token_and_a_task_pods_token_are_refused():
    async def test(client: TestClient, reviews: Reviews, now: list[float]) -> None:
        none = await client.get("/metrics")
        assert none.status == 401 and none.headers["WWW-Authenticate"].startswith("Bearer")
        assert not reviews.calls  # no token: nothing to ask
        bad = await client.get("/metrics", headers=bearer("forged"))
        assert bad.status == 401 and "invalid bearer token" in await bad.text()
        pod = await client.get("/metrics", headers=bearer("pod-token"))
        text = await pod.text()
        assert pod.status == 403 and TASK_POD["username"] in text and "kubetasks_" not in text
        assert (await client.get("/metrics", headers=bearer("pod-token"))).status == 403
        assert reviews.calls == ["TokenReview", "TokenReview", "SubjectAccessReview"]  # the refusals cached too
        reviews.readers.add(TASK_POD["username"])  # granted: seen once the refusal expires
        now[0] = DENIED_TTL
        assert (await client.get("/metrics", headers=bearer("pod-token"))).status == 200
        assert (await client.get("/other", headers=bearer("prom-token"))).status == 404
    serve(test)


def test_an_api_server_that_cannot_review_is_not_remembered():
    async def test(client: TestClient, reviews: Reviews, now: list[float]) -> None:
        reviews.fail = True
        assert (await client.get("/metrics", headers=bearer("prom-token"))).status == 503
        reviews.fail = False
        assert (await client.get("/metrics", headers=bearer("prom-token"))).status == 200
    serve(test)


def test_on_loopback_no_token_is_asked():
    async def test(client: TestClient, reviews: Reviews, now: list[float]) -> None:
        assert (await client.get("/metrics")).status == 200
        assert not reviews.calls
    serve(test, secure=False)


def test_a_renewed_certificate_is_loaded_once_and_a_half_written_one_again(tmp_path):
    loaded: list[str] = []
    broken = [False]

    class Context:
        def load_cert_chain(self, cert: str, key: str) -> None:
            if broken[0]:
                raise ssl.SSLError("key values mismatch")
            loaded.append(open(cert).read())

    (tmp_path / "tls.crt").write_text("one")
    (tmp_path / "tls.key").write_text("k1")

    async def main() -> None:
        task = asyncio.create_task(reload_certificates(Context(), str(tmp_path), every=0.01))
        await asyncio.sleep(0.05)
        assert loaded == []  # unchanged: not loaded again
        broken[0] = True
        (tmp_path / "tls.crt").write_text("two")
        os.utime(tmp_path / "tls.crt", (1, 1))  # a new stamp whatever the clock's resolution
        await asyncio.sleep(0.05)
        assert loaded == []
        broken[0] = False
        await asyncio.sleep(0.05)
        assert loaded == ["two"]  # tried until it loads, then once
        task.cancel()
    asyncio.run(main())
