"""The dashboard's HTTP server, run by ``kubetasks dashboard`` on the user's machine.

Security model: it reads as you. Every read (the lists and watches of Tasks and TaskRuns, a run,
its Events, its pods' logs, kept-log ConfigMaps) and every action is a request to the API server
with the user's own kubeconfig, whatever it authenticates with (a token, a client certificate, an
exec plugin): a person sees what ``kubectl get taskruns``, ``kubectl get events`` and ``kubectl
logs`` would show them, and no more. The operator serves no dashboard.

The server listens on 127.0.0.1 and admits only the browser that holds the printed URL's token:
the first request's ``?token=`` becomes a cookie named after the port (``kubetasks-dashboard-PORT``:
browsers do not scope cookies by port), HttpOnly, SameSite=Strict, Path=/. Another local user,
or another site's page, has neither. Requests naming another Host (DNS rebinding) are refused, and
actions need the page's own Origin and the header ``X-Kubetasks-Action: 1`` (no CSRF).

Pages (GET):
    ``/``                         runs, newest first; query: ``task``, ``phase``, ``tag``,
                                  ``namespace``, ``after``/``before`` (ISO times or dates, on
                                  creationTimestamp), ``limit`` (1..500, 50), ``cursor`` (paging)
    ``/api/runs``                 the same query as JSON: ``items``, ``total``, ``next`` (cursor
                                  or null), ``html`` (the table body, for the live list)
    ``/runs/<ns>/<name>``         a run: attempts timeline, steps, payload, result, error, logs,
                                  Events, waiting reason; for a waiting run, why it waits: the
                                  operator's live answer, asked as the user (``kubetasks why``)
    ``/runs/<ns>/<name>/attempts/<n>/log``  one attempt's log as text/plain
    ``/tasks``, ``/tasks/<ns>/<name>``      Tasks: schedule and next ticks, last/next run,
                                  success rate, recent durations
    ``/healthz``                  "ok" (no token needed: it shows nothing)

Actions (POST, performed as the user by the functions the CLI passes in, see ``kubetasks.cli.dashboard``):

    ``POST /actions/cancel``   form fields ``namespace``, ``name``: merge-patch the TaskRun's
                               ``spec.cancel: true``
    ``POST /actions/cancel-matching``  the runs list's filter fields (``namespace`` and ``task``
                               or ``tag`` required; ``phase``, ``after``, ``before``): the same
                               patch of every unfinished run they match (``kubetasks cancel --task``)
    ``POST /actions/trigger``  form fields ``namespace``, ``task``, ``payload`` (JSON text, may
                               be empty: no payload): create a TaskRun of that Task (as
                               ``kubetasks run`` does)
    ``POST /actions/replay``   form fields ``namespace``, ``name``, optional ``from_step``: read the
                               finished run and create its replay (as ``kubetasks replay`` does,
                               with :func:`kubetasks.core.replay.replay_taskrun`); 409 when the run
                               is not finished or completed no such step

    Requests are ``application/x-www-form-urlencoded`` (or JSON), sent by the pages' script with
    ``fetch`` and the header ``X-Kubetasks-Action: 1``. The answer is JSON ``{"ok": bool,
    "message": str, "run": {"namespace": ..., "name": ...}}`` (``run``: the run acted on or created;
    absent on failure) with the API server's status code (200/201 done; 400 bad payload JSON; 403
    forbidden, with the API server's message; 404...). The page shows ``message`` in
    ``#action-result`` (``data-ok`` "true"/"false") and, after a trigger or a replay, links the new run.

Cost: the lists come from the informers' memory (no request per page); a run's page makes one GET,
one Events list and, per attempt, log reads that :class:`LogReader` bounds; blocking reads run on the
dashboard's own bounded executor; values are cut before they are formatted (``views.clip``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import partial
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web

from kubetasks import kube
from kubetasks.core.why import summary
from kubetasks.dashboard import views
from kubetasks.dashboard.informers import Informers
from kubetasks.dashboard.logs import RAW_LIMIT_BYTES, RAW_TAIL_LINES, LogReader, why

log = logging.getLogger("kubetasks.dashboard")

MAX_LOG_ATTEMPTS = 20  # logs read for one run page (maxAttempts is at most 20)
READ_THREADS = 8  # the dashboard's blocking reads at once: a page's Events and logs, the raw log
SECURITY_HEADERS = {
    # No inline script: whatever a payload holds, it cannot run here (style attributes draw the bars).
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}
Outcome = tuple[int, dict[str, Any]]  # HTTP status, JSON body ({"ok", "message", ...})
Action = Callable[[Any, Mapping[str, str]], Outcome]
T = TypeVar("T")

INFORMERS = web.AppKey("informers", Informers)
API = web.AppKey("api", object)
LOGS = web.AppKey("logs", LogReader)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
ACTIONS = web.AppKey("actions", dict)
CLOCK = web.AppKey("clock", object)
TOKEN = web.AppKey("token", str)
WHY = web.AppKey("why", object)  # (namespace, name) -> operator_client.Answer; None: not asked
TRACE_URL = web.AppKey("trace_url", str)  # a run's trace page, {traceId} in it; "": the id alone


def cookie_name(port: int) -> str:
    """The token's cookie: named after the port, since browsers share cookies across a host's ports."""
    return f"kubetasks-dashboard-{port}"


def _now(request: web.Request) -> datetime:
    clock: Callable[[], datetime] = request.app[CLOCK]  # type: ignore[assignment]
    return clock()


async def _blocking(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the dashboard's executor (bounded: a page cannot start more reads than it has threads)."""
    return await asyncio.get_running_loop().run_in_executor(request.app[EXECUTOR], partial(fn, *args))


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _port(request: web.Request) -> int:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return int(sockname[1]) if sockname else 0


