"""``kubetasks deploy MODULE --image IMAGE [--app NAME] [--dry-run] [-n NS]`` and
``kubetasks manifests MODULE --image IMAGE [-n NS]``: from the ``@task`` functions of your code to
Tasks on the cluster, with no YAML written by hand.

MODULE is a dotted module name (found from the current directory, as uvicorn finds its app) or a
file path (imported by its file name, from its own directory: ``app/tasks.py`` gives entry points
``tasks:<function>``, so the image must have that directory as its working directory, as the
Dockerfile in examples/user-image does).

``deploy`` server-side-applies each Task as field manager ``kubetasks``, forcing conflicts: the
code is the source of truth for the fields it sets (a hand edit of one of them is overwritten by
the next deploy, as ``kubectl apply --server-side --force-conflicts`` does in a pipeline); fields
it does not set (set by another manager) are left alone. Then it deletes the Tasks of the same app
that the code no longer defines (core.deploy) and prints what changed, as kubectl apply does.
``manifests`` prints the same Tasks as YAML, for GitOps.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from kubetasks.cli.common import CliError, namespace_of
from kubetasks.core.naming import LABEL_INSTANCE
from kubetasks.core.deploy import FIELD_MANAGER, app_selector, change_of, labelled, other_app, to_prune


def add_parsers(sub: Any) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    deploy = sub.add_parser("deploy", help="apply the Tasks of a module's @task functions, prune the removed ones")
    manifests = sub.add_parser("manifests", help="print the Task manifests of a module's @task functions (YAML)")
    for p in (deploy, manifests):
        p.add_argument("module", metavar="MODULE", help="a dotted module name (from the current directory) or a .py file")
        p.add_argument("--image", required=True, help="the image the Tasks run (holds the module and kubetasks)")
        p.add_argument("--app", metavar="NAME",
                       help="the deploy's name: prunes touch only its Tasks (label kubetasks.io/app; "
                            "default: the module's name)")
        p.add_argument("--instance", metavar="ID", default=os.environ.get("KUBETASKS_INSTANCE_ID") or None,
                       help="the operator instance that runs the Tasks (label kubetasks.io/instance; default: "
                            "$KUBETASKS_INSTANCE_ID, else the default instance)")
    deploy.add_argument("--dry-run", action="store_true",
                        help="ask the API server what would change (server-side dry run); change nothing")
    return deploy, manifests


def module_root(module: str) -> tuple[Path, str]:
    """(the directory MODULE is imported from, its module name): a file's own directory and its
    stem, else the current directory and the dotted name."""
    path = Path(module)
    if module.endswith(".py") or path.is_file():
        if not path.is_file():
            raise CliError(f"no file {module}")
        return path.resolve().parent, path.stem
    return Path.cwd(), module


def import_tasks(module: str) -> tuple[str, list[Any]]:
    """(module name, its TaskDefinitions in id order) after importing MODULE: its own tasks and
    those of the modules its import loads (a package's submodules, say)."""
    from kubetasks.runtime.task import registered_tasks

    root, name = module_root(module)
    sys.path.insert(0, str(root))
    before = set(sys.modules)
    try:
        importlib.import_module(name)
    except ImportError as e:
        raise CliError(f"cannot import {module}: {e}") from None
    # The tasks of the module and of the modules its import loaded (not of kubetasks' own imports).
    loaded = {name} | (set(sys.modules) - before)
    found = [d for _, d in sorted(registered_tasks().items()) if d.fn.__module__ in loaded]
    if not found:
        raise CliError(f"no @task functions in {module}")
    return name, found


def task_manifests(args: argparse.Namespace, namespace: str | None) -> tuple[str, list[dict[str, Any]]]:
    """(app, the labelled Task manifests of the tasks of the command's MODULE)."""
    name, tasks = import_tasks(args.module)
    app = args.app or name
    try:
        manifests = [labelled(t.to_task_manifest(args.image, namespace=namespace), app) for t in tasks]
    except ValueError as e:  # an entry point that cannot be derived, a spec the model refuses
        raise CliError(str(e)) from None
    if args.instance:
        for m in manifests:
            m["metadata"]["labels"][LABEL_INSTANCE] = args.instance
    return app, manifests


def cmd_manifests(args: argparse.Namespace, out: Console, err: Console) -> int:
    import yaml

    _, manifests = task_manifests(args, getattr(args, "namespace", None))
    sys.stdout.write("---\n".join(yaml.safe_dump(m, sort_keys=False) for m in manifests))
    return 0


def cmd_deploy(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks import kube

    ns = namespace_of(args)
    app, manifests = task_manifests(args, ns)
    dry = " (server dry run)" if args.dry_run else ""
    live = {m["metadata"]["name"]: kube.get(kube.TASKS, ns, m["metadata"]["name"]) for m in manifests}
    taken = [f"task/{name} (app {owner})" for name, obj in live.items() if (owner := other_app(obj, app))]
    if taken:  # before any write: a deploy applies all of its Tasks or none
        raise CliError(f"already deployed by another app: {', '.join(taken)}; deploy it with that --app, "
                       "or delete it first")
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        before = live[name]
        after = kube.apply(kube.TASKS, ns, manifest, FIELD_MANAGER, force=True, dry_run=args.dry_run)
        change = change_of(before, after, dry_run=args.dry_run)
        out.print(f"task/{name} {change}{dry}", highlight=False)
    deployed, _ = kube.list_all(kube.TASKS, ns, label_selector=app_selector(app))
    for name, uid in to_prune(deployed, (m["metadata"]["name"] for m in manifests)):
        if not args.dry_run:
            kube.delete(kube.TASKS, ns, name, uid=uid)
        out.print(f"task/{name} pruned{dry}", highlight=False)
    return 0
