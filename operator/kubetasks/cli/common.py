"""What every command of the CLI shares: its error, the one-line message for any error it expects,
the namespace a command acts in, and a new TaskRun of a Task (``kubetasks run`` and the dashboard's
Trigger)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubetasks.api.common import GROUP, VERSION
from kubetasks.api.taskrun import Phase
from kubetasks.core.naming import LABEL_INSTANCE, LABEL_TASK, instance_of, label_value
from kubetasks.protocol import json_size

FINISHED = tuple(p.value for p in Phase if p.finished)
UNFINISHED_PHASES = tuple(p.value for p in Phase if not p.finished)
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def parse_payload(text: str | None, what: str = "--payload") -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"{what} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None


def read_payload(text: str | None, path: str | None, option: str = "--payload") -> Any:
    """The payload of ``--payload JSON`` or ``--payload-file PATH`` (``-``: standard input), or of
    another ``option`` and its ``-file``. A file takes payloads of any size: the command line
    holds at most 128 KiB in one argument."""
    if path is None:
        return parse_payload(text, option)
    try:
        data = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"{option}-file {path}: {getattr(e, 'strerror', None) or e}") from None
    return parse_payload(data, f"{option}-file {path}")


def add_data_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--data JSON | --data-file PATH``, for commands that hand data to the cluster."""
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--data", metavar="JSON", help=f"{what}, as JSON (default: null)")
    given.add_argument("--data-file", metavar="PATH", help="the same from a JSON file ('-': standard input)")


def read_data(args: argparse.Namespace, limit: int, holder: str) -> Any:
    """The data of ``--data``/``--data-file`` (None when neither is given), refused above ``limit``
    bytes of JSON, which is what ``holder`` takes."""
    data = read_payload(args.data, args.data_file, "--data") if (args.data or args.data_file) else None
    if (size := json_size(data)) > limit:
        raise CliError(f"the data is {size:,} bytes of JSON, more than {holder} takes ({limit:,}): "
                       "put it in a ConfigMap or an object store and send its name")
    return data


def new_taskrun(task: dict[str, Any], payload: Any, spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A TaskRun of ``task`` (the Task object), labelled with its id as the operator would, and
    with the Task's operator instance: the operator that runs the Task runs its runs. It is
    created (POST), never applied client-side: no last-applied annotation, whose 256 KiB cap
    would refuse a large payload. ``spec``: more spec fields (the flow-control flags')."""
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
    body["spec"].update(spec or {})
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
        return f"error: {one_line(message)}{status}"
    if isinstance(exc, ConfigException):
        return f"error: no usable Kubernetes configuration: {one_line(str(exc))}"
    from urllib3.exceptions import HTTPError

    if isinstance(exc, HTTPError) or (isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError)):
        return f"error: cannot reach the Kubernetes API: {one_line(str(exc))}"
    return f"error: {one_line(str(exc)) or type(exc).__name__}"


def one_line(text: str) -> str:
    return " ".join(text.split())


def current_namespace(context: str | None = None) -> str:
    if os.environ.get("KUBERNETES_SERVICE_HOST") and Path(SA_NAMESPACE).exists():
        return Path(SA_NAMESPACE).read_text().strip() or "default"
    import kubernetes

    try:
        # The client reads $KUBECONFIG when imported: pass it as it is now (--kubeconfig).
        contexts, active = kubernetes.config.list_kube_config_contexts(os.environ.get("KUBECONFIG") or None)
    except kubernetes.config.ConfigException:
        return "default"
    if context:
        active = next((c for c in contexts if c.get("name") == context), None)
        if active is None:
            raise CliError(f"context {context!r} not found in the kubeconfig")
    return ((active or {}).get("context") or {}).get("namespace") or "default"


def namespace_of(args: argparse.Namespace) -> str:
    return getattr(args, "namespace", None) or current_namespace(getattr(args, "context", None))
