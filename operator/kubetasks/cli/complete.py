"""``kubetasks complete TOKEN [--data JSON | --data-file PATH] [-n NS]``: completes a token a run
waits for (``ctx.step.wait_for_token``), as you: RBAC decides (``update`` on ``waitpoints/status``).

The first completion wins (Trigger.dev's rule): the status is written with the resourceVersion it
was read at, so of two racing completions one lands; the other, and any later one, finds the
token finished, changes nothing and says so (exit 0: what was asked is done).
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from rich.console import Console

from kubetasks.api.waitpoint import TOKEN_DATA_LIMIT
from kubetasks.cli.common import CliError, add_data_arguments, namespace_of, read_data
from kubetasks.core.waits import COMPLETION_TRIES, completed_token, nothing_changed


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("complete", help="complete a token a TaskRun waits for (ctx.step.wait_for_token)")
    p.add_argument("token", metavar="TOKEN", help="the Waitpoint's name (kubectl get waitpoints)")
    add_data_arguments(p, "what the waiting task receives")
    return p


def cmd_complete(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks import kube

    data = read_data(args, TOKEN_DATA_LIMIT, "a token")
    ns = namespace_of(args)
    for _ in range(COMPLETION_TRIES):
        waitpoint = kube.get_custom("waitpoints", ns, args.token)
        update = completed_token(waitpoint, data, datetime.now(timezone.utc))
        if update is None:
            out.print(f"waitpoint/{args.token} was {nothing_changed(waitpoint)}", highlight=False)
            return 0
        try:
            kube.replace_status("waitpoints", ns, args.token, update)
        except Exception as e:
            if kube.is_conflict(e):
                continue  # written meanwhile: read it again, it may have finished
            raise
        out.print(f"waitpoint/{args.token} completed", highlight=False)
        return 0
    raise CliError(f"waitpoint/{args.token} kept changing while it was being completed: try again")
