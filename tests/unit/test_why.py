"""Why a run waits: who may ask (core.why, and the operator's /why over fake reviews), how the
CLI reaches the operator (operator_client), and the answer in words (core.why.summary, cli.why)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from aiohttp.test_utils import TestClient, TestServer

from kubetasks import operator_client
from kubetasks.cli.why import render_why
from kubetasks.controller.metrics_server import MetricsServer
from kubetasks.core.metrics_access import DENIED_TTL
from kubetasks.core.why import TOKEN_HEADER, access_key, caller_token, duration_text, run_access, summary

ALICE = {"username": "alice", "uid": "u1", "groups": ["team-a"]}
BOB = {"username": "bob", "uid": "u2", "groups": ["team-b"]}
NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=timezone.utc)

ANSWER = {"run": "q-7", "namespace": "team-a", "waiting": True, "domain": "team-a/task/serial",
          "waitingFor": {"reason": "TaskLimit", "limit": "Task/serial"}, "etaSeconds": 38.5,
          "limits": [{"limit": "Task/serial", "reason": "TaskLimit", "waiting": 5, "position": 4, "capacity": 1,
                      "used": 1, "servicePerSecond": 0.125, "holders": [{"run": "q-3", "uid": "u-3"}],
                      "etaSeconds": 38.5},
                     {"limit": "Throttle/serial", "reason": "Throttled", "waiting": 5, "position": 4,
                      "startsPerPeriod": 5, "periodSeconds": 10.0, "room": 0,
                      "nextStartAt": "2026-12-05T12:00:03+00:00", "etaSeconds": 9.0}]}


def run(phase: str = "Queued", **status: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "team-a", "name": "q-7", "uid": "u-7"}, "spec": {"taskRef": "serial"},
            "status": {"phase": phase, **status}}


# ---------------------------------------------------------------- who may ask

def test_the_callers_token_is_its_authorization_or_the_one_the_service_proxy_let_through():
    assert caller_token("Bearer a", None) == "a"
    assert caller_token(None, "Bearer b") == "b"
    assert caller_token("Basic eDp5", "Bearer b") == "b"
    assert caller_token(None, None) is None and caller_token("Bearer ", "b") is None


def test_the_verdict_names_the_user_the_run_and_its_namespace():
    assert run_access(ALICE, {"allowed": True}, "team-a", "q-7").allowed
    no = run_access(BOB, {"allowed": False, "reason": "RBAC: no rule"}, "team-a", "q-7")
    assert no.status == 403 and "bob" in no.reason and "'team-a'" in no.reason and "'q-7'" in no.reason
    assert "RBAC: no rule" in no.reason
    assert run_access(ALICE, {"allowed": True, "denied": True}, "team-a", "q-7").status == 403


def test_verdicts_are_kept_per_token_and_run():
    assert access_key("t", "team-a", "q-7") != access_key("t", "team-a", "q-8")
    assert access_key("t", "team-a", "q-7") != access_key("t", "team-b", "q-7")


class Reviews:
    """The API server: tokens -> users; who may get which TaskRun (namespace, name); counted."""

    def __init__(self) -> None:
        self.tokens = {"alice-token": ALICE, "bob-token": BOB}
        self.grants = {("alice", "team-a")}  # get taskruns in the namespace
        self.calls: list[tuple[str, ...]] = []

    def review_token(self, token: str) -> dict[str, Any]:
        self.calls.append(("TokenReview",))
        user = self.tokens.get(token)
        return {"authenticated": True, "user": user} if user else {"authenticated": False, "error": "invalid"}

    def review_access(self, user: dict[str, Any], verb: str, path: str) -> dict[str, Any]:
        raise AssertionError("/why never asks about /metrics")

    def review_run(self, user: dict[str, Any], verb: str, namespace: str, name: str) -> dict[str, Any]:
        assert verb == "get"
        self.calls.append(("SubjectAccessReview", namespace, name))
        return {"allowed": (user["username"], namespace) in self.grants}


def serve(test: Callable[[TestClient, Reviews, list[float], list[tuple[str, str]]], Awaitable[None]]) -> None:
    reviews, now, explained = Reviews(), [0.0], []
    runs = {("team-a", "q-7"): ANSWER, ("team-b", "other"): {**ANSWER, "namespace": "team-b"}}

    def explain(namespace: str, name: str) -> dict[str, Any] | None:
        explained.append((namespace, name))
        return runs.get((namespace, name))

    async def main() -> None:
        server = MetricsServer(True, reviews.review_token, reviews.review_access, clock=lambda: now[0],
                               explain=explain, review_run=reviews.review_run)
        async with TestClient(TestServer(server.app())) as client:
            await test(client, reviews, now, explained)
    asyncio.run(main())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_user_who_may_get_the_run_is_told_and_asks_once_a_minute():
    async def test(client: TestClient, reviews: Reviews, now: list[float], explained: list) -> None:
        for _ in range(3):
            response = await client.get("/why/team-a/q-7", headers=bearer("alice-token"))
            assert response.status == 200 and (await response.json())["limits"][0]["position"] == 4
            assert response.headers["Cache-Control"] == "no-store"
        assert reviews.calls == [("TokenReview",), ("SubjectAccessReview", "team-a", "q-7")]
        # Through the API server's service proxy, which drops Authorization:
        proxied = await client.get("/why/team-a/q-7", headers={TOKEN_HEADER: "Bearer alice-token"})
        assert proxied.status == 200
    serve(test)


def test_others_are_refused_before_the_operator_looks_and_never_see_another_namespace():
    async def test(client: TestClient, reviews: Reviews, now: list[float], explained: list) -> None:
        none = await client.get("/why/team-a/q-7")
        assert none.status == 401 and none.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await client.get("/why/team-a/q-7", headers=bearer("forged"))).status == 401
        bob = await client.get("/why/team-a/q-7", headers=bearer("bob-token"))
        assert bob.status == 403 and "bob" in await bob.text() and "Task/serial" not in await bob.text()
        # Alice may read team-a's runs, not team-b's: refused whether the run exists or not.
        assert (await client.get("/why/team-b/other", headers=bearer("alice-token"))).status == 403
        assert (await client.get("/why/team-b/nothing", headers=bearer("alice-token"))).status == 403
        assert explained == []  # no refused request reached the flow control
        missing = await client.get("/why/team-a/nothing", headers=bearer("alice-token"))
        assert missing.status == 404 and "team-a/nothing" in (await missing.json())["message"]
        reviews.grants.add(("bob", "team-a"))  # granted: seen once the refusal expires
        now[0] = DENIED_TTL
        assert (await client.get("/why/team-a/q-7", headers=bearer("bob-token"))).status == 200
    serve(test)


def test_an_operator_without_explain_serves_no_why():
    async def main() -> None:
        reviews = Reviews()
        server = MetricsServer(True, reviews.review_token, reviews.review_access)
        async with TestClient(TestServer(server.app())) as client:
            assert (await client.get("/why/team-a/q-7", headers=bearer("alice-token"))).status == 404
    asyncio.run(main())


# ---------------------------------------------------------------- reaching the operator

def test_the_operator_service_is_namespace_name_and_port():
    assert operator_client.service_of("kubetasks-system/kubetasks-metrics") == \
        ("kubetasks-system", "https:kubetasks-metrics:metrics")
    assert operator_client.service_of("ops/kt-metrics:9090") == ("ops", "https:kt-metrics:9090")
    for bad in ("kubetasks-metrics", "/x", "ns/"):
        with pytest.raises(ValueError):
            operator_client.service_of(bad)


def test_no_bearer_token_no_live_answer(monkeypatch):
    from kubetasks.runtime import kube as runtime_kube

    monkeypatch.setattr(runtime_kube, "api_client", lambda: object())
    monkeypatch.setattr(runtime_kube, "bearer_token", lambda client: None)
    answer = operator_client.ask_why("team-a", "q-7", env={})
    assert answer.body is None and "bearer token" in (answer.problem or "")


def test_an_operator_that_is_not_there_is_a_problem_not_an_error(monkeypatch):
    from kubetasks.runtime import kube as runtime_kube

    monkeypatch.setattr(runtime_kube, "api_client", lambda: object())
    monkeypatch.setattr(runtime_kube, "bearer_token", lambda client: "t")
    answer = operator_client.ask_why("team-a", "q-7", url="http://127.0.0.1:1", env={})
    assert answer.body is None and "could not reach the operator at http://127.0.0.1:1" in (answer.problem or "")


class ProxyClient:
    """The official client's two calls the service proxy path makes, answering ``status`` and ``body``."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body, self.sent = status, body, []

    def param_serialize(self, method: str, path: str, header_params: dict[str, str], auth_settings: list[str]) -> tuple:
        return method, "https://api" + path, {"Authorization": "Bearer t", **header_params}, None, None

    def call_api(self, method: str, url: str, headers: dict[str, str], body: Any, _request_timeout: Any) -> Any:
        self.sent.append((method, url, headers))
        return type("R", (), {"status": self.status, "response": io.BytesIO(self.body)})()


