"""Retrying a block inside an attempt: ``ctx.retry.on_throw(fn, ...)`` and ``ctx.retry.fetch(url, ...)``.

The block is tried again in the same pod, with the delays of the Task retry policy's backoff
(core.backoff), so a flaky call does not fail the attempt. Every failed try is logged. Once the
tries are used up the last error propagates, and the attempt fails (then the Task's policy, and
catch_error, decide). Errors that retrying cannot fix (:class:`PermanentError`, AbortTaskRun) are
never retried. Sleeps go through an injectable function, so tests do not sleep.
"""

from __future__ import annotations

import email.utils
import inspect
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from kubetasks.api.common import RetryPolicy
from kubetasks.core.backoff import retry_delay
from kubetasks.runtime.durations import DurationLike, duration_string, seconds_of
from kubetasks.runtime.errors import PermanentError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("kubetasks.retry")
T = TypeVar("T")
JITTER = 0.25  # jitter=True: each delay moves by up to a quarter either way


@dataclass(frozen=True)
class Backoff:
    """How a block is retried: ``max_attempts`` tries in all, delays from ``min_delay`` growing
    by ``factor`` up to ``max_delay``, jittered (True: by up to 25%, or a fraction 0..1)."""

    max_attempts: int = 3
    factor: float = 2.0
    min_delay: DurationLike = 1
    max_delay: DurationLike = 30
    jitter: bool | float = True

    def policy(self) -> RetryPolicy:
        """As the Task's retry policy, whose backoff (core.backoff) computes the delays."""
        jitter = JITTER if self.jitter is True else float(self.jitter or 0.0)
        return RetryPolicy(max_attempts=self.max_attempts, factor=self.factor, backoff="exponential",
                           min_delay=duration_string(self.min_delay), max_delay=duration_string(self.max_delay),
                           jitter=jitter)

    def delay(self, failures: int, seed: str = "") -> float:
        """Seconds to wait after the ``failures``-th failed try (1-based)."""
        return retry_delay(self.policy(), failures, seed).total_seconds()


def backoff(max_attempts: int = 3, factor: float = 2.0, min_delay: DurationLike = 1, max_delay: DurationLike = 30,
            jitter: bool | float = True) -> Backoff:
    """A backoff rule for ``ctx.retry.fetch(by_status=...)``."""
    return Backoff(max_attempts, factor, min_delay, max_delay, jitter)


@dataclass(frozen=True)
class Headers:
    """Retry when the response's headers say (Retry-After, x-ratelimit-reset), at most
    ``max_delay`` ahead; ``fallback`` when they say nothing readable. ``"headers"`` is the default."""

    max_attempts: int = 3
    max_delay: DurationLike = "5m"
    fallback: Backoff = field(default_factory=Backoff)

    def delay(self, failures: int, headers: Mapping[str, str], now: datetime, seed: str = "") -> float:
        said = delay_from_headers(headers, now)
        if said is None:
            return self.fallback.delay(failures, seed)
        return min(said, seconds_of(self.max_delay))


Rule = Backoff | Headers
DEFAULT_BY_STATUS: Mapping[str, Rule | str] = {"429": "headers", "500-599": Backoff()}


