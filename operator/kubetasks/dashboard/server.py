"""The dashboard's HTTP server: read-only pages of the operator's stores, in the operator's process.

Security model: localhost + port-forward. The server binds to a loopback address in the
operator's pod (``KUBETASKS_DASHBOARD=127.0.0.1:8081``), so only someone whose Kubernetes
credentials allow ``pods/portforward`` on the operator's pod reaches it. It never acts with the
operator's identity: it reads (stores, and a few GETs for a run's page) and performs nothing.

Pages (GET):
    ``/``                         runs, newest first; query: ``task``, ``phase``, ``tag``,
                                  ``namespace``, ``after``/``before`` (ISO times or dates, on
                                  creationTimestamp), ``limit`` (1..500, 50), ``cursor`` (paging)
    ``/api/runs``                 the same query as JSON: ``items``, ``total``, ``next`` (cursor
                                  or null), ``html`` (the table body, for the live list)
    ``/runs/<ns>/<name>``         a run: attempts timeline, steps, payload, result, error, logs,
                                  Events, waiting reason
    ``/runs/<ns>/<name>/attempts/<n>/log``  one attempt's log as text/plain
    ``/tasks``, ``/tasks/<ns>/<name>``      Tasks: schedule and next ticks, last/next run,
                                  success rate, recent durations
    ``/healthz``                  "ok"

Actions (the contract with ``kubetasks dashboard``, the local proxy in ``kubetasks.cli.dashboard``):
the pages post them to the origin they were loaded from, i.e. the proxy on the user's machine,
which performs them with the user's own kubeconfig so the API server authorizes each as the user.

    ``POST /actions/cancel``   form fields ``namespace``, ``name``: merge-patch the TaskRun's
                               ``spec.cancel: true``
    ``POST /actions/trigger``  form fields ``namespace``, ``task``, ``payload`` (JSON text, may
                               be empty: no payload): create a TaskRun of that Task (as
                               ``kubetasks run`` does)

    Requests are ``application/x-www-form-urlencoded``, sent by the pages' script with
    ``fetch`` and the header ``X-Kubetasks-Action: 1`` (a cross-site form cannot set a custom
    header, so the proxy refuses an action without it: no CSRF through the user's browser).
    The answer is JSON ``{"ok": bool, "message": str, "run": {"namespace": ..., "name": ...}}``
    (``run``: the run acted on or created; absent on failure) with the API server's status code
    (200/201 done; 400 bad payload JSON; 403 forbidden, with the API server's message; 404...).
    The page shows ``message`` in ``#action-result`` (``data-ok`` "true"/"false") and, after a
    trigger, links the new run.

The operator's own server answers every ``POST /actions/...`` with 403 and
:data:`ACTIONS_REFUSED`: it never acts with its own identity.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from importlib import resources
from types import ModuleType
from typing import Any

from aiohttp import web

from kubetasks import kube
from kubetasks.controller.cache import Body, Cache
from kubetasks.core.logs import kept_log, last_pod
from kubetasks.core.naming import attempt_log_name
from kubetasks.dashboard import views

log = logging.getLogger("kubetasks.dashboard")

ACTIONS_REFUSED = "actions are performed by `kubetasks dashboard` with your own credentials"
# Of a pod's log, on a run's page (the raw log link reads more); the whole kept log of a finished
# attempt is shown (the operator bounds it).
LOG_TAIL_LINES, LOG_LIMIT_BYTES = 2000, 256 * 1024
RAW_TAIL_LINES, RAW_LIMIT_BYTES = 100_000, 8 * 1024 * 1024
MAX_LOG_ATTEMPTS = 20  # logs read for one run page (maxAttempts is at most 20)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SECURITY_HEADERS = {
    # No inline script: whatever a payload holds, it cannot run here (style attributes draw the bars).
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}
CACHE = web.AppKey("cache", Cache)
API = web.AppKey("api", object)
CLOCK = web.AppKey("clock", object)


def _now(request: web.Request) -> datetime:
    clock: Callable[[], datetime] = request.app[CLOCK]  # type: ignore[assignment]
    return clock()


def _all_runs(cache: Cache) -> list[Body]:
    store = cache.runs
    return [b for b in (store.get(k) for k in store.keys()) if b is not None]


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


@web.middleware
async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                ) -> web.StreamResponse:
    """Loopback Host names only (a page of another site that resolves its name to 127.0.0.1, DNS
    rebinding, cannot read through a user's port-forward), and the security headers on every answer."""
    host = request.url.host or ""
    if host not in LOOPBACK_HOSTS:
        raise web.HTTPForbidden(text=f"the dashboard answers requests for localhost only, not for {host!r}",
                                headers=SECURITY_HEADERS)
    try:
        response = await handler(request)
    except web.HTTPException as e:  # 404s and the like: raised, with the same headers
        e.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


# Runs list -------------------------------------------------------------------------------------

async def _query_page(request: web.Request) -> tuple[views.RunQuery, views.RunPage]:
    query = views.parse_query(request.query)
    runs = _all_runs(request.app[CACHE])  # a snapshot, taken on the loop: the only place the store changes
    # A pass over every run (tens of ms at 10,000, each open list every 2 s) is done off the event
    # loop, which the operator's reconcilers and informers share. Bodies are replaced, never
    # changed in place, so the snapshot's stay as they were.
    return query, await asyncio.to_thread(views.select_runs, runs, query)


async def runs_page(request: web.Request) -> web.Response:
    cache = request.app[CACHE]
    query, page = await _query_page(request)
    tasks = [name for _, name in cache.tasks.keys()]
    namespaces = {ns for ns, _ in cache.tasks.keys()} | {ns for ns, _ in cache.runs.keys()}
    return _html(views.runs_page(page, query, tasks, namespaces, _now(request)))


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

def read_attempt_log(api: Any, namespace: str, run_uid: str, job: str, finished: bool,
                     tail_lines: int = LOG_TAIL_LINES, limit_bytes: int = LOG_LIMIT_BYTES) -> views.AttemptLog:
    """An attempt's log: the one the operator kept when it finished (a ConfigMap owned by the run),
    else its pod's. Blocking: call it in a thread."""
    if finished:
        name = attempt_log_name(job)
        try:
            kept = kept_log(api.get(kube.CONFIGMAPS, namespace, name), run_uid)
        except Exception as e:  # noqa: BLE001 -- the pod may still have it
            kept = None
            log.debug("kept log %s/%s: %s", namespace, name, e)
        if kept is not None:
            return views.AttemptLog(kept.text, f"kept after the attempt ({name})", kept.truncated)
    try:
        pod = last_pod(api.list_pods(namespace, f"job-name={job}"))
    except Exception as e:  # noqa: BLE001
        return views.AttemptLog(None, f"pods of {job} not readable: {_why(e)}")
    if pod is None:
        return views.AttemptLog(None, "no log: the attempt's pod is gone" + (" and none was kept" if finished else ""))
    name = pod["metadata"]["name"]
    try:
        text = api.read_log(namespace, name, tail_lines, limit_bytes).decode("utf-8", "replace")
    except Exception as e:  # noqa: BLE001 -- a pod on a fake (kwok) node has no log to read
        return views.AttemptLog(None, f"log of pod {name} not readable: {_why(e)}")
    return views.AttemptLog(text, f"pod {name}, at most its last {tail_lines} lines")


def _why(e: Exception) -> str:
    status = getattr(e, "status", None)
    body = getattr(e, "body", None)
    message = None
    if isinstance(body, str):
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
    return f"{status} {message or getattr(e, 'reason', '') or ''}".strip() if status else str(e)[:200]


async def _read_run(request: web.Request, namespace: str, name: str) -> tuple[Body | None, list[str]]:
    """The whole run (the store drops a finished run's payload, result and error); the stored one
    when the API server cannot be reached."""
    cached = request.app[CACHE].runs.get((namespace, name))
    try:
        run = await asyncio.to_thread(request.app[API].get, kube.TASKRUNS, namespace, name)  # type: ignore[attr-defined]
    except Exception as e:  # noqa: BLE001
        return cached, [f"could not read the run from the API server ({_why(e)}): showing what the operator holds"]
    return run, []


async def run_page(request: web.Request) -> web.Response:
    ns, name = request.match_info["namespace"], request.match_info["name"]
    run, notes = await _read_run(request, ns, name)
    if run is None:
        return _html(views.not_found_page(f"No TaskRun {ns}/{name}."), 404)
    api: Any = request.app[API]
    details = views.RunDetails(task=request.app[CACHE].tasks.get((ns, (run.get("spec") or {}).get("taskRef") or "")),
                               notes=notes)
    uid = (run.get("metadata") or {}).get("uid")
    selector = f"involvedObject.uid={uid}" if uid else f"involvedObject.kind=TaskRun,involvedObject.name={name}"
    attempts = [a for a in ((run.get("status") or {}).get("attempts") or [])
                if isinstance(a, dict) and isinstance(a.get("attempt"), int) and a.get("jobName")][-MAX_LOG_ATTEMPTS:]

    async def events() -> None:
        try:
            details.events = await asyncio.to_thread(api.list_by_fields, kube.EVENTS, ns, selector)
        except Exception as e:  # noqa: BLE001
            details.notes.append(f"Events not readable: {_why(e)}")

    async def attempt_log(a: Body) -> None:
        details.logs[a["attempt"]] = await asyncio.to_thread(
            read_attempt_log, api, ns, uid or "", a["jobName"], bool(a.get("completionTime")))

    await asyncio.gather(events(), *(attempt_log(a) for a in attempts))
    return _html(views.run_page(run, details, _now(request)))


async def attempt_log_text(request: web.Request) -> web.Response:
    ns, name = request.match_info["namespace"], request.match_info["name"]
    try:
        attempt = int(request.match_info["attempt"])
    except ValueError:
        raise web.HTTPNotFound(text="no such attempt") from None
    run, _ = await _read_run(request, ns, name)
    record = next((a for a in ((run or {}).get("status") or {}).get("attempts") or []
                   if isinstance(a, dict) and a.get("attempt") == attempt and a.get("jobName")), None)
    if record is None:
        raise web.HTTPNotFound(text=f"taskrun {ns}/{name} has no attempt {attempt}")
    uid = ((run or {}).get("metadata") or {}).get("uid") or ""
    got = await asyncio.to_thread(read_attempt_log, request.app[API], ns, uid, record["jobName"],
                                  bool(record.get("completionTime")), RAW_TAIL_LINES, RAW_LIMIT_BYTES)
    return web.Response(text=got.text if got.text is not None else got.source, status=200 if got.text is not None
                        else 404, content_type="text/plain", charset="utf-8")


# Tasks ----------------------------------------------------------------------------------------

async def tasks_page(request: web.Request) -> web.Response:
    cache, now = request.app[CACHE], _now(request)
    rows = []
    for key in cache.tasks.keys():
        task = cache.tasks.get(key)
        if task is not None:
            rows.append((task, views.task_summary(task, cache.runs_of_task(*key), now, ticks=1)))
    return _html(views.tasks_page(rows, now))


async def task_page(request: web.Request) -> web.Response:
    cache, now = request.app[CACHE], _now(request)
    key = (request.match_info["namespace"], request.match_info["name"])
    task = cache.tasks.get(key)
    if task is None:
        return _html(views.not_found_page(f"No Task {key[0]}/{key[1]}."), 404)
    runs = cache.runs_of_task(*key)
    return _html(views.task_page(task, runs, views.task_summary(task, runs, now), now))


# The rest -------------------------------------------------------------------------------------

async def refuse_action(request: web.Request) -> web.Response:
    return web.json_response({"ok": False, "message": ACTIONS_REFUSED}, status=403)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)  # browsers ask for one; a 404 would be noise in their consoles


