"""``kubetasks``: trigger, list, inspect, follow and cancel TaskRuns; print or regenerate the CRDs.

    kubetasks run TASK --payload JSON [-n NS] [--wait] [--timeout SECONDS]
                  [--concurrency-key KEY] [--priority SECONDS]
                  [--debounce-key KEY --debounce-delay D --debounce-max-delay D [--debounce-mode MODE]]
    kubetasks runs [TASK] [-n NS | -A] [--tag TAG] [--phase PHASE] [--since DURATION] [-w | -o name]
    kubetasks describe RUN [-n NS]
    kubetasks logs RUN [--attempt N] [-f] [-n NS] [--operator-url URL]
    kubetasks cancel RUN [RUN ...] [-n NS]
    kubetasks cancel --task TASK | --tag TAG [--phase PHASE] [-n NS]
    kubetasks replay RUN [--payload JSON] [--from-step NAME | --fresh] [-n NS]
    kubetasks replay --task TASK | --tag TAG [--phase Failed] [--since 24h] [--rate N/s] [-n NS]
    kubetasks why RUN [-n NS] [--operator-url URL]
    kubetasks deploy MODULE --image IMAGE [--app NAME] [--dry-run] [-n NS]
    kubetasks manifests MODULE --image IMAGE [--app NAME] [-n NS]
    kubetasks dev MODULE [--instance ID] [-n NS]
    kubetasks crds [--write [DIR]]
    kubetasks completion bash|zsh|fish

Commands that talk to the API take kubectl's -n, --kubeconfig and --context, before or after the
command's name; installed as kubectl-kubetasks, the CLI is a kubectl plugin (`kubectl kubetasks`).

Errors are one line on stderr and exit code 1 (no tracebacks for API or configuration errors).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from kubetasks.api.durations import parse_duration
from kubetasks.cli.describe import describe_view
from kubetasks.core.debounce import followed
from kubetasks.core.run_filter import PHASE_FILTERS, filter_words, phase_of
from kubetasks.cli.tables import cancel_candidates, cancels_requested, run_filter, run_rows, runs_table
from kubetasks.cli import complete, dashboard, deploy, dev, replay, send, why
# Re-exported: callers and tests name them as kubetasks.cli.main's.
from kubetasks.cli.common import (FINISHED, UNFINISHED_PHASES, CliError,  # noqa: F401
                                  current_namespace, format_error, new_taskrun, parse_payload, read_payload)
from kubetasks.cli.common import namespace_of as _namespace, one_line as _one_line


# ---------------------------------------------------------------- pure helpers (unit tested)

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


def flow_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TaskRun spec fields of ``kubetasks run``'s flow-control flags, checked as the SDK checks
    them (:func:`kubetasks.runtime.flow.flow_spec`); CliError names the flag that is wrong."""
    from kubetasks.runtime.flow import flow_spec

    given = {flag: getattr(args, flag.removeprefix("--").replace("-", "_"), None)
             for flag in ("--debounce-key", "--debounce-delay", "--debounce-max-delay", "--debounce-mode")}
    debounce = None
    if any(v is not None for v in given.values()):
        missing = [flag for flag in ("--debounce-key", "--debounce-delay", "--debounce-max-delay") if given[flag] is None]
        if missing:
            raise CliError(f"a debounce needs --debounce-key, --debounce-delay and --debounce-max-delay "
                           f"(missing {', '.join(missing)})")
        debounce = {"key": given["--debounce-key"], "delay": given["--debounce-delay"],
                    "max_delay": given["--debounce-max-delay"], "mode": given["--debounce-mode"]}
    try:
        return flow_spec(concurrency_key=args.concurrency_key, priority=args.priority, debounce=debounce)
    except (TypeError, ValueError) as e:
        raise CliError(str(e)) from None


def _kube_flags(p: argparse.ArgumentParser, default: Any) -> argparse.ArgumentParser:
    p.add_argument("-n", "--namespace", default=default,
                   help="namespace (default: the kubeconfig context's, else default)")
    p.add_argument("--kubeconfig", default=default, metavar="FILE", help="kubeconfig file (default: $KUBECONFIG)")
    p.add_argument("--context", default=default, help="kubeconfig context (default: its current one)")
    return p