def test_through_the_service_proxy_the_token_travels_in_its_own_header(monkeypatch):
    from kubetasks.runtime import kube as runtime_kube

    client = ProxyClient(200, b'{"waiting": false, "limits": []}')
    monkeypatch.setattr(runtime_kube, "api_client", lambda: client)
    monkeypatch.setattr(runtime_kube, "bearer_token", lambda c: "t")
    answer = operator_client.ask_why("team a", "q-7", env={operator_client.SERVICE_ENV: "ops/kt-metrics"})
    assert answer.body == {"waiting": False, "limits": []}
    (method, url, headers), = client.sent
    assert (method, url) == ("GET", "https://api/api/v1/namespaces/ops/services/https:kt-metrics:metrics/proxy"
                                    "/why/team%20a/q-7")
    assert headers[TOKEN_HEADER] == "Bearer t"

    refused = ProxyClient(403, b'{"message": "services \\"x\\" is forbidden"}')
    monkeypatch.setattr(runtime_kube, "api_client", lambda: refused)
    answer = operator_client.ask_why("team-a", "q-7", env={})
    assert answer.body is None and "answered 403" in (answer.problem or "") and "forbidden" in (answer.problem or "")


# ---------------------------------------------------------------- the answer in words

def test_durations_read_as_people_say_them():
    assert [duration_text(s) for s in (None, 0.4, 45, 190, 7500)] == ["unknown", "0s", "45s", "3m10s", "2h05m"]