@web.middleware
async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                ) -> web.StreamResponse:
    """The printed URL's token (or its cookie), this server's own Host, and for actions its own
    Origin; the security headers on every answer."""
    port = _port(request)
    own = {f"127.0.0.1:{port}", f"localhost:{port}"}
    if request.host not in own:  # a rebound DNS name pointing at 127.0.0.1
        return web.Response(status=403, text="wrong Host: open the URL that `kubetasks dashboard` printed\n",
                            headers=SECURITY_HEADERS)
    token, name = request.app[TOKEN], cookie_name(port)
    given = request.query.get("token")
    if request.path != "/healthz" and not (secrets.compare_digest(request.cookies.get(name) or "", token)
                                           or secrets.compare_digest(given or "", token)):
        return web.Response(status=401, text="open the URL that `kubetasks dashboard` printed (it has the token)\n",
                            headers=SECURITY_HEADERS)
    if request.method not in ("GET", "HEAD"):
        origin = request.headers.get("Origin")
        if origin and origin.split("://", 1)[-1] not in own:
            return web.Response(status=403, text="cross-origin request refused\n", headers=SECURITY_HEADERS)
    try:
        response = await handler(request)
    except web.HTTPException as e:  # 404s and the like: raised, with the same headers
        e.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    if given is not None and not response.prepared:  # the browser keeps the token: the pages' links carry none
        response.set_cookie(name, token, httponly=True, samesite="Strict", path="/")
    return response


# Runs list -------------------------------------------------------------------------------------

async def _query_page(request: web.Request) -> tuple[views.RunQuery, views.RunPage]:
    query = views.parse_query(request.query)
    runs = request.app[INFORMERS].all_runs()  # a snapshot, taken on the loop: the only place the store changes
    # A pass over every run (tens of ms at 10,000, each open list every 2 s), off the event loop.
    # Bodies are replaced, never changed in place, so the snapshot's stay as they were.
    return query, await _blocking(request, views.select_runs, runs, query)


async def runs_page(request: web.Request) -> web.Response:
    informers = request.app[INFORMERS]
    query, page = await _query_page(request)
    tasks = [name for _, name in informers.tasks.keys()]
    return _html(views.runs_page(page, query, tasks, informers.namespaces(), _now(request), informers.scope.note))


async def runs_json(request: web.Request) -> web.Response:
    started = time.perf_counter()
    now = _now(request)
    _, page = await _query_page(request)
    first, last = page.offset + 1, page.offset + len(page.items)
    body = {"items": [views.run_summary(r, now) for r in page.items], "total": page.total, "offset": page.offset,
            "next": page.next, "prev": page.prev, "errors": list(page.errors),
            "shown": f"{first}–{last} of {page.total}" if page.items else f"0 of {page.total}",
            "html": views.run_rows(page.items, now)}
    body["serverMs"] = round((time.perf_counter() - started) * 1000, 2)
    return web.json_response(body)


