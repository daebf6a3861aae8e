"""``kubetasks``: trigger, list, inspect, follow and cancel TaskRuns; print or regenerate the CRDs.

    kubetasks run TASK --payload JSON [-n NS] [--wait] [--timeout SECONDS]
    kubetasks runs [TASK] [-n NS | -A]
    kubetasks describe RUN [-n NS]
    kubetasks logs RUN [--attempt N] [-f] [-n NS]
    kubetasks cancel RUN [-n NS]
    kubetasks crds [--write [DIR]]

Errors are one line on stderr and exit code 1 (no tracebacks for API or configuration errors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kubetasks.api.common import GROUP, VERSION
from kubetasks.api.taskrun import Phase
from kubetasks.cli import dashboard
from kubetasks.core.naming import LABEL_INSTANCE, LABEL_TASK, instance_of, label_value

FINISHED = tuple(p.value for p in Phase if p.finished)
RUN_COLUMNS = ("NAME", "TASK", "PHASE", "ATTEMPT", "AGE", "DURATION")
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


# ---------------------------------------------------------------- pure helpers (unit tested)

def parse_payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"--payload is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_age(since: str | datetime | None, now: datetime | None = None) -> str:
    """kubectl-style age: 45s, 3m12s, 2h5m, 4d3h; "<unknown>" without a time."""
    start = _parse_time(since) if isinstance(since, str) or since is None else since
    if start is None:
        return "<unknown>"
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - start).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{s}s" if minutes < 10 and s else f"{minutes}m"
    hours, m = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{m}m" if m else f"{hours}h"
    days, h = divmod(hours, 24)
    return f"{days}d{h}h" if h and days < 10 else f"{days}d"


def run_row(run: dict[str, Any], now: datetime | None = None) -> tuple[str, ...]:
    """One TaskRun as a row of RUN_COLUMNS."""
    meta, spec, status = run.get("metadata") or {}, run.get("spec") or {}, run.get("status") or {}
    return (
        str(meta.get("name", "")),
        str(spec.get("taskRef", "")),
        str(status.get("phase") or "Pending"),
        str(status.get("attempt") or 0),
        human_age(meta.get("creationTimestamp"), now),
        str(status.get("duration") or "-"),
    )


def run_rows(runs: Sequence[dict[str, Any]], task: str | None = None, now: datetime | None = None,
             with_namespace: bool = False) -> list[tuple[str, ...]]:
    """Rows of the runs (of ``task`` only, when given), oldest first."""
    chosen = [r for r in runs if task is None or (r.get("spec") or {}).get("taskRef") == task]
    chosen.sort(key=lambda r: ((r.get("metadata") or {}).get("creationTimestamp") or "",
                               (r.get("metadata") or {}).get("name") or ""))
    rows = []
    for r in chosen:
        row = run_row(r, now)
        rows.append(((r.get("metadata") or {}).get("namespace", ""), *row) if with_namespace else row)
    return rows


def latest_attempt(run: dict[str, Any]) -> int:
    status = run.get("status") or {}
    attempts = [a.get("attempt", 0) for a in status.get("attempts") or []]
    return max([status.get("attempt") or 0, *attempts])


def job_for_attempt(run: dict[str, Any], attempt: int | None = None) -> tuple[int, str]:
    """(attempt, Job name) of the given or latest attempt; CliError when there is none."""
    from kubetasks.core.naming import job_name

    name = (run.get("metadata") or {}).get("name", "")
    latest = latest_attempt(run)
    if attempt is None:
        if latest < 1:
            raise CliError(f"taskrun {name} has not started an attempt yet")
        attempt = latest
    elif attempt < 1 or attempt > latest:
        raise CliError(f"taskrun {name} has no attempt {attempt} (attempts: {latest})")
    for record in (run.get("status") or {}).get("attempts") or []:
        if record.get("attempt") == attempt and record.get("jobName"):
            return attempt, record["jobName"]
    return attempt, job_name(name, attempt)


def new_taskrun(task: dict[str, Any], payload: Any) -> dict[str, Any]:
    """A TaskRun of ``task`` (the Task object), labelled with its id as the operator would, and
    with the Task's operator instance: the operator that runs the Task runs its runs."""
    name = task["metadata"]["name"]
    task_id = (task.get("spec") or {}).get("id") or name
    labels = {LABEL_TASK: label_value(task_id)}
    instance = instance_of(task)
    if instance:
        labels[LABEL_INSTANCE] = instance
    body: dict[str, Any] = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskRun",
                            "metadata": {"generateName": f"{name}-", "labels": labels},
                            "spec": {"taskRef": name}}
    if payload is not None:
        body["spec"]["payload"] = payload
    return body


