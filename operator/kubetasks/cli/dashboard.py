"""``kubetasks dashboard``: the operator's dashboard in your browser, its actions done as you.

    kubetasks dashboard [-n OPERATOR_NAMESPACE] [--port PORT] [--no-open] [--url URL]

The dashboard server runs inside the operator pod, bound to 127.0.0.1 there and read-only: it
is reached only through ``kubectl port-forward`` (so only by who may create ``pods/portforward``
in the operator's namespace). This command finds the operator pod (the leader, when there are
several replicas), port-forwards to it with the user's kubeconfig, and serves a small proxy on
127.0.0.1 that forwards GETs to the dashboard and performs the pages' actions itself, with the
user's own credentials, never the operator's:

    POST /actions/cancel   namespace, name               merge-patch spec.cancel=true
    POST /actions/trigger  namespace, task, payload      create a TaskRun, as ``kubetasks run`` does

(form-encoded or JSON, with the header ``X-Kubetasks-Action: 1``; the contract is in
``kubetasks.dashboard.server``'s docstring). The JSON answer ``{"ok", "message", "run"}`` carries
the API server's status: a 403 tells the user what they may not do. ``--url`` skips the
port-forward and proxies to a dashboard URL directly.

The proxy is a local server that acts with the user's credentials, so it admits only the browser
it was opened for: the printed URL carries a random token, which the first request turns into a
SameSite=Strict cookie (other local users and other sites' pages have neither); requests naming
another Host (DNS rebinding), and actions from another Origin or without the header, are refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import threading
import webbrowser
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from aiohttp import web
    from rich.console import Console

OPERATOR_LABEL = "app.kubernetes.io/name=kubetasks"
DEFAULT_DASHBOARD_PORT = 8081
PORT_FORWARD_SECONDS = 30.0
COOKIE = "kubetasks_dashboard"
# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business, not the page's.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade"}
FORWARDED_REQUEST_HEADERS = ("Accept", "Accept-Encoding", "Accept-Language", "Cache-Control", "If-None-Match",
                             "If-Modified-Since", "Last-Event-ID", "Range")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("dashboard", help="open the operator's dashboard (port-forward; actions run as you)")
    p.add_argument("-n", "--operator-namespace", default="kubetasks-system", metavar="NS",
                   help="namespace of the operator (default: kubetasks-system)")
    p.add_argument("--port", type=int, default=0, help="local port of the proxy (default: any free port)")
    p.add_argument("--no-open", action="store_true", help="print the URL only; do not open a browser")
    p.add_argument("--url", metavar="URL", help="proxy to this dashboard URL instead of port-forwarding")


# ---------------------------------------------------------------- pure helpers (unit tested)

def _ready(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def pod_env(pod: Mapping[str, Any], name: str) -> str | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == name and "value" in env:
                return str(env["value"])
    return None


def dashboard_port(pod: Mapping[str, Any]) -> int:
    """The port the pod's dashboard listens on, from its ``KUBETASKS_DASHBOARD`` (host:port)."""
    from kubetasks.cli.main import CliError

    value = pod_env(pod, "KUBETASKS_DASHBOARD")
    name = (pod.get("metadata") or {}).get("name")
    if value is None:
        raise CliError(f"the operator pod {name} serves no dashboard (install with --set dashboard.enabled=true)")
    try:
        return int(value.rsplit(":", 1)[-1])
    except ValueError:
        raise CliError(f"the operator pod {name} has an unusable KUBETASKS_DASHBOARD={value!r}") from None


