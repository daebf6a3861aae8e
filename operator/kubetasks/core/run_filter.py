"""Which runs a list shows: of a Task, with a tag, in a phase (or every unfinished or finished
one), in a namespace, created in a window. The one filter of ``kubetasks runs``, ``cancel`` and
``replay``, the dashboard's runs list and the SDK's ``list_runs``, so none can mean something
else by "active" or by a tag. Bodies as the API holds them; whatever is written where a field
belongs only fails to match."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from kubetasks.api.taskrun import Phase
from kubetasks.api.times import format_time

Run = dict[str, Any]
RunTest = Callable[[Run], bool]
FINISHED = frozenset(p.value for p in Phase if p.finished)
PHASE_GROUPS = ("active", "finished")  # phase filter values besides the phases themselves
PHASE_FILTERS = (*(p.value for p in Phase), *PHASE_GROUPS)  # what a phase filter takes, in this order


def phase_of(run: Run) -> str:
    """The run's phase as every table shows it: Pending until the operator writes one."""
    return str(_dict(run.get("status")).get("phase") or Phase.PENDING.value)


def run_test(*, task: str = "", tag: str = "", phase: str = "", namespace: str = "",
             after: datetime | None = None, before: datetime | None = None) -> RunTest | None:
    """A predicate for the runs that pass every filter given (``after``: created at or after;
    ``before``: created before); None when nothing is filtered, so a caller skips the pass."""
    # The API's own format: creationTimestamps compare as strings, with no parsing per run.
    since = format_time(after, "seconds") if after else None
    until = format_time(before, "seconds") if before else None
    if not (task or tag or phase or namespace or since or until):
        return None

    def test(run: Run) -> bool:
        meta, spec = _dict(run.get("metadata")), _dict(run.get("spec"))
        if namespace and meta.get("namespace") != namespace:
            return False
        if task and spec.get("taskRef") != task:
            return False
        if phase and not _in_phase(phase_of(run), phase):
            return False
        tags = spec.get("tags")
        if tag and tag not in (tags if isinstance(tags, list) else []):
            return False
        created = str(meta.get("creationTimestamp") or "")
        return not (since and created < since) and not (until and created >= until)
    return test


def _in_phase(current: str, phase: str) -> bool:
    if phase == "active":
        return current not in FINISHED
    if phase == "finished":
        return current in FINISHED
    return current == phase


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def filter_words(task: str | None, tag: str | None, phase: str | None = None) -> str:
    """A filter as a sentence says it: "of sync tagged nightly in phase Queued"."""
    return " ".join(filter(None, (f"of {task}" if task else "", f"tagged {tag}" if tag else "",
                                  f"in phase {phase}" if phase else "")))


def oldest_first(runs: Iterable[Run]) -> list[Run]:
    """The runs by creation, then name (creationTimestamp has whole seconds)."""
    return sorted(runs, key=lambda r: (str(_dict(r.get("metadata")).get("creationTimestamp") or ""),
                                       str(_dict(r.get("metadata")).get("name") or "")))