def format_error(exc: BaseException) -> str:
    """One line for any error the CLI expects: API, configuration, connection, usage."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    if isinstance(exc, CliError):
        return f"error: {exc}"
    if isinstance(exc, ApiException):
        message = None
        try:
            body = json.loads(exc.body) if exc.body else {}
            message = body.get("message") if isinstance(body, dict) else None
        except (TypeError, ValueError):
            pass
        message = message or (exc.reason or "").strip() or "request failed"
        status = f" ({exc.status})" if exc.status else ""
        return f"error: {_one_line(message)}{status}"
    if isinstance(exc, ConfigException):
        return f"error: no usable Kubernetes configuration: {_one_line(str(exc))}"
    from urllib3.exceptions import HTTPError

    if isinstance(exc, HTTPError) or (isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError)):
        return f"error: cannot reach the Kubernetes API: {_one_line(str(exc))}"
    return f"error: {_one_line(str(exc)) or type(exc).__name__}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetasks", description="Background tasks on Kubernetes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_namespace(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's, else default)")
        return p

    def positive(parse: Callable[[str], float], what: str) -> Callable[[str], float]:
        def check(value: str) -> float:
            try:
                n = parse(value)
            except ValueError:
                raise argparse.ArgumentTypeError(f"not {what}: {value!r}") from None
            if n <= 0:
                raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
            return n
        return check

    seconds = positive(float, "a number of seconds")

    p = with_namespace(sub.add_parser("run", help="trigger a TaskRun of a Task"))
    p.add_argument("task", metavar="TASK")
    p.add_argument("--payload", metavar="JSON", help="the run's input, as JSON")
    p.add_argument("--wait", action="store_true", help="wait until the run finishes; exit 1 unless it succeeded")
    p.add_argument("--timeout", type=seconds, default=600.0, metavar="SECONDS",
                   help="how long --wait waits (default 600)")

    p = with_namespace(sub.add_parser("runs", help="list TaskRuns"))
    p.add_argument("task", metavar="TASK", nargs="?", help="only the runs of this Task")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="runs of every namespace")

    p = with_namespace(sub.add_parser("describe", help="show a TaskRun: attempts, steps, result, error"))
    p.add_argument("run", metavar="RUN")

    p = with_namespace(sub.add_parser("logs", help="print the logs of a TaskRun's attempt"))
    p.add_argument("run", metavar="RUN")
    p.add_argument("--attempt", type=positive(int, "a whole number"), metavar="N", help="attempt number (default: the latest)")
    p.add_argument("-f", "--follow", action="store_true", help="stream the logs")

    p = with_namespace(sub.add_parser("cancel", help="cancel a TaskRun"))
    p.add_argument("run", metavar="RUN")

    p = sub.add_parser("crds", help="print the CRDs generated from the API models, or write them")
    p.add_argument("--write", nargs="?", const="crds", metavar="DIR",
                   help="write the files to DIR (default: crds) instead of printing")
    dashboard.add_parser(sub)
    return parser


# ---------------------------------------------------------------- commands (talk to the API)

def current_namespace() -> str:
    if os.environ.get("KUBERNETES_SERVICE_HOST") and Path(SA_NAMESPACE).exists():
        return Path(SA_NAMESPACE).read_text().strip() or "default"
    import kubernetes

    try:
        _, active = kubernetes.config.list_kube_config_contexts()
    except kubernetes.config.ConfigException:
        return "default"
    return ((active or {}).get("context") or {}).get("namespace") or "default"


def _namespace(args: argparse.Namespace) -> str:
    return args.namespace or current_namespace()


def get_run(namespace: str, name: str) -> dict[str, Any]:
    from kubetasks import kube

    return kube.get_custom("taskruns", namespace, name)


def cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks import kube

    payload = parse_payload(args.payload)
    ns = _namespace(args)
    task = kube.get_custom("tasks", ns, args.task)  # a clear 404 first
    created = kube.create_custom("taskruns", ns, new_taskrun(task, payload))
    name = created["metadata"]["name"]
    out.print(f"taskrun/{name} created", highlight=False)
    if not args.wait:
        return 0
    status: dict[str, Any] = {}
    phase = "Pending"
    with err.status(f"waiting for {name}...") as spinner:
        for run in kube.watch_custom("taskruns", ns, name, args.timeout):
            status = run.get("status") or {}
            phase = status.get("phase") or "Pending"
            spinner.update(f"{name}: {phase} (attempt {status.get('attempt') or 0})")
            if phase in FINISHED:
                break
        else:
            raise CliError(f"timed out after {args.timeout:g}s waiting for {name} (phase {phase})")
    out.print(f"taskrun/{name} {phase}" + (f" in {status['duration']}" if status.get("duration") else ""),
              highlight=False)
    if phase != "Succeeded":
        error = status.get("error") or {}
        if error.get("message"):
            err.print(f"error: {_one_line(error['message'])}", highlight=False, markup=False)
        return 1
    if status.get("result") is not None:
        out.print_json(json.dumps(status["result"]))
    return 0


def cmd_runs(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks import kube

    every = args.all_namespaces
    runs = kube.list_custom("taskruns", None if every else _namespace(args))
    rows = run_rows(runs, args.task, with_namespace=every)
    if not rows:
        err.print("No taskruns found.", highlight=False)
        return 0
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for column in (("NAMESPACE",) if every else ()) + RUN_COLUMNS:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row, style=_phase_style(row[3 if every else 2]))
    out.print(table)
    return 0


def _phase_style(phase: str) -> str:
    return {"Succeeded": "green", "Failed": "red", "TimedOut": "red", "Cancelled": "yellow",
            "Duplicate": "dim", "Running": "cyan", "Retrying": "yellow"}.get(phase, "")


def describe_lines(run: dict[str, Any], now: datetime | None = None) -> list[tuple[str, str]]:
    """The key/value part of ``describe``."""
    meta, spec, status = run.get("metadata") or {}, run.get("spec") or {}, run.get("status") or {}
    fields = [
        ("Name", meta.get("name")), ("Namespace", meta.get("namespace")), ("Task", spec.get("taskRef")),
        ("Phase", status.get("phase") or "Pending"), ("Attempt", status.get("attempt") or 0),
        ("Created", f"{meta.get('creationTimestamp')} ({human_age(meta.get('creationTimestamp'), now)} ago)"
         if meta.get("creationTimestamp") else None),
        ("Started", status.get("startTime")), ("Completed", status.get("completionTime")),
        ("Duration", status.get("duration")), ("Next retry", status.get("nextRetryAt")),
        ("Wakes at", status.get("wakeAt")), ("Duplicate of", status.get("duplicateOf")),
        ("Idempotency key", spec.get("idempotencyKey")), ("Parent run", spec.get("parentRun")),
        ("Cancel requested", "yes" if spec.get("cancel") else None),
        ("Payload", json.dumps(spec["payload"]) if spec.get("payload") is not None else None),
    ]
    return [(k, str(v)) for k, v in fields if v is not None and v != ""]


def cmd_describe(args: argparse.Namespace, out: Console, err: Console) -> int:
    run = get_run(_namespace(args), args.run)
    status = run.get("status") or {}
    for key, value in describe_lines(run):
        out.print(f"[bold]{key + ':':<18}[/bold]{_escape(value)}")
    attempts = status.get("attempts") or []
    if attempts:
        table = Table(title="Attempts", title_justify="left", box=None, header_style="bold")
        for c in ("#", "JOB", "STARTED", "COMPLETED", "EXIT", "REASON"):
            table.add_column(c, no_wrap=True)
        table.add_column("MESSAGE")
        for a in attempts:
            table.add_row(str(a.get("attempt", "")), a.get("jobName") or "", a.get("startTime") or "-",
                          a.get("completionTime") or "-", "" if a.get("exitCode") is None else str(a["exitCode"]),
                          a.get("reason") or "", _one_line(a.get("message") or "")[:120])
        out.print(table)
    steps = status.get("steps") or []
    if steps:
        table = Table(title="Steps", title_justify="left", box=None, header_style="bold")
        for c in ("NAME", "ATTEMPT", "DURATION", "COMPLETED"):
            table.add_column(c, no_wrap=True)
        for s in steps:
            secs = s.get("durationSeconds")
            table.add_row(s.get("name", ""), str(s.get("attempt", "")), "-" if secs is None else f"{secs:.2f}s",
                          s.get("completedAt") or "-")
        out.print(table)
    if status.get("result") is not None:
        out.print("[bold]Result:[/bold]")
        out.print_json(json.dumps(status["result"]))
    error = status.get("error")
    if error:
        out.print(f"[bold red]Error:[/bold red] {_escape((error.get('type') + ': ') if error.get('type') else '')}"
                  f"{_escape(error.get('message', ''))}")
        if error.get("traceback"):
            out.print(error["traceback"], markup=False, highlight=False)
    return 0


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def cmd_logs(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks import kube

    ns = _namespace(args)
    run = get_run(ns, args.run)
    attempt, job = job_for_attempt(run, args.attempt)
    pods = kube.list_pods(ns, f"job-name={job}")
    if not pods:
        raise CliError(f"no pod of attempt {attempt} (job {job}) of taskrun {args.run}: gone, or not started yet")
    pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
    name = pod["metadata"]["name"]
    if args.follow:
        # Not preloaded, the client hands back the urllib3 response to stream from.
        stream: Any = kube.core().read_namespaced_pod_log(name, ns, follow=True, _preload_content=False,
                                                           _request_timeout=(kube.CONNECT_TIMEOUT, 86400))  # may be quiet
        try:
            for chunk in stream.stream(decode_content=True):
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
        finally:
            stream.release_conn()
    else:
        sys.stdout.write(kube.core().read_namespaced_pod_log(name, ns))
        sys.stdout.flush()
    return 0


def cmd_cancel(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks import kube

    ns = _namespace(args)
    run = get_run(ns, args.run)
    phase = (run.get("status") or {}).get("phase") or "Pending"
    if phase in FINISHED:
        raise CliError(f"taskrun {args.run} already finished ({phase})")
    kube.patch_spec("taskruns", ns, args.run, {"spec": {"cancel": True}})
    out.print(f"taskrun/{args.run} cancel requested", highlight=False)
    return 0


def cmd_crds(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks.api.crd import dump, render_crds, write_crds

    if args.write is not None:
        for path in write_crds(Path(args.write)):
            out.print(str(path), highlight=False)
        return 0
    sys.stdout.write("---\n".join(dump(crd) for crd in render_crds().values()))
    return 0


COMMANDS = {"run": cmd_run, "runs": cmd_runs, "describe": cmd_describe, "logs": cmd_logs,
            "cancel": cmd_cancel, "crds": cmd_crds, "dashboard": dashboard.cmd_dashboard}


def main(argv: Sequence[str] | None = None) -> int:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    args = build_parser().parse_args(argv)
    out, err = Console(), Console(stderr=True)
    try:
        return COMMANDS[args.command](args, out, err)
    except (CliError, ApiException, ConfigException, HTTPError, OSError) as e:
        print(format_error(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