def test_the_live_answer_gives_reason_position_holders_window_and_eta():
    why = summary(run(waitingFor={"reason": "TaskLimit", "limit": "Task/serial"}), ANSWER, None, NOW)
    assert why.live and why.headline == "waiting for Task/serial (TaskLimit); starts in about 38s"
    slot, throttle = why.limits
    assert (slot.position, slot.holders, slot.rate, slot.eta) == ("4 of 5", "1/1: q-3", "7.5/min", "38s")
    assert throttle.holders == "5 per 10s (0 now)" and throttle.window == "2026-12-05T12:00:03+00:00 (in 3s)"


def test_without_the_operator_the_status_is_shown_and_says_so():
    status = run(waitingFor={"reason": "TaskLimit", "limit": "Task/serial"},
                 conditions=[{"type": "Succeeded", "status": "Unknown", "reason": "Queued",
                              "message": "waiting for a slot of Task/serial: 1 of 1 held (by q-3)"}])
    why = summary(status, None, "could not reach the operator", NOW)
    assert not why.live and why.headline.startswith("TaskLimit (Task/serial): waiting for a slot")
    assert why.note == "the live answer was not available: could not reach the operator"


def test_a_run_not_waiting_for_a_limit_says_so():
    why = summary(run("Running"), {"waiting": False, "limits": []}, None, NOW)
    assert why.headline == "not waiting for a slot (Running)" and "no concurrency limit" in (why.note or "")
    no_eta = summary(run(), {**ANSWER, "etaSeconds": None}, None, NOW)
    assert "no ETA yet" in no_eta.headline


