"""The dashboard's HTTP server over real stores (no cluster): pages from the user's informers, a
run page's reads through a fake ``kube`` (as the user: a 403 is shown, never worked around), the
token and its cookie, actions, and the cost of a live run page (logs cached, quiet nodes, its own
executor, values cut before formatting)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes.client.exceptions import ApiException

from kubetasks import kube
from kubetasks.core.naming import attempt_log_name
from kubetasks.dashboard import server
from kubetasks.dashboard.informers import Informers, Scope

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
TOKEN = "s3cret-token"
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
LIVE_RUN = taskrun("live", "Running", 2, attempts=[
    {"attempt": 1, "jobName": "live-1", "startTime": "2026-11-29T11:02:01Z", "completionTime": "2026-11-29T11:02:09Z",
     "reason": "Error"},
    {"attempt": 2, "jobName": "live-2", "startTime": "2026-11-29T11:02:11Z"}])


def pod(name: str, node: str = "node-1") -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": "2026-11-29T11:02:00Z"}, "spec": {"nodeName": node}}


class FakeKube:
    """What the server reads as the user, as kubetasks.kube answers it; the threads it is called on."""

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.runs = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in runs}
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[str, list[dict[str, Any]]] = {}
        self.logs: dict[str, bytes | Exception] = {}
        self.events: list[dict[str, Any]] = []
        self.calls: list[tuple[Any, ...]] = []
        self.threads: set[str] = set()
        self.fail_get: ApiException | None = None

    def _called(self, *call: Any) -> None:
        self.calls.append(call)
        self.threads.add(threading.current_thread().name)

    def get(self, resource: kube.Resource, namespace: str, name: str) -> dict[str, Any] | None:
        self._called("get", resource.plural, name)
        if self.fail_get is not None:
            raise self.fail_get
        store = self.runs if resource == kube.TASKRUNS else self.configmaps
        return store.get((namespace, name))

    def list_by_fields(self, resource: kube.Resource, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._called("events", selector)
        return self.events

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._called("pods", selector)
        return self.pods.get(selector.removeprefix("job-name="), [])

    def read_log(self, namespace: str, pod: str, tail_lines: int, limit_bytes: int) -> bytes:
        self._called("log", pod, tail_lines)
        got = self.logs[pod]
        if isinstance(got, Exception):
            raise got
        return got


def informers_of(runs: list[dict[str, Any]], scope: Scope = Scope(None, "all namespaces")) -> Informers:
    informers = Informers(scope)
    informers.tasks.replace([informers.tasks.slim(TASK)])
    informers.runs.replace([informers.runs.slim(r) for r in runs])
    return informers


def serve(informers: Informers, api: Any, test: Callable[[TestClient], Awaitable[None]],
          actions: Mapping[str, server.Action] | None = None, login: bool = True) -> None:
    async def main() -> None:
        app = server.make_app(informers, TOKEN, api, actions, clock=lambda: NOW)
        async with TestClient(TestServer(app)) as client:
            if login:  # the printed URL's token, once: its cookie from then on
                assert (await client.get("/", params={"token": TOKEN})).status == 200
            await test(client)
    asyncio.run(main())


@pytest.fixture
def api() -> FakeKube:
    fake = FakeKube([FINISHED_RUN, LIVE_RUN])
    fake.pods["live-1"] = [pod("live-1-abcde")]
    fake.pods["live-2"] = [pod("live-2-fghij")]
    fake.logs["live-1-abcde"] = b"the first try\n"
    fake.logs["live-2-fghij"] = b"resizing <b>a.png</b>\n"
    fake.events = [{"type": "Warning", "reason": "AttemptFailed", "message": "attempt 1 failed", "count": 1,
                    "lastTimestamp": "2026-11-29T11:01:31Z"}]
    return fake


def test_the_runs_list_and_its_json_come_from_the_informers(api: FakeKube):
    async def test(client: TestClient) -> None:
        page = await client.get("/")
        html = await page.text()
        assert page.status == 200 and html.index('data-run="ns/live"') < html.index('data-run="ns/done"')
        assert 'data-live-url="/api/runs"' in html and 'id="runs-total" data-testid="runs-total">2<' in html
        assert 'data-testid="scope">all namespaces<' in html
        got = await (await client.get("/api/runs", params={"phase": "Failed"})).json()
        assert [i["name"] for i in got["items"]] == ["done"] and got["total"] == 1 and got["next"] is None
        assert got["items"][0]["tags"] == ["nightly"] and got["items"][0]["seconds"] == 30.0
        paged = await (await client.get("/api/runs", params={"limit": "1"})).json()
        assert [i["name"] for i in paged["items"]] == ["live"] and paged["next"]
        older = await (await client.get("/api/runs", params={"limit": "1", "cursor": paged["next"]})).json()
        assert [i["name"] for i in older["items"]] == ["done"] and older["offset"] == 1
    serve(informers_of([FINISHED_RUN, LIVE_RUN]), api, test)
    assert api.calls == []  # the lists never call the API server


def test_the_informers_keep_no_payload_result_or_attempts():
    stored = informers_of([FINISHED_RUN]).runs.get(("ns", "done"))
    assert stored is not None and "payload" not in stored["spec"] and "error" not in stored["status"]
    assert "attempts" not in stored["status"] and stored["status"]["phase"] == "Failed"


def test_a_finished_runs_page_reads_the_whole_run_its_events_and_its_kept_log_once(api: FakeKube):
    api.configmaps[("ns", attempt_log_name("done-1"))] = {
        "metadata": {"name": attempt_log_name("done-1"), "annotations": {"kubetasks.io/log-truncated": "true"},
                     "ownerReferences": [{"uid": "uid-done", "controller": True}]},
        "data": {"log": "Traceback: bad image"}}

    async def test(client: TestClient) -> None:
        for _ in range(3):
            page = await client.get("/runs/ns/done")
            html = await page.text()
            assert page.status == 200
            assert "https://example.com/a.png" in html  # the payload: not in the store, read from the API
            assert "bad image\nsecond line" in html and "Traceback: bad image" in html and "truncated" in html
            assert 'data-testid="event-row"' in html and "AttemptFailed" in html
            assert "cancel-button" not in html and "250m CPU / 256Mi" in html
    serve(informers_of([FINISHED_RUN, LIVE_RUN]), api, test)
    assert ("events", "involvedObject.uid=uid-done") in api.calls
    assert api.calls.count(("get", "configmaps", attempt_log_name("done-1"))) == 1  # a finished attempt's log: once
    assert not [c for c in api.calls if c[0] == "log"]  # the kept log is enough
    assert api.threads and all(t.startswith("dashboard") for t in api.threads)  # the dashboard's own executor


def test_a_live_run_page_reads_only_the_running_attempts_log_again(api: FakeKube):
    async def test(client: TestClient) -> None:
        for _ in range(3):  # the page's script fetches it every 3 s
            html = await (await client.get("/runs/ns/live")).text()
            assert "resizing &lt;b&gt;a.png&lt;/b&gt;" in html and "the first try" in html
            assert 'id="cancel-button"' in html
        raw = await client.get("/runs/ns/live/attempts/2/log")
        assert raw.status == 200 and await raw.text() == "resizing <b>a.png</b>\n"
        assert raw.content_type == "text/plain"
        assert (await client.get("/runs/ns/live/attempts/9/log")).status == 404
    serve(informers_of([FINISHED_RUN, LIVE_RUN]), api, test)
    logs = [c[1] for c in api.calls if c[0] == "log"]
    assert logs.count("live-1-abcde") == 1 and logs.count("live-2-fghij") == 4  # 3 pages and the raw link
    assert ("log", "live-2-fghij", server.RAW_TAIL_LINES) in api.calls


def test_a_node_that_gave_no_log_is_not_asked_again(api: FakeKube):
    api.logs["live-2-fghij"] = ApiException(status=500, reason="kubelet unreachable")

    async def test(client: TestClient) -> None:
        html = await (await client.get("/runs/ns/live")).text()
        assert "not readable: 500 kubelet unreachable" in html
        html = await (await client.get("/runs/ns/live")).text()
        assert "node node-1 gave none lately" in html
    serve(informers_of([LIVE_RUN]), api, test)
    assert [c[1] for c in api.calls if c[0] == "log"].count("live-2-fghij") == 1


def test_the_gone_pod_of_a_finished_attempt_without_a_kept_log_is_said(api: FakeKube):
    async def test(client: TestClient) -> None:
        html = await (await client.get("/runs/ns/done")).text()
        assert "the attempt&#x27;s pod is gone and none was kept" in html
    serve(informers_of([FINISHED_RUN]), api, test)


def test_a_run_the_user_may_not_read_is_a_403_page_and_nothing_of_it(api: FakeKube):
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = '{"message": "taskruns.kubetasks.io \\"done\\" is forbidden: User \\"u\\" cannot get"}'
    api.fail_get = forbidden

    async def test(client: TestClient) -> None:
        for path in ("/runs/ns/done", "/runs/ns/done/attempts/1/log"):
            page = await client.get(path)
            html = await page.text()
            assert page.status == 403 and "You may not read TaskRun ns/done: 403" in html
            assert "example.com" not in html and "bad image" not in html  # the store's copy is not shown either
    serve(informers_of([FINISHED_RUN]), api, test)
    assert not [c for c in api.calls if c[0] != "get"]


def test_unknown_runs_and_tasks_are_404(api: FakeKube):
    async def test(client: TestClient) -> None:
        for path in ("/runs/ns/nope", "/tasks/ns/nope", "/tasks/other/resize"):
            page = await client.get(path)
            assert page.status == 404 and 'data-testid="not-found"' in await page.text()
    serve(informers_of([]), api, test)


def test_task_pages_show_schedule_rate_runs_and_the_scope():
    async def test(client: TestClient) -> None:
        tasks = await (await client.get("/tasks")).text()
        assert 'data-task="ns/resize"' in tasks and "0 * * * *" in tasks and "namespace ns only" in tasks
        html = await (await client.get("/tasks/ns/resize")).text()
        assert html.count('data-testid="next-tick"') == 5 and "2026-11-29 13:00:00 UTC" in html
        assert 'id="success-rate" data-testid="success-rate">0%' in html and 'id="trigger-form"' in html
        assert 'data-run="ns/live"' in html
    scope = Scope("ns", "namespace ns only (you may not list TaskRuns in all namespaces)")
    serve(informers_of([FINISHED_RUN, LIVE_RUN], scope), FakeKube([]), test)


def test_a_10000_deep_payload_renders_fast_and_cut(api: FakeKube):
    deep: Any = 1
    for _ in range(10_000):
        deep = {"a": deep}
    api.runs[("ns", "done")] = {**FINISHED_RUN, "spec": {**FINISHED_RUN["spec"], "payload": deep}}

    async def test(client: TestClient) -> None:
        started = time.perf_counter()
        page = await client.get("/runs/ns/done")
        html = await page.text()
        assert time.perf_counter() - started < 1.0
        assert page.status == 200 and "The payload is shown cut" in html and len(html) < 100_000
    serve(informers_of([FINISHED_RUN]), api, test)


# The token, the Host, the actions ------------------------------------------------------------

def test_only_the_token_or_its_cookie_is_served():
    async def test(client: TestClient) -> None:
        assert (await client.get("/")).status == 401
        assert (await client.get("/", params={"token": "wrong"})).status == 401
        assert (await client.get("/healthz")).status == 200  # shows nothing
        page = await client.get("/tasks", params={"token": TOKEN})
        assert page.status == 200
        port = client.server.port
        cookie = page.headers["Set-Cookie"]
        assert cookie.startswith(f"kubetasks-dashboard-{port}={TOKEN};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert (await client.get("/")).status == 200  # the cookie now
        assert "Set-Cookie" not in (await client.get("/")).headers
        rebound = await client.get("/", headers={"Host": "evil.example:80"})
        assert rebound.status == 403  # DNS rebinding: another name for 127.0.0.1
    serve(informers_of([]), FakeKube([]), test, login=False)


def test_actions_run_as_the_user_and_only_from_the_page():
    done: list[tuple[str, dict[str, str]]] = []

    def cancel(api: Any, fields: Mapping[str, str]) -> server.Outcome:
        done.append(("cancel", dict(fields)))
        return 200, {"ok": True, "message": "cancel requested", "run": {"namespace": "a", "name": "r"}}

    async def test(client: TestClient) -> None:
        act = {"X-Kubetasks-Action": "1"}
        answer = await client.post("/actions/cancel", data={"namespace": "a", "name": "r"}, headers=act)
        assert answer.status == 200 and (await answer.json())["ok"] is True
        answer = await client.post("/actions/cancel", json={"namespace": "a", "name": "r2"}, headers=act)
        assert answer.status == 200
        assert (await client.post("/actions/delete", data={}, headers=act)).status == 404
        assert (await client.post("/runs/ns/x", data={}, headers=act)).status == 405
        # Another site's page posting to the dashboard (CSRF): a plain form cannot set the header,
        # a script's request names its Origin. Both refused, nothing done.
        assert (await client.post("/actions/cancel", data={"namespace": "a", "name": "x"})).status == 403
        assert (await client.post("/actions/cancel", data={"namespace": "a", "name": "x"},
                                  headers={**act, "Origin": "https://evil.example"})).status == 403
        client.session.cookie_jar.clear()
        assert (await client.post("/actions/cancel", data={"namespace": "a", "name": "x"}, headers=act)).status == 401
    serve(informers_of([]), FakeKube([]), test, actions={"cancel": cancel})
    assert done == [("cancel", {"namespace": "a", "name": "r"}), ("cancel", {"namespace": "a", "name": "r2"})]


def test_pages_forbid_inline_script():
    async def test(client: TestClient) -> None:
        page = await client.get("/")
        assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'self': no inline
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        assert (await client.get("/nope")).headers["X-Content-Type-Options"] == "nosniff"
        js = await client.get("/static/dashboard.js")
        assert js.status == 200 and "X-Kubetasks-Action" in await js.text()
        assert (await client.get("/static/dashboard.css")).content_type == "text/css"
    serve(informers_of([]), FakeKube([]), test)


def test_form_fields():
    assert server.form_fields(b"namespace=a&name=r%201&payload=", "application/x-www-form-urlencoded") == \
        {"namespace": "a", "name": "r 1", "payload": ""}
    assert server.form_fields(b'{"namespace": "a", "task": "t", "payload": {"n": 1}}', "application/json") == \
        {"namespace": "a", "task": "t", "payload": '{"n": 1}'}
    with pytest.raises(ValueError):
        server.form_fields(b"[1]", "application/json")