def delay_from_headers(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds to wait that a rate-limited response asks for: ``Retry-After`` (seconds or an
    HTTP date), else ``x-ratelimit-reset`` (a Unix time in seconds or milliseconds, or seconds
    from now when small). None when neither is there and readable; never negative."""
    lowered = {k.lower(): v for k, v in headers.items()}
    after = lowered.get("retry-after", "").strip()
    if after:
        if re.fullmatch(r"\d+(\.\d+)?", after):
            return float(after)
        try:
            when = email.utils.parsedate_to_datetime(after)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
            return max((when - now).total_seconds(), 0.0)
    reset = lowered.get("x-ratelimit-reset", "").strip()
    if re.fullmatch(r"\d+(\.\d+)?", reset):
        value = float(reset)
        if value > 1e12:  # milliseconds since the epoch
            return max(value / 1000 - now.timestamp(), 0.0)
        if value > 1e9:  # seconds since the epoch
            return max(value - now.timestamp(), 0.0)
        return value
    return None


def rule_for(by_status: Mapping[str, Rule | str], status: int) -> Rule | None:
    """The rule of the first key that matches ``status``: ``"429"``, a range ``"500-599"`` or
    ``"5xx"``. A value ``"headers"`` is :class:`Headers`' default."""
    for key, rule in by_status.items():
        if _matches(key.strip(), status):
            if rule == "headers":
                return Headers()
            if isinstance(rule, (Backoff, Headers)):
                return rule
            raise TypeError(f"by_status[{key!r}] must be 'headers', backoff(...) or Headers(...), not {rule!r}")
    return None


def _matches(key: str, status: int) -> bool:
    if re.fullmatch(r"\d{3}", key):
        return status == int(key)
    if m := re.fullmatch(r"(\d{3})-(\d{3})", key):
        return int(m.group(1)) <= status <= int(m.group(2))
    if m := re.fullmatch(r"([1-5])xx", key.lower()):
        return status // 100 == int(m.group(1))
    raise ValueError(f"by_status key {key!r} is not a status, a range like '500-599' or a class like '5xx'")


class Retry:
    """``ctx.retry``: blocks retried inside the attempt."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 client: httpx.Client | None = None, seed: str | None = None) -> None:
        self._sleep = sleep
        self._clock = clock
        self._client = client  # for tests (a MockTransport); else one per fetch
        self._seed = seed if seed is not None else secrets.token_hex(8)

    def on_throw(self, fn: Callable[[], T], *, max_attempts: int = 3, factor: float = 2.0,
                 min_delay: DurationLike = 1, max_delay: DurationLike = 30, jitter: bool | float = True,
                 name: str | None = None) -> T:
        """``fn()`` (a plain function), tried up to ``max_attempts`` times while it raises; returns
        its value or raises its last error. A TypeError (a bug, not a flake) is not retried."""
        rule = Backoff(max_attempts, factor, min_delay, max_delay, jitter)
        rule.policy()  # validates the arguments before the first try
        what = name or getattr(fn, "__name__", "block")
        tries = 0
        while True:
            tries += 1
            try:
                value = fn()
                if inspect.iscoroutine(value):  # it would "succeed" at once and fail unretried later
                    value.close()
                    raise TypeError(f"retry {what}: on_throw takes a plain function, not a coroutine function")
                return value
            except (PermanentError, TypeError):
                raise
            except Exception as e:
                if tries >= rule.max_attempts:
                    log.warning("retry %s: try %d/%d failed: %s: %s; no tries left", what, tries,
                                rule.max_attempts, type(e).__name__, e)
                    raise
                delay = rule.delay(tries, f"{self._seed}:{what}")
                log.warning("retry %s: try %d/%d failed: %s: %s; trying again in %.2fs", what, tries,
                            rule.max_attempts, type(e).__name__, e, delay)
                self._sleep(delay)

    def fetch(self, url: str, *, method: str = "GET", by_status: Mapping[str, Rule | str] | None = None,
              timeout: DurationLike | None = 30, connection_errors: Backoff | None = None,
              **request: Any) -> httpx.Response:
        """An HTTP request (httpx; ``request`` are ``httpx.Client.request``'s arguments: json,
        headers, params...) retried by its status: ``by_status={"429": "headers", "500-599":
        backoff(max_attempts=5)}``. Connection errors and timeouts are retried by
        ``connection_errors`` (default: ``backoff()``). A status no rule names is returned as it
        is; a status still matched after its rule's tries raises ``httpx.HTTPStatusError``."""
        import httpx  # imported when used: a task that never fetches does not pay for it

        rules: Mapping[str, Rule | str] = by_status if by_status is not None else DEFAULT_BY_STATUS
        on_connection = connection_errors if connection_errors is not None else Backoff()
        seconds = seconds_of(timeout) if timeout is not None else None
        client = self._client or httpx.Client(timeout=seconds)
        tries = 0
        try:
            while True:
                tries += 1
                try:
                    response = client.request(method, url, timeout=seconds, **request)
                except httpx.TransportError as e:
                    if tries >= on_connection.max_attempts:
                        raise
                    delay = on_connection.delay(tries, f"{self._seed}:{url}")
                    problem = f"{type(e).__name__}: {e}"
                    limit = on_connection.max_attempts
                else:
                    rule = rule_for(rules, response.status_code)
                    if rule is None:
                        return response
                    if tries >= rule.max_attempts:
                        log.warning("retry %s %s: try %d/%d got %d; no tries left", method, url, tries,
                                    rule.max_attempts, response.status_code)
                        response.raise_for_status()
                        return response
                    delay = (rule.delay(tries, response.headers, self._clock(), f"{self._seed}:{url}")
                             if isinstance(rule, Headers) else rule.delay(tries, f"{self._seed}:{url}"))
                    problem = f"status {response.status_code}"
                    limit = rule.max_attempts
                    response.close()
                log.warning("retry %s %s: try %d/%d failed: %s; trying again in %.2fs", method, url, tries, limit,
                            problem, delay)
                self._sleep(delay)
        finally:
            if self._client is None:
                client.close()
