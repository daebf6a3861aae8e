"""Blocks retried inside an attempt: ctx.retry.on_throw and ctx.retry.fetch (runtime.retry)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from hypothesis import given, strategies as st

from kubetasks.runtime import AbortTaskRun, Context, backoff
from kubetasks.runtime.retry import Backoff, Headers, Retry, delay_from_headers, rule_for

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def retry(client: httpx.Client | None = None) -> tuple[Retry, list[float]]:
    slept: list[float] = []
    return Retry(sleep=slept.append, clock=lambda: NOW, client=client, seed="s"), slept


def flaky(failures: int, error: type[Exception] = ConnectionError):
    tries = []

    def call() -> str:
        tries.append(1)
        if len(tries) <= failures:
            raise error(f"try {len(tries)}")
        return "ok"
    return call, tries


def test_on_throw_retries_until_it_works_with_growing_delays_and_logs_each_try(caplog):
    r, slept = retry()
    call, tries = flaky(2)
    with caplog.at_level(logging.WARNING, logger="kubetasks.retry"):
        assert r.on_throw(call, max_attempts=3, min_delay=1, factor=2, max_delay=10, jitter=False) == "ok"
    assert len(tries) == 3 and slept == [1.0, 2.0]
    assert "try 1/3 failed" in caplog.text and "try 2/3 failed" in caplog.text


def test_on_throw_raises_the_last_error_when_the_tries_are_used_up():
    r, slept = retry()
    call, tries = flaky(5)
    with pytest.raises(ConnectionError, match="try 3"):
        r.on_throw(call, max_attempts=3, min_delay=0.5, jitter=False)
    assert len(tries) == 3 and len(slept) == 2


def test_on_throw_never_retries_what_retrying_cannot_fix():
    r, slept = retry()
    call, tries = flaky(5, AbortTaskRun)
    with pytest.raises(AbortTaskRun):
        r.on_throw(call)
    assert len(tries) == 1 and slept == []


def test_on_throw_refuses_a_coroutine_function_rather_than_not_retry_it():
    r, slept = retry()

    async def later() -> int:
        return 1

    with pytest.raises(TypeError, match="plain function"):
        r.on_throw(later)
    assert slept == []


def test_a_context_has_its_retry_and_locals():
    ctx = Context.local()
    assert isinstance(ctx.retry, Retry) and ctx.locals == {}


@given(st.integers(1, 10), st.floats(0.01, 100), st.floats(1, 10), st.floats(0.01, 1000), st.booleans())
def test_backoff_delays_stay_within_their_bounds_and_grow(failures, min_delay, factor, max_delay, jitter):
    if min_delay > max_delay:
        min_delay, max_delay = max_delay, min_delay
    rule = Backoff(max_attempts=10, factor=factor, min_delay=round(min_delay, 3), max_delay=round(max_delay, 3),
                   jitter=jitter)
    delay = rule.delay(failures, "seed")
    spread = 1.25 if jitter else 1.0
    assert 0 <= delay <= round(max_delay, 3) * spread + 0.001
    if not jitter:
        assert rule.delay(failures + 1) >= rule.delay(failures)


def test_headers_retry_after_seconds_and_date_and_ratelimit_reset_forms():
    assert delay_from_headers({"Retry-After": "7"}, NOW) == 7
    date = (NOW + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert delay_from_headers({"retry-after": date}, NOW) == 30
    assert delay_from_headers({"x-ratelimit-reset": str(int(NOW.timestamp()) + 12)}, NOW) == 12
    assert delay_from_headers({"x-ratelimit-reset": str(int(NOW.timestamp() * 1000) + 1500)}, NOW) == 1.5
    assert delay_from_headers({"x-ratelimit-reset": "4"}, NOW) == 4  # seconds from now
    assert delay_from_headers({"x-ratelimit-reset": str(int(NOW.timestamp()) - 99)}, NOW) == 0  # past: now
    assert delay_from_headers({"retry-after": "soon"}, NOW) is None
    assert delay_from_headers({}, NOW) is None


def test_status_rules_match_codes_ranges_and_classes():
    rules = {"429": "headers", "500-503": backoff(max_attempts=2), "5xx": backoff(max_attempts=4)}
    assert isinstance(rule_for(rules, 429), Headers)
    assert rule_for(rules, 502).max_attempts == 2 and rule_for(rules, 504).max_attempts == 4
    assert rule_for(rules, 404) is None
    with pytest.raises(ValueError):
        rule_for({"5x": "headers"}, 500)


def transport(statuses: list[int | Exception], seen: list[httpx.Request], headers: dict[str, str] | None = None):
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = statuses[min(len(seen), len(statuses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, headers=headers or {}, json={"status": answer})
    return httpx.Client(transport=httpx.MockTransport(handle))


def test_fetch_honours_retry_after_then_returns_the_success():
    seen: list[httpx.Request] = []
    r, slept = retry(transport([429, 429, 200], seen, {"Retry-After": "3"}))
    response = r.fetch("http://api.test/x", method="POST", json={"a": 1}, by_status={"429": "headers"})
    assert response.status_code == 200 and len(seen) == 3 and slept == [3.0, 3.0]
    assert seen[0].method == "POST" and seen[0].content == b'{"a":1}'


def test_fetch_backs_off_on_5xx_and_raises_when_the_tries_are_used_up():
    seen: list[httpx.Request] = []
    r, slept = retry(transport([503], seen))
    with pytest.raises(httpx.HTTPStatusError):
        r.fetch("http://api.test/x", by_status={"500-599": backoff(max_attempts=3, min_delay=1, jitter=False)})
    assert len(seen) == 3 and slept == [1.0, 2.0]


def test_fetch_returns_a_status_no_rule_names_and_retries_connection_errors():
    seen: list[httpx.Request] = []
    r, _ = retry(transport([404], seen))
    assert r.fetch("http://api.test/x").status_code == 404 and len(seen) == 1
    seen2: list[httpx.Request] = []
    r, slept = retry(transport([httpx.ConnectError("refused"), 200], seen2))
    assert r.fetch("http://api.test/x").status_code == 200 and len(seen2) == 2 and len(slept) == 1


def test_headers_without_a_readable_header_fall_back_to_backoff_and_are_capped():
    rule = Headers(max_delay="10s", fallback=Backoff(min_delay=2, jitter=False))
    assert rule.delay(1, {}, NOW) == 2
    assert rule.delay(1, {"Retry-After": "3600"}, NOW) == 10