def test_the_cli_renders_the_table_readably_at_any_width():
    wide = render_why(run(), ANSWER, None, 140, NOW)
    assert "starts in about 38s" in wide
    assert "LIMIT" in wide and "POSITION" in wide and "SLOTS HELD" in wide and "ETA" in wide
    row = next(line for line in wide.splitlines() if line.strip().startswith("Task/serial"))
    assert "4 of 5" in row and "1/1: q-3" in row and "38s" in row
    assert "next start allowed at 2026-12-05T12:00:03+00:00 (in 3s)" in wide
    narrow = render_why(run(), ANSWER, None, 60, NOW)
    assert all(len(line) <= 60 for line in narrow.splitlines()) and "4 of 5" in narrow
    fallback = render_why(run(waitingFor={"reason": "TaskLimit", "limit": "Task/serial"}), None, "no operator", 100, NOW)
    assert "TaskLimit (Task/serial)" in fallback and "the live answer was not available: no operator" in fallback


# ---------------------------------------------------------------- the dashboard's run page

def test_a_waiting_runs_page_shows_the_live_answer_and_a_running_one_asks_nothing():
    from kubetasks.dashboard import server
    from kubetasks.operator_client import Answer
    from tests.unit.test_dashboard_server import TOKEN as PAGE_TOKEN, FakeKube, informers_of, taskrun

    queued = taskrun("q-7", "Queued", 7, attempt=0, waitingFor={"reason": "TaskLimit", "limit": "Task/serial"})
    running = taskrun("q-3", "Running", 3)
    asked: list[tuple[str, str]] = []
    answers = {"q-7": Answer(ANSWER)}

    def why(namespace: str, name: str) -> Answer:
        asked.append((namespace, name))
        return answers.get(name, Answer(None, "could not reach the operator"))

    async def main() -> None:
        app = server.make_app(informers_of([queued, running]), PAGE_TOKEN, FakeKube([queued, running]), clock=lambda: NOW,
                              why=why)
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/", params={"token": PAGE_TOKEN})).status == 200
            html = await (await client.get("/runs/ns/q-7")).text()
            assert 'id="why"' in html and 'data-live="true"' in html
            assert "waiting for Task/serial (TaskLimit); starts in about 38s" in html
            assert 'data-testid="why-position">4 of 5<' in html and "1/1: q-3" in html
            assert 'data-testid="why-eta">38s<' in html
            running_page = await (await client.get("/runs/ns/q-3")).text()
            assert 'id="why"' not in running_page
            del answers["q-7"]  # the operator away: the status, and a note saying so
            html = await (await client.get("/runs/ns/q-7")).text()
            assert 'data-live="false"' in html and "the live answer was not available" in html
            assert "TaskLimit (Task/serial)" in html
    asyncio.run(main())
    assert asked == [("ns", "q-7"), ("ns", "q-7")]


# ---------------------------------------------------------------- the ETA

def test_the_eta_counts_from_the_last_release_not_from_now():
    from kubetasks.core.why import slot_eta

    assert slot_eta(2, 3, None, 0) == 0.0  # a free slot for it
    assert slot_eta(3, 0, None, 0) is None  # no rate seen yet
    assert slot_eta(3, 0, 0.125, 0) == 32.0  # 4th in line, a release every 8 s, one just now
    assert slot_eta(3, 0, 0.125, 6) == 26.0  # the holder is 6 s into its 8
    assert slot_eta(3, 0, 0.125, 20) == 24.0  # the holder is late: still 3 releases after its own


@given(st.integers(0, 50), st.integers(0, 5), st.floats(0.01, 10), st.floats(0, 1000))
def test_the_eta_is_never_negative_and_grows_with_the_line(ahead, free, rate, since):
    from kubetasks.core.why import slot_eta

    eta = slot_eta(ahead, free, rate, since)
    assert eta is not None and eta >= 0
    assert slot_eta(ahead + 1, free, rate, since) >= eta  # type: ignore[operator]
