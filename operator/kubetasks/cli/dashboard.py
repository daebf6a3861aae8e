"""``kubetasks dashboard``: the dashboard in your browser, served on your machine and read as you.

    kubetasks dashboard [-n NS] [--context CTX] [--kubeconfig FILE] [-l SELECTOR] [--port PORT] [--no-open]

The pages are served by this command on 127.0.0.1, from its own list and watch of Tasks and
TaskRuns made with your kubeconfig (:mod:`kubetasks.dashboard`), and everything else a page shows
(a run, its Events, its logs) is read with it too: the API server authorizes every read as you,
whatever your kubeconfig authenticates with, so you see what ``kubectl get taskruns``, ``kubectl get
events`` and ``kubectl logs`` show you, and no more. It lists every namespace when you may, else the
namespace of ``-n`` (or of the kubeconfig's context), and the pages say which.

The pages' actions are done here too, as you:

    POST /actions/cancel   namespace, name               merge-patch spec.cancel=true
    POST /actions/trigger  namespace, task, payload      create a TaskRun, as ``kubetasks run`` does
    POST /actions/replay   namespace, name, [from_step]  create a replay of a finished run, as ``kubetasks replay`` does

The JSON answer ``{"ok", "message", "run"}`` carries the API server's status: a 403 tells the user
what they may not do (the contract is in :mod:`kubetasks.dashboard.server`).

The server holds your credentials' power, so it admits only the browser it was opened for: the
printed URL carries a random token, which the first request turns into a cookie named after the
port (HttpOnly, SameSite=Strict); other local users and other sites' pages have neither.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import webbrowser
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from kubetasks.dashboard.server import Outcome

SYNC_SECONDS = 120.0  # the first list of Tasks and TaskRuns, before the URL is printed


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("dashboard", help="serve the dashboard on this machine, read and acted on as you")
    p.add_argument("-l", "--selector", default="", metavar="SELECTOR",
                   help="only Tasks and TaskRuns with these labels (e.g. kubetasks.io/instance=team-b)")
    p.add_argument("--port", type=int, default=0, help="local port (default: any free port)")
    p.add_argument("--no-open", action="store_true", help="print the URL only; do not open a browser")
    p.add_argument("--operator-url", metavar="URL",
                   help="where a waiting run's page asks the operator why it waits, as you (as `kubetasks why`)")
    p.add_argument("--trace-url", metavar="TEMPLATE", default=os.environ.get("KUBETASKS_TRACE_URL", ""),
                   help="link a run's page to its trace: {traceId} is replaced, e.g. "
                        "http://jaeger:16686/trace/{traceId} (default: $KUBETASKS_TRACE_URL)")
    return p


# ---------------------------------------------------------------- actions, as the user

def _failure(exc: BaseException) -> Outcome:
    from kubernetes.client.exceptions import ApiException

    from kubetasks.cli.common import CliError, format_error

    message = format_error(exc).removeprefix("error: ")
    if isinstance(exc, ApiException) and exc.status:
        return exc.status, {"ok": False, "message": message}
    return 400 if isinstance(exc, (CliError, ValueError)) else 502, {"ok": False, "message": message}


def _required(fields: Mapping[str, str], *names: str) -> list[str]:
    from kubetasks.cli.common import CliError

    missing = [n for n in names if not fields.get(n)]
    if missing:
        raise CliError(f"missing field(s): {', '.join(missing)}")
    return [fields[n] for n in names]


def cancel(kube: Any, fields: Mapping[str, str]) -> Outcome:
    """Requests cancellation of a run (``kubetasks cancel``): spec.cancel=true, as the user."""
    from kubetasks.cli.common import FINISHED
    from kubetasks.core.run_filter import phase_of

    try:
        namespace, name = _required(fields, "namespace", "name")
        phase = phase_of(kube.get_custom("taskruns", namespace, name))
        if phase in FINISHED:
            return 409, {"ok": False, "message": f"taskrun {name} already finished ({phase})"}
        kube.patch_spec("taskruns", namespace, name, {"spec": {"cancel": True}})
    except Exception as e:
        return _failure(e)
    return 200, {"ok": True, "message": f"taskrun/{name} cancel requested", "run": {"namespace": namespace, "name": name}}


def cancel_matching(kube: Any, fields: Mapping[str, str]) -> Outcome:
    """Requests cancellation of every unfinished run of a namespace that the runs list's filter
    keeps (``kubetasks cancel --task T --tag G --phase P``), listed and patched as the user. A
    Task or a tag is required, as the CLI requires it: one click never cancels a whole namespace."""
    from kubetasks.cli.tables import cancel_candidates, cancels_requested, every_run
    from kubetasks.core.run_filter import filter_words
    from kubetasks.dashboard.views import matches, parse_query

    query = parse_query(fields)
    if query.errors:
        return 400, {"ok": False, "message": "; ".join(query.errors)}
    if not query.namespace or not (query.task or query.tag):
        return 400, {"ok": False, "message": "give a namespace, and a Task or a tag, to cancel the runs they match"}
    which = filter_words(query.task, query.tag, query.phase)
    done: list[str] = []

    try:
        for name in cancel_candidates(kube.list_custom("taskruns", query.namespace), matches(query) or every_run):
            kube.patch_spec("taskruns", query.namespace, name, {"spec": {"cancel": True}})
            done.append(name)
    except Exception as e:
        status, body = _failure(e)
        if done:  # what was asked before the error stays asked: say so
            body = {**body, "message": f"{cancels_requested(len(done))}, then: {body['message']}"}
        return status, body
    if not done:
        return 200, {"ok": True, "message": f"No unfinished runs {which} to cancel."}
    return 200, {"ok": True, "message": f"{cancels_requested(len(done))} ({which})"}


def trigger(kube: Any, fields: Mapping[str, str]) -> Outcome:
    """Creates a TaskRun of a Task with a JSON payload (``kubetasks run``), as the user."""
    from kubetasks.cli.common import new_taskrun, parse_payload

    try:
        namespace, task_name = _required(fields, "namespace", "task")
        payload = parse_payload(fields.get("payload") or None)
        task = kube.get_custom("tasks", namespace, task_name)
        created = kube.create_custom("taskruns", namespace, new_taskrun(task, payload))
    except Exception as e:
        return _failure(e)
    name = created["metadata"]["name"]
    return 201, {"ok": True, "message": f"taskrun/{name} created", "run": {"namespace": namespace, "name": name}}


def replay(kube: Any, fields: Mapping[str, str]) -> Outcome:
    """Replays a finished run (``kubetasks replay RUN [--from-step NAME]``): read and created as the user."""
    from kubetasks.cli.replay import create_replay
    from kubetasks.core.replay import NotReplayable, check_replayable, replay_taskrun

    try:
        namespace, name = _required(fields, "namespace", "name")
        from_step = fields.get("from_step") or None
        original = kube.get_custom("taskruns", namespace, name)
        check_replayable(original, from_step)
        created = create_replay(namespace, replay_taskrun(original, from_step=from_step), kube)
    except NotReplayable as e:  # the run as it is now (not finished, no such step): as cancel's 409
        return 409, {"ok": False, "message": str(e)}
    except Exception as e:
        return _failure(e)
    return 201, {"ok": True, "message": f"taskrun/{created} created: replays {name}",
                 "run": {"namespace": namespace, "name": created}}


ACTIONS: dict[str, Callable[[Any, Mapping[str, str]], Outcome]] = {
    "cancel": cancel, "cancel-matching": cancel_matching, "trigger": trigger, "replay": replay}


# ---------------------------------------------------------------- the command

def cmd_dashboard(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks import kube
    from kubetasks.cli.common import CliError, namespace_of
    from kubetasks.dashboard import server
    from kubetasks.dashboard.informers import Informers, ScopeError, allow_deep_json, choose_scope, may_list
    from kubetasks.operator_client import ask_why

    allow_deep_json()
    namespace = namespace_of(args)
    # On a thread started now, with the larger stack: the probe's one run may be nested 10,000 deep.
    with ThreadPoolExecutor(1) as probe:
        try:
            scope = probe.submit(choose_scope, lambda ns: may_list(kube, ns), namespace).result()
        except ScopeError as e:
            raise CliError(str(e)) from None
    informers = Informers(scope, args.selector)
    token = secrets.token_urlsafe(24)
    app = server.make_app(informers, token, kube, ACTIONS, why=lambda ns, name: ask_why(ns, name, args.operator_url),
                          trace_url=args.trace_url)

    def announce(port: int) -> None:
        url = f"http://127.0.0.1:{port}/?token={token}"
        err.print(f"showing {scope.note}, read with your kubeconfig", highlight=False)
        out.print(f"dashboard: {url}", highlight=False, soft_wrap=True)
        if not args.no_open:
            webbrowser.open(url)

    async def run() -> None:
        try:
            await informers.start(SYNC_SECONDS)
        except asyncio.TimeoutError:
            raise CliError(f"the first list of Tasks and TaskRuns took over {SYNC_SECONDS:g}s") from None
        try:
            await server.serve(app, args.port, announce)
        except OSError as e:  # else main() would call it an unreachable API server
            raise CliError(f"cannot serve on 127.0.0.1:{args.port}: {e.strerror or e}") from None

    try:
        asyncio.run(run())
    finally:
        informers.stop()
    return 0