def _static(name: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    data = (resources.files("kubetasks.dashboard") / "static" / name).read_bytes()

    async def serve(request: web.Request) -> web.Response:
        response = web.Response(body=data, content_type=content_type, charset="utf-8")
        return response
    return serve


def make_app(cache: Cache, api: ModuleType | Any = kube,
             clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> web.Application:
    """The dashboard over the operator's stores; ``api`` (:mod:`kubetasks.kube`) for the few reads
    a run's page needs beyond them (the whole run, its Events, its attempts' logs)."""
    app = web.Application(middlewares=[guard])
    app[CACHE], app[API], app[CLOCK] = cache, api, clock
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
    app.router.add_post("/actions/{action}", refuse_action)
    return app


def parse_address(address: str) -> tuple[str, int]:
    """``127.0.0.1:8081``, ``[::1]:8081`` or ``:8081`` (127.0.0.1) as (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"KUBETASKS_DASHBOARD={address!r}: expected host:port, e.g. 127.0.0.1:8081")
    return host.strip("[]") or "127.0.0.1", int(port)


async def start_dashboard(cache: Cache, address: str) -> web.AppRunner | None:
    """Serves the dashboard on ``address`` in the running event loop (the operator's: the stores are
    read from it only). Stop it with ``await runner.cleanup()``. None when it cannot: the error is
    logged and the operator runs on without it (a failed startup handler would be retried by kopf,
    starting the informers again)."""
    try:
        host, port = parse_address(address)
        runner = web.AppRunner(make_app(cache), access_log=None)  # the live list polls every 2 s
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
    except (ValueError, OSError) as e:
        log.error("dashboard not started on %r: %s", address, e)
        return None
    log.info("dashboard on http://%s:%d (reach it with kubectl port-forward or kubetasks dashboard)",
             f"[{host}]" if ":" in host else host, port)
    return runner
