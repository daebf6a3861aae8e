"""``kubetasks replay``: run a finished run again, from copies of its step records (core.replay).

    kubetasks replay RUN [--payload JSON] [--from-step NAME | --fresh] [-n NS]
    kubetasks replay --task TASK | --tag TAG [--phase Failed] [--since 24h] [--rate 2/s] [-n NS]

A replay is a new TaskRun with ``spec.replayOf`` (the original's name and uid): the operator seeds
its checkpoints before its first attempt, so by default only the step that failed, and what
follows it, runs again. It keeps the original's payload (unless --payload), tags, concurrency key
and machine; an idempotency key, delay or priority only when given. The original is never written.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from rich.console import Console

from kubetasks.api.durations import parse_duration
from kubetasks.api.times import parse_time
from kubetasks.cli.common import FINISHED, CliError, namespace_of, parse_payload
from kubetasks.cli.tables import RunFilter, run_filter
from kubetasks.core.run_filter import filter_words
from kubetasks.core.replay import NotReplayable, check_replayable, replay_taskrun

DEFAULT_RATE = 2.0  # replays created per second by --task: a burst of runs is the operator's to queue, not ours


def parse_rate(text: str) -> float:
    """``5``, ``5/s``, ``30/m``: replays per second."""
    number, _, unit = text.partition("/")
    per = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit.strip())
    try:
        rate = float(number) / per if per else 0.0
    except ValueError:
        rate = 0.0
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 5/s or 30/m)")
    return rate


def bulk_candidates(runs: Iterable[dict[str, Any]], shows: RunFilter, since: timedelta,
                    now: datetime) -> list[dict[str, Any]]:
    """The runs ``shows`` keeps (of a Task, a tag, in a phase) that finished (or, unfinished, were
    created) within ``since`` of ``now``, oldest first; a run some listed run already replays is
    left out, so the same command run twice replays each run once."""
    runs = list(runs)
    replayed = {((r.get("spec") or {}).get("replayOf") or {}).get("uid") for r in runs}
    chosen = []
    for run in runs:
        status, meta = run.get("status") or {}, run.get("metadata") or {}
        when = parse_time(status.get("completionTime")) or parse_time(meta.get("creationTimestamp"))
        if shows(run) and when is not None and now - when <= since and meta.get("uid") not in replayed:
            chosen.append((when, meta.get("name", ""), run))
    return [run for _, _, run in sorted(chosen, key=lambda c: (c[0], c[1]))]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("replay", help="run a finished TaskRun again, reusing its completed steps",
                       description="Creates a new TaskRun that replays RUN: its steps completed before the one that "
                                   "failed return their recorded results; the rest run again. The original is "
                                   "not changed. With --task, replays every matching run, paced.")
    p.add_argument("run", metavar="RUN", nargs="?", help="the run to replay")
    p.add_argument("--payload", metavar="JSON", help="run with this payload instead of the original's")
    reuse = p.add_mutually_exclusive_group()
    reuse.add_argument("--from-step", metavar="NAME",
                       help="reuse only the steps completed before step NAME (a scoped key: parent/child)")
    reuse.add_argument("--fresh", action="store_true", help="reuse no step: every step runs again")
    p.add_argument("--idempotency-key", metavar="KEY", help="the replay's idempotency key (none by default)")
    p.add_argument("--delay", metavar="DURATION", help="start no sooner than this long after creation, e.g. 5m")
    p.add_argument("--priority", type=int, metavar="SECONDS", help="seconds ahead in line, -86400 to 86400")
    bulk = p.add_argument_group("many runs", "replay every run of a Task (or tag) that matches, instead of RUN")
    bulk.add_argument("--task", metavar="TASK", help="replay the runs of this Task")
    bulk.add_argument("--tag", metavar="TAG", help="replay the runs with this tag (spec.tags), of --task or any Task")
    bulk.add_argument("--phase", default="Failed", choices=FINISHED, help="in this phase (default Failed)")
    bulk.add_argument("--since", default="24h", metavar="DURATION",
                      help="that finished within this long (default 24h)")
    bulk.add_argument("--rate", type=parse_rate, default=DEFAULT_RATE, metavar="N/s",
                      help=f"replays created per second at most (default {DEFAULT_RATE:g}/s; 30/m works too)")
    return p


def extra_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The spec fields a replay takes only when given."""
    spec: dict[str, Any] = {}
    if args.idempotency_key is not None:
        spec["idempotencyKey"] = args.idempotency_key
    if args.delay is not None:
        try:
            parse_duration(args.delay)
        except ValueError as e:
            raise CliError(f"--delay: {e}") from None
        spec["delay"] = args.delay
    if args.priority is not None:
        spec["priority"] = args.priority
    return spec


def cmd_replay(args: argparse.Namespace, out: Console, err: Console,
               sleep: Callable[[float], None] = time.sleep) -> int:
    from kubetasks import kube

    if (args.run is None) == (args.task is None and args.tag is None):
        raise CliError("name a run to replay, or give --task TASK or --tag TAG to replay the matching runs")
    spec = extra_spec(args)
    payload = parse_payload(args.payload)
    ns = namespace_of(args)
    if args.run is not None:
        original = kube.get_custom("taskruns", ns, args.run)
        try:
            check_replayable(original, args.from_step)
        except NotReplayable as e:
            raise CliError(str(e)) from None
        created = create_replay(ns, replay_taskrun(original, payload=payload, from_step=args.from_step,
                                                   fresh=args.fresh, spec=spec))
        how = "every step again" if args.fresh else f"from step {args.from_step}" if args.from_step \
            else "from the step that failed"
        out.print(f"taskrun/{created} created: replays {args.run}, {how}", highlight=False)
        return 0
    try:
        since = parse_duration(args.since)
    except ValueError as e:
        raise CliError(f"--since: {e}") from None
    chosen = bulk_candidates(kube.list_custom("taskruns", ns), run_filter(args.task, args.tag, args.phase), since,
                             datetime.now(timezone.utc))
    if not chosen:
        err.print(f"No {args.phase} runs {filter_words(args.task, args.tag)} in the last {args.since} to replay.",
                  highlight=False)
        return 0
    start = time.monotonic()
    for i, original in enumerate(chosen):
        wait = start + i / args.rate - time.monotonic()  # paced: at most --rate creates per second
        if wait > 0:
            sleep(wait)
        name = original["metadata"]["name"]
        created = create_replay(ns, replay_taskrun(original, payload=payload, from_step=args.from_step,
                                                   fresh=args.fresh, spec=spec))
        out.print(f"taskrun/{created} created: replays {name}", highlight=False)
    out.print(f"{len(chosen)} replays created", highlight=False)
    return 0


def create_replay(namespace: str, body: dict[str, Any], api: Any = None) -> str:
    """Creates the replay (a payload over the threshold goes to the operator's store first, as
    `kubetasks run` does); its name. ``api``: :mod:`kubetasks.kube` unless given (the dashboard
    passes the one it acts with)."""
    from kubetasks import kube
    from kubetasks.runtime.errors import PermanentError
    from kubetasks.runtime.payloads import place_payload

    try:
        place_payload(body["spec"], namespace, in_pod=False)
    except PermanentError as e:  # PayloadTooLarge, with its limit
        raise CliError(str(e)) from None
    return str((api or kube).create_custom("taskruns", namespace, body)["metadata"]["name"])
