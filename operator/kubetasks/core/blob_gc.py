"""Which runs' blobs the store keeps (pure): the sweep that deletes the blobs of runs gone.

A run's blobs live below one prefix, ``runs/<namespace>/<run uid>/`` (api.storage). A run that no
longer exists (deleted by hand, by its TTL or its Task's history limit, with its namespace) leaves
its prefix behind, and so does an upload no run ever came to name. The sweep lists the store,
groups what it finds by run, and deletes the prefixes of runs the operator does not know, except
those written to within a grace period: a run's first blob may be written before the operator's
cache shows the run (its watch lags its create), and the store's clock is not the operator's.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from kubetasks.api.storage import run_prefix

RUNS = "runs/"


@dataclass(frozen=True)
class RunBlobs:
    """What the store holds for one run."""

    namespace: str
    uid: str
    objects: int
    bytes: int
    newest: datetime  # the last write below the prefix

    @property
    def prefix(self) -> str:
        return run_prefix(self.namespace, self.uid)


def by_run(listing: Iterable[tuple[str, int, datetime]]) -> list[RunBlobs]:
    """Objects ``(path, size, last modified)`` below ``runs/<namespace>/<uid>/``, summed per run;
    other paths are not a run's and are left alone."""
    runs: dict[tuple[str, str], RunBlobs] = {}
    for path, size, modified in listing:
        parts = path.split("/")
        if len(parts) < 4 or parts[0] + "/" != RUNS or not parts[1] or not parts[2] or not parts[3]:
            continue
        key = (parts[1], parts[2])
        seen = runs.get(key)
        runs[key] = RunBlobs(key[0], key[1], objects=(seen.objects if seen else 0) + 1,
                             bytes=(seen.bytes if seen else 0) + size,
                             newest=max(seen.newest, modified) if seen else modified)
    return sorted(runs.values(), key=lambda r: (r.namespace, r.uid))


def to_delete(runs: Iterable[RunBlobs], known: Collection[tuple[str, str]], now: datetime,
              grace: timedelta, namespaces: Collection[str] = ()) -> list[RunBlobs]:
    """The runs whose blobs go: not ``known`` (namespace, uid) to the operator, nothing written for
    ``grace``, and in a namespace it watches (``namespaces``; empty: all). ``known`` must come from
    a synced cache, taken before the listing: a run made since wrote its blobs after ``now``."""
    return [r for r in runs
            if (r.namespace, r.uid) not in known and now - r.newest >= grace
            and (not namespaces or r.namespace in namespaces)]


def usage(runs: Iterable[RunBlobs], deleted: Iterable[RunBlobs] = ()) -> dict[str, tuple[int, int]]:
    """(objects, bytes) per namespace of what stays once ``deleted`` is gone."""
    gone = {(r.namespace, r.uid) for r in deleted}
    totals: dict[str, tuple[int, int]] = {}
    for r in runs:
        if (r.namespace, r.uid) in gone:
            continue
        objects, size = totals.get(r.namespace, (0, 0))
        totals[r.namespace] = (objects + r.objects, size + r.bytes)
    return totals