def build_parser(prog: str = "kubetasks") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Background tasks on Kubernetes.")
    # kubectl hands a plugin the flags after its name: -n, --kubeconfig and --context work before
    # COMMAND (None when absent) or after it (SUPPRESS: absent, they leave the first ones alone).
    _kube_flags(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_namespace(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return _kube_flags(p, argparse.SUPPRESS)

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
    _complete_with(p.add_argument("task", metavar="TASK"), "tasks")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--payload", metavar="JSON", help="the run's input, as JSON")
    given.add_argument("--payload-file", metavar="PATH",
                       help="the run's input, a JSON file ('-': standard input); for payloads of any size")
    p.add_argument("--wait", action="store_true", help="wait until the run finishes; exit 1 unless it succeeded")
    p.add_argument("--timeout", type=seconds, default=600.0, metavar="SECONDS",
                   help="how long --wait waits (default 600)")
    flow = p.add_argument_group("flow control", "how the run waits under its Task's limits (README: Flow control)")
    flow.add_argument("--concurrency-key", metavar="KEY",
                      help="the key its Task's per-key limits count by (a tenant, a user); immutable")
    flow.add_argument("--priority", type=int, metavar="SECONDS",
                      help="seconds ahead in line, -86400 to 86400: it waits as if created that much earlier")
    flow.add_argument("--debounce-key", metavar="KEY",
                      help="runs of this Task with the same debounce key close together become one run")
    flow.add_argument("--debounce-delay", metavar="DURATION", help="quiet time before the run starts, e.g. 3s")
    flow.add_argument("--debounce-max-delay", metavar="DURATION",
                      help="longest wait after the key's first run, e.g. 1m (required with --debounce-key)")
    flow.add_argument("--debounce-mode", choices=["leading", "trailing"],
                      help="leading (default): the first run's payload is kept; trailing: the last's")

    p = with_namespace(sub.add_parser("runs", help="list TaskRuns"))
    _complete_with(p.add_argument("task", metavar="TASK", nargs="?", help="only the runs of this Task"), "tasks")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="runs of every namespace")
    p.add_argument("--tag", metavar="TAG", help="only the runs with this tag (spec.tags)")
    p.add_argument("--phase", choices=PHASE_FILTERS, metavar="PHASE",
                   help="only the runs in this phase (Queued, Failed...), or 'active' or 'finished'")
    p.add_argument("--since", metavar="DURATION", help="only the runs created within this long, e.g. 24h")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("-w", "--watch", action="store_true", help="keep the table current until Ctrl-C")
    shown.add_argument("-o", "--output", choices=["name"], help="name: the runs' names only, one a line")

    p = with_namespace(sub.add_parser("describe", help="show a TaskRun: attempts, steps, result, error"))
    _complete_with(p.add_argument("run", metavar="RUN"), "taskruns")

    p = with_namespace(sub.add_parser("logs", help="print the logs of a TaskRun's attempt"))
    _complete_with(p.add_argument("run", metavar="RUN"), "taskruns")
    p.add_argument("--attempt", type=positive(int, "a whole number"), metavar="N", help="attempt number (default: the latest)")
    p.add_argument("-f", "--follow", action="store_true", help="stream the logs")
    p.add_argument("--operator-url", metavar="URL",
                   help="reach the operator here for archived logs (default: $KUBETASKS_OPERATOR_URL, else the "
                        "API server's proxy to its Service)")

    p = with_namespace(sub.add_parser("cancel", help="cancel TaskRuns: by name, or every unfinished run of a Task or tag",
                                      description="Asks the operator to cancel each named run, or every unfinished "
                                                  "run of the namespace that matches --task and --tag (both, when "
                                                  "both are given). A run already finished is not changed."))
    _complete_with(p.add_argument("run", metavar="RUN", nargs="*", help="the runs to cancel"), "taskruns")
    _complete_with(p.add_argument("--task", metavar="TASK", help="every unfinished run of this Task"), "tasks")
    p.add_argument("--tag", metavar="TAG", help="every unfinished run with this tag (spec.tags)")
    p.add_argument("--phase", choices=UNFINISHED_PHASES, metavar="PHASE",
                   help="only the unfinished runs in this phase (Queued, Running...), with --task or --tag")

    p = with_namespace(replay.add_parser(sub))
    _complete_with(next(a for a in p._actions if a.dest == "run"), "taskruns")

    p = sub.add_parser("crds", help="print the CRDs generated from the API models, or write them")
    p.add_argument("--write", nargs="?", const="crds", metavar="DIR",
                   help="write the files to DIR (default: crds) instead of printing")

    p = sub.add_parser("completion", help="print a shell completion script: source <(kubetasks completion bash)")
    p.add_argument("shell", choices=SHELLS)
    p = with_namespace(why.add_parser(sub))
    _complete_with(next(a for a in p._actions if a.dest == "run"), "taskruns")
    with_namespace(dashboard.add_parser(sub))
    p = with_namespace(complete.add_parser(sub))
    _complete_with(next(a for a in p._actions if a.dest == "token"), "waitpoints")
    with_namespace(send.add_parser(sub))
    applied, printed = deploy.add_parsers(sub)
    with_namespace(applied)
    with_namespace(printed)
    with_namespace(dev.add_parser(sub))
    return parser


def _complete_with(action: argparse.Action, plural: str) -> None:
    """Tab completion of the names of ``plural`` in the namespace the command line names so far."""
    def names(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
        from kubetasks import kube

        use_kube_flags(parsed_args)
        found = kube.list_custom(plural, _namespace(parsed_args))
        return [n for item in found if (n := str((item.get("metadata") or {}).get("name", ""))).startswith(prefix)]
    setattr(action, "completer", names)  # argcomplete's hook


# ---------------------------------------------------------------- commands (talk to the API)

def use_kube_flags(args: argparse.Namespace) -> None:
    """--kubeconfig and --context, for every later request and for the default namespace."""
    if getattr(args, "kubeconfig", None):
        os.environ["KUBECONFIG"] = args.kubeconfig
    if getattr(args, "context", None):
        from kubetasks import kube

        kube.use_context(args.context)


def get_run(namespace: str, name: str) -> dict[str, Any]:
    from kubetasks import kube

    return kube.get_custom("taskruns", namespace, name)


def cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks import kube
    from kubetasks.runtime.errors import PermanentError
    from kubetasks.runtime.payloads import place_payload
    from kubetasks.runtime.tracing import env_annotations

    payload = read_payload(args.payload, args.payload_file)
    flow = flow_options(args)  # before any request: a bad flag creates nothing
    ns = _namespace(args)
    task = kube.get_custom("tasks", ns, args.task)  # a clear 404 first
    body = new_taskrun(task, payload, flow)
    traced = env_annotations(os.environ)  # TRACEPARENT: the caller's span (OpenTelemetry's env carrier)
    if traced:
        body["metadata"]["annotations"] = traced
    try:
        place_payload(body["spec"], ns, in_pod=False)  # over the threshold: to the operator's store
    except PermanentError as e:  # PayloadTooLarge, with its limit
        raise CliError(str(e)) from None
    created = kube.create_custom("taskruns", ns, body)
    name = created["metadata"]["name"]
    out.print(f"taskrun/{name} created", highlight=False)
    if not args.wait:
        return 0
    status: dict[str, Any] = {}
    phase = "Pending"
    deadline, seen = time.monotonic() + args.timeout, {name}
    with err.status(f"waiting for {name}...") as spinner:
        while True:
            for run in kube.watch_custom("taskruns", ns, name, deadline - time.monotonic()):
                status = run.get("status") or {}
                phase = status.get("phase") or "Pending"
                spinner.update(f"{name}: {phase} (attempt {status.get('attempt') or 0})")
                if phase in FINISHED:
                    break
            else:
                raise CliError(f"timed out after {args.timeout:g}s waiting for {name} (phase {phase})")
            into = followed(status)  # Superseded or Duplicate: the run in its place has the outcome
            if into is None or into in seen:
                break
            out.print(f"taskrun/{name} {phase}: following taskrun/{into}", highlight=False)
            name = into
            seen.add(into)
    out.print(f"taskrun/{name} {phase}" + (f" in {status['duration']}" if status.get("duration") else ""),
              highlight=False)
    if phase != "Succeeded":
        error = status.get("error") or {}
        if error.get("message"):
            err.print(f"error: {_one_line(error['message'])}", highlight=False, markup=False)
        return 1
    if status.get("result") is not None:
        out.print_json(json.dumps(status["result"]))
    elif status.get("resultRef"):
        ref = status["resultRef"]
        out.print(f"result: {ref.get('size', 0):,} bytes, sha256 {ref.get('sha256')} ({ref.get('uri')})",
                  highlight=False, markup=False)
    return 0


def cmd_runs(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks import kube

    every = args.all_namespaces
    namespace = None if every else _namespace(args)
    try:
        since = parse_duration(args.since) if args.since else None
    except ValueError as e:
        raise CliError(f"--since: {e}") from None
    shows = run_filter(args.task, args.tag, args.phase, datetime.now(timezone.utc) - since if since else None)
    if args.watch:
        from kubetasks.cli.watch import watch_runs

        return watch_runs(namespace, out, shows)
    rows = run_rows(kube.list_custom("taskruns", namespace), shows, with_namespace=every)
    if args.output == "name":
        out.file.write("".join(f"{row[1 if every else 0]}\n" for row in rows))
        return 0
    if not rows:
        err.print("No taskruns found.", highlight=False)
        return 0
    out.print(runs_table(rows, with_namespace=every))
    return 0


def cmd_describe(args: argparse.Namespace, out: Console, err: Console) -> int:
    run = get_run(_namespace(args), args.run)
    kept, problem = small_kept_result(run)
    out.print(describe_view(run, kept=kept, kept_problem=problem))
    return 0


def small_kept_result(run: dict[str, Any]) -> tuple[Any, str | None]:
    """(value, why not) of a result kept in the run's ConfigMap small enough to show, read as the
    user and verified by its sha256; (None, None) when there is none to show."""
    from kubetasks import kube
    from kubetasks.api.storage import CONFIGMAP_SCHEME, BlobRef
    from kubetasks.cli.describe import SHOW_LIMIT
    from kubetasks.core.result_refs import check_bytes

    raw = (run.get("status") or {}).get("resultRef")
    if not raw:
        return None, None
    ref = BlobRef.model_validate(raw)
    if ref.size > SHOW_LIMIT or not ref.uri.startswith(CONFIGMAP_SCHEME + ":"):
        return None, None
    name, _, key = ref.uri[len(CONFIGMAP_SCHEME) + 1:].partition("/")
    try:
        found = kube.get(kube.CONFIGMAPS, run["metadata"]["namespace"], name)
    except Exception as e:  # noqa: BLE001 (a 403: the user may read the run, not its ConfigMap)
        return None, f"cannot read ConfigMap {name}: {kube.error_line(e)}"
    text = ((found or {}).get("data") or {}).get(key)
    data = None if text is None else str(text).encode()
    problem = check_bytes(ref, data)
    return (None, problem) if problem or data is None else (json.loads(data), None)


def cmd_logs(args: argparse.Namespace, out: Console, err: Console) -> int:
    """A finished attempt's whole log from the object store, through the operator, as the user;
    else the end the operator kept (core.logs: one request, and there once the pod is gone); else,
    or before it is kept, the pod's."""
    from kubetasks import kube
    from kubetasks.core.logs import kept_log, last_pod
    from kubetasks.core.naming import attempt_log_name
    from kubetasks.operator_client import LogCut, Unreachable, stream_archived_log

    ns = _namespace(args)
    run = get_run(ns, args.run)
    attempt, job = job_for_attempt(run, args.attempt)
    record: dict[str, Any] = next((r for r in (run.get("status") or {}).get("attempts") or [] if r.get("attempt") == attempt), {})
    finished = bool(record.get("reason") or record.get("completionTime"))
    if finished and record.get("log") and not args.follow:
        try:
            stream_archived_log(ns, args.run, attempt, sys.stdout.buffer.write, getattr(args, "operator_url", None))
            sys.stdout.flush()
            return 0
        except Unreachable as e:  # nothing written yet: what etcd keeps instead
            print(f"kubetasks: the whole log of attempt {attempt} is archived, but {e}", file=sys.stderr)
        except LogCut as e:
            raise CliError(str(e)) from None
    if finished:
        kept = kept_log(kube.get(kube.CONFIGMAPS, ns, attempt_log_name(job)), run["metadata"].get("uid", ""))
        if kept is not None:
            if kept.truncated:
                print(f"kubetasks: the log of attempt {attempt} was longer: its last {kept.kept_bytes} bytes were "
                      f"kept (while pod {kept.pod} exists, kubectl logs has all of it)", file=sys.stderr)
            sys.stdout.write(kept.text)
            sys.stdout.flush()
            return 0
    pod = last_pod(kube.list_pods(ns, f"job-name={job}"))
    if pod is None:
        if finished:
            raise CliError(f"no log of attempt {attempt} (job {job}) of taskrun {args.run}: its pod is gone and "
                           "the operator kept none (keeping off, no log from its node, or the pod gone before it was read)")
        raise CliError(f"no pod of attempt {attempt} (job {job}) of taskrun {args.run}: gone, or not started yet")
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
    if bool(args.run) == bool(args.task or args.tag):
        raise CliError("name the runs to cancel, or give --task TASK or --tag TAG (not both ways)")
    if args.run and args.phase:
        raise CliError("--phase chooses among the runs of --task or --tag, not among named runs")
    if not args.run:
        chosen = cancel_candidates(kube.list_custom("taskruns", ns), run_filter(args.task, args.tag, args.phase))
        which = filter_words(args.task, args.tag, args.phase)
        if not chosen:
            err.print(f"No unfinished runs {which} to cancel.", highlight=False)
            return 0
        for name in chosen:
            kube.patch_spec("taskruns", ns, name, {"spec": {"cancel": True}})
            out.print(f"taskrun/{name} cancel requested", highlight=False)
        out.print(f"{cancels_requested(len(chosen))} ({which})", highlight=False)
        return 0
    finished = []
    for name in args.run:  # each named run, as kubectl delete does: one already finished stops no other
        phase = phase_of(get_run(ns, name))
        if phase in FINISHED:
            finished.append(f"taskrun {name} already finished ({phase})")
            continue
        kube.patch_spec("taskruns", ns, name, {"spec": {"cancel": True}})
        out.print(f"taskrun/{name} cancel requested", highlight=False)
    if finished:
        raise CliError("; ".join(finished))
    return 0


def cmd_crds(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks.api.crd import dump, render_crds, write_crds

    if args.write is not None:
        for path in write_crds(Path(args.write)):
            out.print(str(path), highlight=False)
        return 0
    sys.stdout.write("---\n".join(dump(crd) for crd in render_crds().values()))
    return 0


SHELLS = ("bash", "zsh", "fish")


def cmd_completion(args: argparse.Namespace, out: Console, err: Console) -> int:
    import argcomplete

    # argcomplete asks this very program at each Tab (it calls argcomplete.autocomplete in main).
    sys.stdout.write(argcomplete.shellcode(["kubetasks", "kubectl-kubetasks"], shell=args.shell))
    return 0


def kubectl_complete() -> int:
    """``kubectl_complete-kubetasks``: completions for ``kubectl kubetasks ...`` (kubectl 1.26 and
    later run it with ``__complete`` and the words so far, the last one being completed, and read
    one completion a line, then ``:4``, Cobra's "no file names")."""
    import argcomplete

    words = sys.argv[2:] if sys.argv[1:2] == ["__complete"] else sys.argv[1:]
    line = " ".join(["kubetasks", *(words or [""])])
    os.environ.update(_ARGCOMPLETE="1", COMP_LINE=line, COMP_POINT=str(len(line)), _ARGCOMPLETE_IFS="\n")
    found = io.StringIO()

    def done(code: int = 0) -> None:
        raise SystemExit(code)

    with contextlib.suppress(SystemExit):
        argcomplete.autocomplete(build_parser(), exit_method=done, output_stream=found, append_space=False)
    sys.stdout.write("".join(f"{c}\n" for c in found.getvalue().split("\n") if c) + ":4\n")
    return 0


COMMANDS = {"run": cmd_run, "runs": cmd_runs, "describe": cmd_describe, "logs": cmd_logs,
            "cancel": cmd_cancel, "crds": cmd_crds, "completion": cmd_completion, "dashboard": dashboard.cmd_dashboard,
            "why": why.cmd_why, "complete": complete.cmd_complete, "send": send.cmd_send, "replay": replay.cmd_replay,
            "deploy": deploy.cmd_deploy, "manifests": deploy.cmd_manifests, "dev": dev.cmd_dev}


def main(argv: Sequence[str] | None = None) -> int:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    # Run as kubectl-kubetasks (`kubectl kubetasks ...`), usage says so.
    plugin = Path(sys.argv[0]).name.startswith("kubectl-") and argv is None
    parser = build_parser("kubectl kubetasks" if plugin else "kubetasks")
    if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions (`kubetasks completion`)
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    out, err = Console(), Console(stderr=True)
    try:
        use_kube_flags(args)
        return COMMANDS[args.command](args, out, err)
    except (CliError, ApiException, ConfigException, HTTPError, OSError) as e:
        print(format_error(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