def lease_of(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the leader-election Lease the pod takes part in; None without election."""
    name = pod_env(pod, "KUBETASKS_LEADER_ELECTION")
    if not name:
        return None
    return pod_env(pod, "KUBETASKS_LEADER_ELECTION_NAMESPACE") or (pod.get("metadata") or {}).get("namespace", ""), name


def choose_pod(pods: list[dict[str, Any]], holder: str | None) -> dict[str, Any] | None:
    """The operator pod serving the dashboard: the Ready pod that holds the Lease (its identity is
    ``<pod>_<suffix>``), or the only Ready pod. None when no Ready pod is the leader (yet)."""
    ready = [p for p in pods if _ready(p) and not (p.get("metadata") or {}).get("deletionTimestamp")]
    if holder:
        return next((p for p in ready if holder.startswith(p["metadata"]["name"] + "_")), None)
    return ready[0] if len(ready) == 1 else None


FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


def forwarded_port(line: str) -> int | None:
    """The local port in kubectl port-forward's ``Forwarding from 127.0.0.1:PORT -> N``."""
    m = FORWARDING.search(line)
    return int(m.group(1)) if m else None


def port_forward_error(stderr: str, pod: str, namespace: str) -> str:
    """What to tell the user when kubectl port-forward failed."""
    text = " ".join(stderr.split())
    if "forbidden" in text.lower():
        return (f"you may not port-forward to the operator pod {namespace}/{pod}: the dashboard needs the "
                f"'create' verb on 'pods/portforward' (and 'get' on 'pods') in namespace {namespace} ({text})")
    return f"kubectl port-forward to {namespace}/{pod} failed: {text or 'it exited without a word'}"


def form_fields(body: bytes, content_type: str) -> dict[str, str]:
    """The fields of an action's body, form-encoded or JSON."""
    if content_type.startswith("application/json"):
        value = json.loads(body or b"{}")
        if not isinstance(value, dict):
            raise ValueError("the body is not a JSON object")
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
    return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))


# ---------------------------------------------------------------- actions, as the user

Outcome = tuple[int, dict[str, Any]]  # HTTP status, JSON body ({"ok", "message", ...})


def _failure(exc: BaseException) -> Outcome:
    from kubernetes.client.exceptions import ApiException

    from kubetasks.cli.main import CliError, format_error

    message = format_error(exc).removeprefix("error: ")
    if isinstance(exc, ApiException) and exc.status:
        return exc.status, {"ok": False, "message": message}
    return 400 if isinstance(exc, (CliError, ValueError)) else 502, {"ok": False, "message": message}


def _required(fields: Mapping[str, str], *names: str) -> list[str]:
    from kubetasks.cli.main import CliError

    missing = [n for n in names if not fields.get(n)]
    if missing:
        raise CliError(f"missing field(s): {', '.join(missing)}")
    return [fields[n] for n in names]


def cancel(kube: Any, fields: Mapping[str, str]) -> Outcome:
    """Requests cancellation of a run (``kubetasks cancel``): spec.cancel=true, as the user."""
    from kubetasks.cli.main import FINISHED

    try:
        namespace, name = _required(fields, "namespace", "name")
        run = kube.get_custom("taskruns", namespace, name)
        phase = (run.get("status") or {}).get("phase") or "Pending"
        if phase in FINISHED:
            return 409, {"ok": False, "message": f"taskrun {name} already finished ({phase})"}
        kube.patch_spec("taskruns", namespace, name, {"spec": {"cancel": True}})
    except Exception as e:
        return _failure(e)
    return 200, {"ok": True, "message": f"taskrun/{name} cancel requested", "run": {"namespace": namespace, "name": name}}


def trigger(kube: Any, fields: Mapping[str, str]) -> Outcome:
    """Creates a TaskRun of a Task with a JSON payload (``kubetasks run``), as the user."""
    from kubetasks.cli.main import new_taskrun, parse_payload

    try:
        namespace, task_name = _required(fields, "namespace", "task")
        payload = parse_payload(fields.get("payload") or None)
        task = kube.get_custom("tasks", namespace, task_name)
        created = kube.create_custom("taskruns", namespace, new_taskrun(task, payload))
    except Exception as e:
        return _failure(e)
    name = created["metadata"]["name"]
    return 201, {"ok": True, "message": f"taskrun/{name} created", "run": {"namespace": namespace, "name": name}}


ACTIONS: dict[str, Callable[[Any, Mapping[str, str]], Outcome]] = {"cancel": cancel, "trigger": trigger}


