"""What ``kubetasks deploy`` decides, apart from the requests: the labels a deployed Task carries,
what an apply changed, and which deployed Tasks are gone from the code (to prune).

A deploy is known by its app (``--app``, default the module's name): the Tasks it applies carry
``kubetasks.io/deployed-by=kubetasks`` and ``kubetasks.io/app=<app>``, and a prune looks at that
app's Tasks only, so two modules deployed into one namespace never prune each other's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from kubetasks.core.naming import label_value

FIELD_MANAGER = "kubetasks"
LABEL_DEPLOYED_BY = "kubetasks.io/deployed-by"
LABEL_APP = "kubetasks.io/app"


def app_selector(app: str) -> str:
    return f"{LABEL_DEPLOYED_BY}={FIELD_MANAGER},{LABEL_APP}={label_value(app)}"


def labelled(manifest: dict[str, Any], app: str) -> dict[str, Any]:
    """``manifest`` (a Task) with the deploy's labels; the argument is left as it is."""
    out = copy.deepcopy(manifest)
    labels = out.setdefault("metadata", {}).setdefault("labels", {})
    labels[LABEL_DEPLOYED_BY] = FIELD_MANAGER
    labels[LABEL_APP] = label_value(app)
    return out


def change_of(before: dict[str, Any] | None, after: dict[str, Any], dry_run: bool = False) -> str:
    """``created``, ``configured`` or ``unchanged``, as kubectl apply says it. An apply whose
    content the object already holds writes nothing, so its resourceVersion stays the same. It
    moves too when the operator wrote the Task's status between the read and the apply, and a dry
    run answers the old version whatever it would change: then what a deploy sets (labels and
    spec) is compared."""
    if before is None:
        return "created"
    if not dry_run and before["metadata"].get("resourceVersion") == after["metadata"].get("resourceVersion"):
        return "unchanged"

    def mine(obj: dict[str, Any]) -> tuple[Any, Any]:
        return (obj["metadata"].get("labels") or {}), obj.get("spec")
    return "unchanged" if mine(before) == mine(after) else "configured"


def other_app(live: dict[str, Any] | None, app: str) -> str | None:
    """The app another deploy applied the live Task for, if it is not ``app``: a deploy that took
    it over would move it out of that app's prunes and the next deploy of that app would take it
    back. Tasks applied by hand (no deploy labels) are taken over."""
    labels = ((live or {}).get("metadata") or {}).get("labels") or {}
    owner = labels.get(LABEL_APP)
    if labels.get(LABEL_DEPLOYED_BY) != FIELD_MANAGER or owner in (None, label_value(app)):
        return None
    return str(owner)


def to_prune(live: Iterable[dict[str, Any]], wanted: Iterable[str]) -> list[tuple[str, str]]:
    """(name, uid) of each live Task of the app (listed by :func:`app_selector`) that the code no
    longer defines, by name; the uid makes the delete a no-op if the name was re-created since."""
    keep = set(wanted)
    return sorted((obj["metadata"]["name"], obj["metadata"]["uid"]) for obj in live
                  if obj["metadata"]["name"] not in keep)
