"""The dashboard's HTTP server over a real Cache (no cluster): pages from the stores, the run page's
extra reads through a fake ``kube``, the refused actions, the loopback-only Host check."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes.client.exceptions import ApiException

from kubetasks import kube
from kubetasks.controller.cache import Cache
from kubetasks.core.naming import attempt_log_name
from kubetasks.dashboard import server

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
TASK = {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task",
        "metadata": {"name": "resize", "namespace": "ns", "uid": "task-uid", "resourceVersion": "1",
                     "creationTimestamp": "2026-11-29T09:00:00Z"},
        "spec": {"image": "img:1", "schedule": "0 * * * *", "machine": {"preset": "micro"}}}


def taskrun(name: str, phase: str, minute: int, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": str(10 + minute),
                         "creationTimestamp": f"2026-11-29T11:{minute:02d}:00Z"},
            "spec": {"taskRef": "resize", "tags": ["nightly"], "payload": {"url": "https://example.com/a.png"}},
            "status": {"phase": phase, "attempt": 1, "startTime": f"2026-11-29T11:{minute:02d}:01Z", **status}}


FINISHED_RUN = taskrun("done", "Failed", 1, completionTime="2026-11-29T11:01:31Z", result=None,
                       error={"type": "ValueError", "message": "bad image\nsecond line"},
                       attempts=[{"attempt": 1, "jobName": "done-1", "startTime": "2026-11-29T11:01:01Z",
                                  "completionTime": "2026-11-29T11:01:31Z", "reason": "Error", "exitCode": 1}])
LIVE_RUN = taskrun("live", "Running", 2, attempts=[{"attempt": 1, "jobName": "live-1",
                                                    "startTime": "2026-11-29T11:02:01Z"}])


class FakeKube:
    """What the server reads beyond the stores, as kubetasks.kube answers it."""

    TASKRUNS, CONFIGMAPS, EVENTS = kube.TASKRUNS, kube.CONFIGMAPS, kube.EVENTS

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.runs = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in runs}
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[str, list[dict[str, Any]]] = {}
        self.logs: dict[str, bytes | Exception] = {}
        self.events: list[dict[str, Any]] = []
        self.calls: list[tuple[Any, ...]] = []
        self.fail_get = False

    def get(self, resource: kube.Resource, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", resource.plural, name))
        if self.fail_get:
            raise ApiException(status=503, reason="Service Unavailable")
        store = self.runs if resource == kube.TASKRUNS else self.configmaps
        return store.get((namespace, name))

    def list_by_fields(self, resource: kube.Resource, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.calls.append(("events", selector))
        return self.events

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.pods.get(selector.removeprefix("job-name="), [])

    def read_log(self, namespace: str, pod: str, tail_lines: int, limit_bytes: int) -> bytes:
        self.calls.append(("log", pod, tail_lines))
        got = self.logs[pod]
        if isinstance(got, Exception):
            raise got
        return got


def filled_cache(runs: list[dict[str, Any]]) -> Cache:
    cache = Cache()
    cache.tasks.replace([cache.tasks.slim(TASK)])
    cache.runs.replace([cache.runs.slim(r) for r in runs])
    return cache


def serve(cache: Cache, api: Any, test: Callable[[TestClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(server.make_app(cache, api, clock=lambda: NOW))) as client:
            await test(client)
    asyncio.run(main())


@pytest.fixture
def api() -> FakeKube:
    fake = FakeKube([FINISHED_RUN, LIVE_RUN])
    fake.pods["live-1"] = [{"metadata": {"name": "live-1-abcde", "creationTimestamp": "2026-11-29T11:02:00Z"}}]
    fake.logs["live-1-abcde"] = b"resizing <b>a.png</b>\n"
    fake.events = [{"type": "Warning", "reason": "AttemptFailed", "message": "attempt 1 failed", "count": 1,
                    "lastTimestamp": "2026-11-29T11:01:31Z"}]
    return fake


def test_the_runs_list_and_its_json_come_from_the_store(api: FakeKube):
    async def test(client: TestClient) -> None:
        page = await client.get("/")
        html = await page.text()
        assert page.status == 200 and html.index('data-run="ns/live"') < html.index('data-run="ns/done"')
        assert 'data-live-url="/api/runs"' in html and 'id="runs-total" data-testid="runs-total">2<' in html
        got = await (await client.get("/api/runs", params={"phase": "Failed"})).json()
        assert [i["name"] for i in got["items"]] == ["done"] and got["total"] == 1 and got["next"] is None
        assert got["items"][0]["tags"] == ["nightly"]  # kept by the store for finished runs too
        assert got["items"][0]["seconds"] == 30.0 and 'data-run="ns/done"' in got["html"]
        paged = await (await client.get("/api/runs", params={"limit": "1"})).json()
        assert [i["name"] for i in paged["items"]] == ["live"] and paged["next"]
        older = await (await client.get("/api/runs", params={"limit": "1", "cursor": paged["next"]})).json()
        assert [i["name"] for i in older["items"]] == ["done"] and older["offset"] == 1
    serve(filled_cache([FINISHED_RUN, LIVE_RUN]), api, test)
    assert api.calls == []  # the list never calls the API server


def test_a_finished_runs_page_reads_the_whole_run_its_events_and_its_kept_log(api: FakeKube):
    api.configmaps[("ns", attempt_log_name("done-1"))] = {
        "metadata": {"name": attempt_log_name("done-1"), "annotations": {"kubetasks.io/log-truncated": "true"},
                     "ownerReferences": [{"uid": "uid-done", "controller": True}]},
        "data": {"log": "Traceback: bad image"}}

    async def test(client: TestClient) -> None:
        page = await client.get("/runs/ns/done")
        html = await page.text()
        assert page.status == 200
        assert "https://example.com/a.png" in html  # the payload: not in the store, read from the API
        assert "bad image\nsecond line" in html and "Traceback: bad image" in html and "truncated" in html
        assert 'data-testid="event-row"' in html and "AttemptFailed" in html
        assert "cancel-button" not in html and "250m CPU / 256Mi" in html
    serve(filled_cache([FINISHED_RUN, LIVE_RUN]), api, test)
    assert ("events", "involvedObject.uid=uid-done") in api.calls
    assert not [c for c in api.calls if c[0] == "log"]  # the kept log is enough


def test_a_running_attempts_log_comes_from_its_pod_and_a_failed_read_is_said(api: FakeKube):
    async def test(client: TestClient) -> None:
        html = await (await client.get("/runs/ns/live")).text()
        assert "resizing &lt;b&gt;a.png&lt;/b&gt;" in html and 'id="cancel-button"' in html
        raw = await client.get("/runs/ns/live/attempts/1/log")
        assert raw.status == 200 and await raw.text() == "resizing <b>a.png</b>\n"
        assert raw.content_type == "text/plain"
        api.logs["live-1-abcde"] = ApiException(status=500, reason="kubelet unreachable")
        html = await (await client.get("/runs/ns/live")).text()
        assert "not readable: 500 kubelet unreachable" in html
        assert (await client.get("/runs/ns/live/attempts/9/log")).status == 404
    serve(filled_cache([FINISHED_RUN, LIVE_RUN]), api, test)
    assert ("log", "live-1-abcde", server.LOG_TAIL_LINES) in api.calls


def test_the_gone_pod_of_a_finished_attempt_without_a_kept_log_is_said(api: FakeKube):
    async def test(client: TestClient) -> None:
        html = await (await client.get("/runs/ns/done")).text()
        assert "the attempt&#x27;s pod is gone and none was kept" in html
    serve(filled_cache([FINISHED_RUN, LIVE_RUN]), api, test)


def test_without_the_api_server_a_run_page_shows_what_the_store_holds(api: FakeKube):
    api.fail_get = True

    async def test(client: TestClient) -> None:
        page = await client.get("/runs/ns/done")
        html = await page.text()
        assert page.status == 200 and "could not read the run from the API server (503" in html
        assert 'id="run-name">done<' in html and "example.com" not in html  # the store dropped the payload
    serve(filled_cache([FINISHED_RUN, LIVE_RUN]), api, test)


def test_unknown_runs_and_tasks_are_404(api: FakeKube):
    async def test(client: TestClient) -> None:
        for path in ("/runs/ns/nope", "/tasks/ns/nope", "/tasks/other/resize"):
            page = await client.get(path)
            assert page.status == 404 and 'data-testid="not-found"' in await page.text()
    serve(filled_cache([]), api, test)


def test_task_pages_show_schedule_rate_and_runs(api: FakeKube):
    async def test(client: TestClient) -> None:
        tasks = await (await client.get("/tasks")).text()
        assert 'data-task="ns/resize"' in tasks and "0 * * * *" in tasks
        html = await (await client.get("/tasks/ns/resize")).text()
        assert html.count('data-testid="next-tick"') == 5 and "2026-11-29 13:00:00 UTC" in html
        assert 'id="success-rate" data-testid="success-rate">0%' in html and 'id="trigger-form"' in html
        assert 'data-run="ns/live"' in html
    serve(filled_cache([FINISHED_RUN, LIVE_RUN]), api, test)


def test_the_operator_never_performs_an_action(api: FakeKube):
    async def test(client: TestClient) -> None:
        for action in ("cancel", "trigger", "anything"):
            answer = await client.post(f"/actions/{action}", data={"namespace": "ns", "name": "live"},
                                       headers={"X-Kubetasks-Action": "1"})
            assert answer.status == 403
            assert await answer.json() == {"ok": False, "message": server.ACTIONS_REFUSED}
    serve(filled_cache([FINISHED_RUN, LIVE_RUN]), api, test)
    assert api.calls == []


def test_only_loopback_hosts_are_answered_and_pages_forbid_inline_script(api: FakeKube):
    async def test(client: TestClient) -> None:
        rebound = await client.get("/", headers={"Host": "evil.example:8081"})
        assert rebound.status == 403 and "localhost only" in await rebound.text()
        for host in ("localhost:8081", "127.0.0.1", "[::1]:8081"):
            assert (await client.get("/healthz", headers={"Host": host})).status == 200
        page = await client.get("/")
        assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'self': no inline
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        assert (await client.get("/nope")).headers["X-Content-Type-Options"] == "nosniff"
        js = await client.get("/static/dashboard.js")
        assert js.status == 200 and "X-Kubetasks-Action" in await js.text()
        assert (await client.get("/static/dashboard.css")).content_type == "text/css"
    serve(filled_cache([]), api, test)


def test_the_address_is_host_and_port():
    assert server.parse_address("127.0.0.1:8081") == ("127.0.0.1", 8081)
    assert server.parse_address("[::1]:9") == ("::1", 9)
    assert server.parse_address(":8081") == ("127.0.0.1", 8081)
    with pytest.raises(ValueError):
        server.parse_address("8081")


def test_start_dashboard_serves_the_stores_until_cleaned_up():
    import aiohttp

    from tests.conftest import free_port

    async def main() -> None:
        port = free_port()
        runner = await server.start_dashboard(filled_cache([LIVE_RUN]), f"127.0.0.1:{port}")
        assert runner is not None
        # The port taken, or no port at all: said, and no exception for kopf to retry startup with.
        assert await server.start_dashboard(filled_cache([]), f"127.0.0.1:{port}") is None
        assert await server.start_dashboard(filled_cache([]), "nonsense") is None
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/api/runs") as answer:
                    assert json.loads(await answer.text())["total"] == 1
        finally:
            await runner.cleanup()
    asyncio.run(main())
