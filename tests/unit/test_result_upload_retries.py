"""A task pod's upload of its result to its presigned URL, the store down (issue 20): errors that may
pass (refused connections, 5xx, 429) are tried again with backoff for the runtime's patience, then
fail the attempt saying why; a refusal (403: an expired or foreign grant) is not tried again."""

from __future__ import annotations

import urllib.error

import pytest

from kubetasks.runtime import results
from kubetasks.runtime.results import ResultUnavailable, _with_retries


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(results.time, "monotonic", c.monotonic)
    monkeypatch.setattr(results.time, "sleep", c.sleep)
    return c


def refused() -> bytes:
    raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))


def test_a_store_down_for_a_minute_costs_a_wait_not_the_attempt(clock: Clock) -> None:
    def call() -> bytes:
        return refused() if clock.now < 60 else b"ok"
    assert _with_retries(call, "uploading the result", patience=180) == b"ok"
    assert max(clock.slept) == 10.0 and clock.now < 70  # backoff capped: back within 10 s of the store


def test_a_store_down_past_the_patience_fails_the_upload_saying_why(clock: Clock) -> None:
    with pytest.raises(ResultUnavailable, match="uploading the result: .*Connection refused"):
        _with_retries(refused, "uploading the result", patience=180)
    assert 180 <= clock.now < 191


def test_a_refused_grant_is_not_tried_again(clock: Clock) -> None:
    def forbidden() -> bytes:
        raise urllib.error.HTTPError("http://s3/x", 403, "Forbidden", None, None)  # type: ignore[arg-type]
    with pytest.raises(ResultUnavailable, match="HTTP 403"):
        _with_retries(forbidden, "uploading the result", patience=180)
    assert clock.slept == []