# A run ----------------------------------------------------------------------------------------

async def _read_run(request: web.Request, namespace: str, name: str) -> dict[str, Any]:
    """The whole run as the user may read it (the store keeps no payload, result or attempts);
    a page saying why when it cannot be read."""
    api: Any = request.app[API]
    try:
        run = await _blocking(request, api.get, kube.TASKRUNS, namespace, name)
    except Exception as e:  # noqa: BLE001
        status = getattr(e, "status", None)
        if status in (401, 403):
            raise web.HTTPForbidden(text=views.not_found_page(f"You may not read TaskRun {namespace}/{name}: {why(e)}"),
                                    content_type="text/html") from None
        raise web.HTTPBadGateway(text=views.not_found_page(f"TaskRun {namespace}/{name} could not be read: {why(e)}"),
                                 content_type="text/html") from None
    if run is None:
        raise web.HTTPNotFound(text=views.not_found_page(f"No TaskRun {namespace}/{name}."), content_type="text/html")
    return run


async def run_page(request: web.Request) -> web.Response:
    ns, name = request.match_info["namespace"], request.match_info["name"]
    run = await _read_run(request, ns, name)
    api: Any = request.app[API]
    reader = request.app[LOGS]
    details = views.RunDetails(task=request.app[INFORMERS].tasks.get((ns, (run.get("spec") or {}).get("taskRef") or "")),
                               trace_url=request.app[TRACE_URL])
    uid = (run.get("metadata") or {}).get("uid")
    selector = f"involvedObject.uid={uid}" if uid else f"involvedObject.kind=TaskRun,involvedObject.name={name}"
    attempts = [a for a in ((run.get("status") or {}).get("attempts") or [])
                if isinstance(a, dict) and isinstance(a.get("attempt"), int) and a.get("jobName")][-MAX_LOG_ATTEMPTS:]

    async def events() -> None:
        try:
            details.events = await _blocking(request, api.list_by_fields, kube.EVENTS, ns, selector)
        except Exception as e:  # noqa: BLE001
            details.notes.append(f"Events not readable: {why(e)}")

    async def attempt_log(a: dict[str, Any]) -> None:
        details.logs[a["attempt"]] = await _blocking(request, reader.attempt, ns, uid or "", str(a["jobName"]),
                                                     bool(a.get("completionTime")))

    async def waits() -> None:
        ask: Any = request.app[WHY]
        status = run.get("status") or {}
        if ask is None or (views.phase_of(run) not in views.WAITING and not status.get("waitingFor")):
            return
        try:
            answer = await _blocking(request, ask, ns, name)
            details.why = summary(run, answer.body, answer.problem, _now(request))
        except Exception as e:  # noqa: BLE001
            details.why = summary(run, None, why(e), _now(request))

    await asyncio.gather(events(), waits(), *(attempt_log(a) for a in attempts))
    return _html(views.run_page(run, details, _now(request)))


async def attempt_log_text(request: web.Request) -> web.Response:
    ns, name = request.match_info["namespace"], request.match_info["name"]
    try:
        attempt = int(request.match_info["attempt"])
    except ValueError:
        raise web.HTTPNotFound(text="no such attempt") from None
    run = await _read_run(request, ns, name)
    record = next((a for a in (run.get("status") or {}).get("attempts") or []
                   if isinstance(a, dict) and a.get("attempt") == attempt and a.get("jobName")), None)
    if record is None:
        raise web.HTTPNotFound(text=f"taskrun {ns}/{name} has no attempt {attempt}")
    uid = (run.get("metadata") or {}).get("uid") or ""
    got = await _blocking(request, request.app[LOGS].read, ns, uid, str(record["jobName"]),
                          bool(record.get("completionTime")), RAW_TAIL_LINES, RAW_LIMIT_BYTES)
    return web.Response(text=got.text if got.text is not None else got.source, status=200 if got.text is not None
                        else 404, content_type="text/plain", charset="utf-8")


# Tasks ----------------------------------------------------------------------------------------

async def tasks_page(request: web.Request) -> web.Response:
    informers, now = request.app[INFORMERS], _now(request)
    rows = []
    for key in informers.tasks.keys():
        task = informers.tasks.get(key)
        if task is not None:
            rows.append((task, views.task_summary(task, informers.runs_of_task(*key), now, ticks=1)))
    return _html(views.tasks_page(rows, now, informers.scope.note))


