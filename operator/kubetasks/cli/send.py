"""``kubetasks send EVENT [--data JSON | --data-file PATH] [--id ID] [-n NS]``: sends an event (a
TaskEvent) as you: RBAC decides (``create`` on taskevents). Every Task in the namespace
subscribed to it (``spec.on``) gets one run, with the data as payload.

The TaskEvent is named from the event and its id (a uuid4 when not given): a resend with the same
id is refused by the API server (409), changes nothing and says so (exit 0: what was asked is
done).
"""

from __future__ import annotations

import argparse
import os
import re
import uuid
from typing import Any

from rich.console import Console

from kubetasks.api.common import API_VERSION
from kubetasks.api.taskevent import EVENT_DATA_LIMIT, EVENT_ID, EVENT_ID_WORDS, EVENT_NAME, EVENT_NAME_WORDS
from kubetasks.cli.common import CliError, add_data_arguments, namespace_of, read_data
from kubetasks.core.events import event_object_name
from kubetasks.core.naming import LABEL_INSTANCE


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("send", help="send an event (a TaskEvent): the Tasks subscribed to it (spec.on) run")
    p.add_argument("event", metavar="EVENT", help="the event's name, e.g. user.created")
    add_data_arguments(p, "the event's data")
    p.add_argument("--id", metavar="ID", help="the event's id: a resend with the same id starts nothing "
                                              "(default: a new uuid4)")
    p.add_argument("--instance", metavar="ID", default=os.environ.get("KUBETASKS_INSTANCE_ID") or None,
                   help="the operator instance that dispatches it (label kubetasks.io/instance; default: "
                        "$KUBETASKS_INSTANCE_ID, else the default instance)")
    return p


def render_event(namespace: str, event: str, id_: str, data: Any, instance: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"event": event, "id": id_}
    if data is not None:
        spec["data"] = data
    meta: dict[str, Any] = {"name": event_object_name(event, id_), "namespace": namespace}
    if instance:  # seen only by the operator started with that id, which starts only its own Tasks
        meta["labels"] = {LABEL_INSTANCE: instance}
    return {"apiVersion": API_VERSION, "kind": "TaskEvent", "metadata": meta, "spec": spec}


def cmd_send(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks import kube

    if len(args.event) > 63 or not re.match(EVENT_NAME, args.event):
        raise CliError(f"the event {args.event!r} is not {EVENT_NAME_WORDS}")
    id_ = args.id or str(uuid.uuid4())
    if len(id_) > 63 or not re.match(EVENT_ID, id_):
        raise CliError(f"the id {id_!r} is not {EVENT_ID_WORDS}")
    data = read_data(args, EVENT_DATA_LIMIT, "an event")
    body = render_event(namespace_of(args), args.event, id_, data, args.instance)
    created, existing = kube.create_or_get(body)
    name = body["metadata"]["name"]
    if not created:
        runs = ", ".join(((existing or {}).get("status") or {}).get("runs") or []) or "none yet"
        out.print(f"taskevent/{name} ({args.event}, id {id_}) was already sent: nothing changed (runs: {runs})",
                  highlight=False, soft_wrap=True)
        return 0
    out.print(f"taskevent/{name} sent ({args.event}, id {id_})", highlight=False, soft_wrap=True)
    return 0