# ---------------------------------------------------------------- the local proxy

def make_app(upstream: str, token: str, kube: Any = None) -> web.Application:
    """The proxy: GETs go to ``upstream`` (the dashboard), ``POST /actions/*`` are done here with
    ``kube`` (kubetasks.kube: the user's kubeconfig). Only requests with the token are served."""
    import aiohttp
    from aiohttp import web

    if kube is None:
        from kubetasks import kube
    upstream = upstream.rstrip("/")
    SESSION = web.AppKey("session", aiohttp.ClientSession)

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        own = {f"127.0.0.1:{port}", f"localhost:{port}"}
        if request.host not in own:  # a rebound DNS name pointing at 127.0.0.1
            return web.Response(status=403, text="wrong Host\n")
        cookie = request.cookies.get(COOKIE)
        given = request.query.get("token")
        if not (secrets.compare_digest(cookie or "", token) or secrets.compare_digest(given or "", token)):
            return web.Response(status=401, text="open the URL that `kubetasks dashboard` printed (it has the token)\n")
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            if origin and origin.split("://", 1)[-1] not in own:
                return web.Response(status=403, text="cross-origin request refused\n")
        response = await handler(request)
        if not response.prepared:
            remember(request, response)
        return response

    def remember(request: web.Request, response: web.StreamResponse) -> None:
        if "token" in request.query:  # the browser keeps the token: the pages' own requests carry no query
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")

    async def action(request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Kubetasks-Action") != "1":  # a cross-site form cannot set it: no CSRF
            return web.json_response({"ok": False, "message": "actions need the header X-Kubetasks-Action: 1"},
                                     status=403)
        do = ACTIONS.get(request.match_info["action"])
        if do is None:
            return web.json_response({"ok": False, "message": "no such action"}, status=404)
        try:
            fields = form_fields(await request.read(), request.content_type)
        except (ValueError, UnicodeDecodeError) as e:
            return web.json_response({"ok": False, "message": f"unreadable body: {e}"}, status=400)
        status, body = await asyncio.to_thread(do, kube, fields)
        return web.json_response(body, status=status)

    async def forward(request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="the dashboard is read-only; actions are POST /actions/...\n")
        session = request.app[SESSION]
        query = [(k, v) for k, v in request.query.items() if k != "token"]
        headers = {h: request.headers[h] for h in FORWARDED_REQUEST_HEADERS if h in request.headers}
        try:
            async with session.request(request.method, upstream + request.path, params=query, headers=headers,
                                       allow_redirects=False) as up:
                response = web.StreamResponse(status=up.status, reason=up.reason)
                for key, value in up.headers.items():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        response.headers.add(key, value.replace(upstream, "") if key.lower() == "location" else value)
                if up.headers.get("Content-Length") and "Content-Encoding" not in up.headers:
                    response.content_length = int(up.headers["Content-Length"])
                remember(request, response)
                await response.prepare(request)
                async for chunk in up.content.iter_any():  # streams server-sent events as they come
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            return web.Response(status=502, text=f"the dashboard at {upstream} did not answer: {e}\n")

    async def session(app: web.Application) -> Any:
        # No total timeout: the live list is a long-lived stream. A dead upstream still fails fast
        # (connect), and a silent one within sock_read.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as s:
            app[SESSION] = s
            yield

    app = web.Application(middlewares=[guard])
    app.cleanup_ctx.append(session)
    app.router.add_post("/actions/{action}", action)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


# ---------------------------------------------------------------- finding and forwarding to the operator

def find_operator_pod(kube: Any, namespace: str) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    from kubetasks.cli.main import CliError

    try:
        pods = kube.list_pods(namespace, OPERATOR_LABEL)
    except ApiException as e:
        if e.status == 403:
            raise CliError(f"you may not list pods in {namespace}: the dashboard needs 'get'/'list' on 'pods' "
                           f"and 'create' on 'pods/portforward' there") from None
        raise
    if not pods:
        raise CliError(f"no kubetasks operator pod in namespace {namespace} (label {OPERATOR_LABEL}); "
                       "name its namespace with -n")
    holder = None
    lease = lease_of(next((p for p in pods if _ready(p)), pods[0]))
    if lease and len(pods) > 1:
        found = kube.get(kube.Resource("coordination.k8s.io", "v1", "leases"), *lease)
        holder = ((found or {}).get("spec") or {}).get("holderIdentity")
    pod = choose_pod(pods, holder)
    if pod is None:
        raise CliError(f"no Ready operator pod in {namespace} holds the leader Lease yet; try again shortly")
    return pod


class PortForward:
    """``kubectl port-forward pod/POD :PORT`` on 127.0.0.1, with the user's kubeconfig."""

    def __init__(self, namespace: str, pod: str, port: int) -> None:
        self.namespace, self.pod, self.port = namespace, pod, port
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = PORT_FORWARD_SECONDS) -> int:
        """Starts kubectl and returns the local port it chose."""
        from kubetasks.cli.main import CliError

        kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
        if not kubectl:
            raise CliError("kubectl not found: put it on PATH or name it in $KUBECTL")
        self.proc = subprocess.Popen(
            [kubectl, "port-forward", "--address", "127.0.0.1", "-n", self.namespace, f"pod/{self.pod}",
             f":{self.port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        lines: queue.Queue[str | None] = queue.Queue()
        errors: list[str] = []
        proc = self.proc

        def read_out() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        def read_err() -> None:
            assert proc.stderr is not None
            errors.extend(proc.stderr)

        for target in (read_out, read_err):
            threading.Thread(target=target, daemon=True).start()
        try:
            while (line := lines.get(timeout=timeout)) is not None:
                if (port := forwarded_port(line)) is not None:
                    return port
        except queue.Empty:
            self.stop()
            raise CliError(f"kubectl port-forward to {self.namespace}/{self.pod} said nothing for {timeout:g}s") from None
        proc.wait(timeout=10)
        raise CliError(port_forward_error("".join(errors), self.pod, self.namespace))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def serve(upstream: str, port: int, token: str, announce: Callable[[str], None],
                alive: Callable[[], bool] = lambda: True) -> None:
    """Serves the proxy until SIGINT/SIGTERM (or ``alive()`` turns false)."""
    from aiohttp import web

    runner = web.AppRunner(make_app(upstream, token))
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except OSError as e:  # else main() would call it an unreachable API server
            from kubetasks.cli.main import CliError

            raise CliError(f"cannot serve on 127.0.0.1:{port}: {e.strerror or e}") from None
        bound = runner.addresses[0][1]
        announce(f"http://127.0.0.1:{bound}/?token={token}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set() and alive():
            try:
                await asyncio.wait_for(stop.wait(), timeout=1)
            except asyncio.TimeoutError:
                pass
    finally:
        await runner.cleanup()


def cmd_dashboard(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks import kube
    from kubetasks.cli.main import CliError

    forward: PortForward | None = None
    try:
        if args.url:
            upstream = args.url
        else:
            pod = find_operator_pod(kube, args.operator_namespace)
            forward = PortForward(args.operator_namespace, pod["metadata"]["name"], dashboard_port(pod))
            local = forward.start()
            upstream = f"http://127.0.0.1:{local}"
            err.print(f"forwarding to pod {args.operator_namespace}/{forward.pod} through 127.0.0.1:{local}",
                      highlight=False)

        def announce(url: str) -> None:
            out.print(f"dashboard: {url}", highlight=False, soft_wrap=True)
            if not args.no_open:
                webbrowser.open(url)

        def alive() -> bool:
            if forward and forward.proc and forward.proc.poll() is not None:
                raise CliError(f"kubectl port-forward to {forward.pod} ended (the pod went away?); run the command again")
            return True

        asyncio.run(serve(upstream, args.port, secrets.token_urlsafe(18), announce, alive))
    finally:
        if forward:
            forward.stop()
    return 0