async def task_page(request: web.Request) -> web.Response:
    informers, now = request.app[INFORMERS], _now(request)
    key = (request.match_info["namespace"], request.match_info["name"])
    task = informers.tasks.get(key)
    if task is None:
        return _html(views.not_found_page(f"No Task {key[0]}/{key[1]} (among those you may read)."), 404)
    runs = informers.runs_of_task(*key)
    return _html(views.task_page(task, runs, views.task_summary(task, runs, now), now))


# Actions, as the user -------------------------------------------------------------------------

def form_fields(body: bytes, content_type: str) -> dict[str, str]:
    """The fields of an action's body, form-encoded or JSON."""
    if content_type.startswith("application/json"):
        value = json.loads(body or b"{}")
        if not isinstance(value, dict):
            raise ValueError("the body is not a JSON object")
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
    return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))


async def action(request: web.Request) -> web.StreamResponse:
    if request.headers.get("X-Kubetasks-Action") != "1":  # a cross-site form cannot set it: no CSRF
        return web.json_response({"ok": False, "message": "actions need the header X-Kubetasks-Action: 1"},
                                 status=403)
    do: Action | None = request.app[ACTIONS].get(request.match_info["action"])
    if do is None:
        return web.json_response({"ok": False, "message": "no such action"}, status=404)
    try:
        fields = form_fields(await request.read(), request.content_type)
    except (ValueError, UnicodeDecodeError) as e:
        return web.json_response({"ok": False, "message": f"unreadable body: {e}"}, status=400)
    status, body = await _blocking(request, do, request.app[API], fields)
    return web.json_response(body, status=status)


# The rest -------------------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)  # browsers ask for one; a 404 would be noise in their consoles


def _static(name: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    data = (resources.files("kubetasks.dashboard") / "static" / name).read_bytes()

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type=content_type, charset="utf-8")
    return serve


def make_app(informers: Informers, token: str, api: Any = kube, actions: Mapping[str, Action] | None = None,
             clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
             logs: LogReader | None = None, threads: int = READ_THREADS,
             why: Callable[[str, str], Any] | None = None, trace_url: str = "") -> web.Application:
    """The dashboard over ``informers`` (the user's lists and watches); ``api``
    (:mod:`kubetasks.kube`, with the user's kubeconfig) for the reads a run's page needs beyond
    them and for ``actions``; ``why`` asks the operator why a waiting run waits
    (:func:`kubetasks.operator_client.ask_why`); ``trace_url`` links a run's trace (``{traceId}``
    replaced). Only requests with ``token`` (or its cookie) are served."""
    app = web.Application(middlewares=[guard])
    app[INFORMERS], app[API], app[CLOCK], app[TOKEN] = informers, api, clock, token
    app[ACTIONS] = dict(actions or {})
    app[WHY] = why
    app[TRACE_URL] = trace_url
    app[LOGS] = logs or LogReader(api)
    app[EXECUTOR] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dashboard")

    async def shutdown(app: web.Application) -> None:
        app[EXECUTOR].shutdown(wait=False, cancel_futures=True)
    app.on_cleanup.append(shutdown)
    app.router.add_get("/", runs_page)
    app.router.add_get("/api/runs", runs_json)
    app.router.add_get("/runs/{namespace}/{name}", run_page)
    app.router.add_get("/runs/{namespace}/{name}/attempts/{attempt}/log", attempt_log_text)
    app.router.add_get("/tasks", tasks_page)
    app.router.add_get("/tasks/{namespace}/{name}", task_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/favicon.ico", no_icon)
    app.router.add_get("/static/dashboard.css", _static("dashboard.css", "text/css"))
    app.router.add_get("/static/dashboard.js", _static("dashboard.js", "text/javascript"))
    app.router.add_post("/actions/{action}", action)
    return app


async def serve(app: web.Application, port: int, announce: Callable[[int], None],
                alive: Callable[[], bool] = lambda: True) -> None:
    """Serves ``app`` on 127.0.0.1:``port`` (0: any free port) until SIGINT/SIGTERM or ``alive()``
    turns false; ``announce(port)`` once it listens. OSError when the port cannot be had."""
    runner = web.AppRunner(app, access_log=None)  # the live list polls every 2 s
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        announce(runner.addresses[0][1])
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
