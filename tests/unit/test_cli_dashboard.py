"""``kubetasks dashboard``: choosing the operator pod, reading kubectl's answers, the actions done
as the user (against a fake ``kube``), and the local proxy (against a fake dashboard)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes.client.exceptions import ApiException

from kubetasks import kube as kube_module
from kubetasks.cli import dashboard
from kubetasks.cli.main import CliError, build_parser


def pod(name: str, ready: bool = True, env: dict[str, str] | None = None, deleting: bool = False) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": "sys"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta,
            "spec": {"containers": [{"name": "operator", "env": [{"name": k, "value": v} for k, v in
                                                                 (env or {}).items()]}]},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_parsing():
    args = build_parser().parse_args(["dashboard", "-n", "ops", "--port", "8999", "--no-open"])
    assert (args.command, args.operator_namespace, args.port, args.no_open, args.url) == \
        ("dashboard", "ops", 8999, True, None)
    assert build_parser().parse_args(["dashboard"]).operator_namespace == "kubetasks-system"


def test_choose_pod_takes_the_ready_leader():
    a, b = pod("op-a"), pod("op-b")
    assert dashboard.choose_pod([a, b], "op-b_1234") is b
    assert dashboard.choose_pod([a, b], "op-a_99") is a
    # A holder name that only starts like a pod's is not that pod.
    assert dashboard.choose_pod([pod("op"), pod("op-a")], "op-a_1")["metadata"]["name"] == "op-a"
    assert dashboard.choose_pod([a, pod("op-b", ready=False)], "op-b_1") is None  # leader not Ready yet
    assert dashboard.choose_pod([a], None) is a
    assert dashboard.choose_pod([a, b], None) is None  # two candidates and no Lease: cannot tell
    assert dashboard.choose_pod([pod("old", deleting=True), a], None) is a


def test_dashboard_port_and_lease_come_from_the_pod_env():
    p = pod("op", env={"KUBETASKS_DASHBOARD": "127.0.0.1:8081", "KUBETASKS_LEADER_ELECTION": "r-kubetasks",
                       "KUBETASKS_LEADER_ELECTION_NAMESPACE": "r-system"})
    assert dashboard.dashboard_port(p) == 8081
    assert dashboard.lease_of(p) == ("r-system", "r-kubetasks")
    assert dashboard.lease_of(pod("op")) is None
    with pytest.raises(CliError, match="dashboard.enabled"):
        dashboard.dashboard_port(pod("op"))
    with pytest.raises(CliError, match="unusable"):
        dashboard.dashboard_port(pod("op", env={"KUBETASKS_DASHBOARD": "localhost:http"}))


class FakePods:
    """What find_operator_pod calls on kubetasks.kube."""

    Resource = kube_module.Resource

    def __init__(self, pods: list[dict], holder: str | None = None, status: int | None = None) -> None:
        self.pods, self.holder, self.status = pods, holder, status
        self.leases: list[tuple[str, str]] = []

    def list_pods(self, namespace: str, selector: str) -> list[dict]:
        assert selector == "app.kubernetes.io/name=kubetasks"
        if self.status:
            raise ApiException(status=self.status, reason="Forbidden")
        return self.pods

    def get(self, resource: Any, namespace: str, name: str) -> dict | None:
        assert resource.plural == "leases"
        self.leases.append((namespace, name))
        return {"spec": {"holderIdentity": self.holder}} if self.holder else None


def test_find_operator_pod_asks_the_lease_only_among_replicas():
    env = {"KUBETASKS_LEADER_ELECTION": "r-kubetasks", "KUBETASKS_LEADER_ELECTION_NAMESPACE": "sys"}
    a, b = pod("r-kubetasks-1", env=env), pod("r-kubetasks-2", env=env)
    two = FakePods([a, b], holder="r-kubetasks-2_8f1c")
    assert dashboard.find_operator_pod(two, "sys") is b and two.leases == [("sys", "r-kubetasks")]
    one = FakePods([a], holder="someone-else_1")
    assert dashboard.find_operator_pod(one, "sys") is a and not one.leases
    with pytest.raises(CliError, match="no kubetasks operator pod in namespace sys"):
        dashboard.find_operator_pod(FakePods([]), "sys")
    with pytest.raises(CliError, match="holds the leader Lease"):
        dashboard.find_operator_pod(FakePods([a, b]), "sys")
    with pytest.raises(CliError, match="may not list pods in sys"):
        dashboard.find_operator_pod(FakePods([], status=403), "sys")


def test_kubectl_port_forward_output():
    assert dashboard.forwarded_port("Forwarding from 127.0.0.1:41233 -> 8081\n") == 41233
    assert dashboard.forwarded_port("Forwarding from [::1]:41233 -> 8081") is None
    forbidden = ('error: error upgrading connection: pods "op-1" is forbidden: User "system:serviceaccount:x:y" '
                 'cannot create resource "pods/portforward" in API group "" in the namespace "sys"\n')
    message = dashboard.port_forward_error(forbidden, "op-1", "sys")
    assert "may not port-forward" in message and "'create' verb on 'pods/portforward'" in message
    assert "in namespace sys" in message and "forbidden" in message  # kubectl's own words kept
    assert "failed: boom" in dashboard.port_forward_error("boom\n", "op-1", "sys")


def test_form_fields():
    assert dashboard.form_fields(b"namespace=a&name=r%201&payload=", "application/x-www-form-urlencoded") == \
        {"namespace": "a", "name": "r 1", "payload": ""}
    assert dashboard.form_fields(b'{"namespace": "a", "task": "t", "payload": {"n": 1}}', "application/json") == \
        {"namespace": "a", "task": "t", "payload": '{"n": 1}'}
    with pytest.raises(ValueError):
        dashboard.form_fields(b"[1]", "application/json")


class FakeKube:
    """What the actions call on kubetasks.kube, with a per-verb error to raise."""

    def __init__(self, phase: str | None = "Running", fail: dict[str, ApiException] | None = None) -> None:
        self.phase, self.fail = phase, fail or {}
        self.calls: list[tuple[str, Any]] = []

    def _maybe_fail(self, verb: str) -> None:
        if verb in self.fail:
            raise self.fail[verb]

    def get_custom(self, plural: str, namespace: str, name: str) -> dict:
        self.calls.append(("get", (plural, namespace, name)))
        self._maybe_fail("get")
        if plural == "tasks":
            return {"metadata": {"name": name, "namespace": namespace}, "spec": {"id": "the-id"}}
        return {"metadata": {"name": name}, "status": {"phase": self.phase} if self.phase else {}}

    def patch_spec(self, plural: str, namespace: str, name: str, patch: dict) -> None:
        self.calls.append(("patch", (plural, namespace, name, patch)))
        self._maybe_fail("patch")

    def create_custom(self, plural: str, namespace: str, body: dict) -> dict:
        self.calls.append(("create", (plural, namespace, body)))
        self._maybe_fail("create")
        return {**body, "metadata": {**body["metadata"], "name": "t-x7k2p"}}


def forbidden(verb: str, resource: str) -> ApiException:
    e = ApiException(status=403, reason="Forbidden")
    e.body = json.dumps({"message": f'taskruns.kubetasks.io "r" is forbidden: User "u" cannot {verb} resource '
                                    f'"{resource}" in API group "kubetasks.io"'})
    return e


def test_cancel_patches_spec_cancel_as_the_user():
    kube = FakeKube()
    status, body = dashboard.cancel(kube, {"namespace": "a", "name": "r"})
    assert (status, body["ok"]) == (200, True)
    assert ("patch", ("taskruns", "a", "r", {"spec": {"cancel": True}})) in kube.calls


def test_cancel_of_a_finished_run_is_a_409_without_a_patch():
    kube = FakeKube(phase="Succeeded")
    status, body = dashboard.cancel(kube, {"namespace": "a", "name": "r"})
    assert status == 409 and "already finished (Succeeded)" in body["message"]
    assert not [c for c in kube.calls if c[0] == "patch"]


def test_cancel_forbidden_returns_the_api_servers_403_and_words():
    kube = FakeKube(fail={"patch": forbidden("patch", "taskruns")})
    status, body = dashboard.cancel(kube, {"namespace": "a", "name": "r"})
    assert (status, body["ok"]) == (403, False)
    assert 'cannot patch resource "taskruns"' in body["message"]


def test_actions_need_their_fields():
    kube = FakeKube()
    assert dashboard.cancel(kube, {"namespace": "a"})[0] == 400
    status, body = dashboard.trigger(kube, {"task": "t"})
    assert status == 400 and "namespace" in body["message"]
    assert not kube.calls


def test_trigger_creates_a_run_of_the_task_with_the_payload():
    kube = FakeKube()
    status, body = dashboard.trigger(kube, {"namespace": "a", "task": "t", "payload": '{"n": 2}'})
    assert (status, body["run"]) == (201, {"namespace": "a", "name": "t-x7k2p"})
    (created,) = [args for verb, args in kube.calls if verb == "create"]
    plural, ns, run = created
    assert (plural, ns, run["spec"]) == ("taskruns", "a", {"taskRef": "t", "payload": {"n": 2}})
    assert run["metadata"]["generateName"] == "t-" and run["metadata"]["labels"]["kubetasks.io/task"] == "the-id"


def test_trigger_with_bad_json_creates_nothing():
    kube = FakeKube()
    status, body = dashboard.trigger(kube, {"namespace": "a", "task": "t", "payload": "{oops"})
    assert status == 400 and "not valid JSON" in body["message"]
    assert not [c for c in kube.calls if c[0] == "create"]


def test_trigger_forbidden():
    status, body = dashboard.trigger(FakeKube(fail={"create": forbidden("create", "taskruns")}),
                                     {"namespace": "a", "task": "t"})
    assert status == 403 and 'cannot create resource "taskruns"' in body["message"]


# ---------------------------------------------------------------- the proxy, end to end in-process

TOKEN = "s3cret-token"


def upstream_app() -> web.Application:
    async def index(request: web.Request) -> web.Response:
        return web.Response(text=f"<h1>runs</h1> q={request.query_string} cookie={request.headers.get('Cookie')}",
                            content_type="text/html", headers={"X-Upstream": "yes"})

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(3):
            await response.write(f"data: {i}\n\n".encode())
            await asyncio.sleep(0.01)
        return response

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://{request.host}/runs?page=2")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/events", events)
    app.router.add_get("/old", moved)
    return app


def with_proxy(test: Callable[[aiohttp.ClientSession, str, FakeKube], Awaitable[None]],
               upstream: str | None = None) -> FakeKube:
    kube = FakeKube()

    async def main() -> None:
        up = TestServer(upstream_app())
        await up.start_server()
        proxy = TestServer(dashboard.make_app(upstream or str(up.make_url("")), TOKEN, kube))
        await proxy.start_server()
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                await test(session, str(proxy.make_url("")).rstrip("/"), kube)
        finally:
            await proxy.close()
            await up.close()

    asyncio.run(main())
    return kube


def test_proxy_serves_only_with_the_token_then_its_cookie():
    async def test(s: aiohttp.ClientSession, base: str, kube: FakeKube) -> None:
        async with s.get(base + "/") as r:
            assert r.status == 401
        async with s.get(base + f"/?token={TOKEN}&filter=x") as r:
            text = await r.text()
            assert r.status == 200 and r.headers["X-Upstream"] == "yes"
            assert "q=filter=x" in text  # the token stays here
            assert "cookie=None" in text  # and so does its cookie
        async with s.get(base + "/") as r:  # the cookie now
            assert r.status == 200
        async with s.get(base + "/", headers={"Host": "evil.example:80"}) as r:
            assert r.status == 403

    with_proxy(test)


def test_proxy_streams_events_and_rewrites_redirects():
    async def test(s: aiohttp.ClientSession, base: str, kube: FakeKube) -> None:
        async with s.get(base + f"/events?token={TOKEN}") as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            assert await r.text() == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
        async with s.get(base + "/old", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, "/runs?page=2")

    with_proxy(test)


def test_proxy_performs_actions_and_refuses_other_writes():
    async def test(s: aiohttp.ClientSession, base: str, kube: FakeKube) -> None:
        async with s.get(base + f"/?token={TOKEN}"):
            pass
        act = {"X-Kubetasks-Action": "1"}
        async with s.post(base + "/actions/cancel", data={"namespace": "a", "name": "r"}, headers=act) as r:
            assert r.status == 200
            assert await r.json() == {"ok": True, "message": "taskrun/r cancel requested",
                                      "run": {"namespace": "a", "name": "r"}}
        async with s.post(base + "/actions/trigger", json={"namespace": "a", "task": "t", "payload": {}},
                          headers=act) as r:
            assert r.status == 201 and (await r.json())["run"]["name"] == "t-x7k2p"
        async with s.post(base + "/actions/trigger", data={"namespace": "a", "task": "t", "payload": "{"},
                          headers=act) as r:
            assert r.status == 400 and "not valid JSON" in (await r.json())["message"]
        async with s.post(base + "/actions/delete", data={}, headers=act) as r:
            assert r.status == 404
        async with s.post(base + "/runs", data={}, headers=act) as r:
            assert r.status == 405
        # Another site's page posting into the user's proxy (CSRF): a plain form cannot set the
        # header, a script's request names its Origin. Both refused, nothing done.
        before = len(kube.calls)
        async with s.post(base + "/actions/cancel", data={"namespace": "a", "name": "r"}) as r:
            assert r.status == 403
        async with s.post(base + "/actions/cancel", data={"namespace": "a", "name": "r"},
                          headers={**act, "Origin": "https://evil.example"}) as r:
            assert r.status == 403
        assert len(kube.calls) == before

    kube = with_proxy(test)
    assert [c[0] for c in kube.calls] == ["get", "patch", "get", "create"]


def test_proxy_without_a_dashboard_says_so():
    async def test(s: aiohttp.ClientSession, base: str, kube: FakeKube) -> None:
        async with s.get(base + f"/?token={TOKEN}") as r:
            assert r.status == 502 and "did not answer" in await r.text()

    with_proxy(test, upstream="http://127.0.0.1:9")


def test_a_taken_port_is_a_clear_error(capsys):
    import socket

    from kubetasks.cli.main import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", "--url", "http://127.0.0.1:9", "--no-open", "--port", str(port)]) == 1
    assert f"error: cannot serve on 127.0.0.1:{port}: " in capsys.readouterr().err
