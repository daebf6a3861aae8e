"""Retention of finished runs (pure): when one expires, and which are beyond a Task's history."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from kubetasks.api.task import Retention
from kubetasks.api.times import parse_time
from kubetasks.core.schedule import runs_to_prune


def expires_at(completion: datetime | None, run_ttl: int | None, retention: Retention) -> datetime | None:
    """When a finished run is to be deleted; None keeps it (a TTL of 0, or no completion time)."""
    ttl = run_ttl if run_ttl is not None else retention.ttl_seconds_after_finished
    if not ttl or completion is None:
        return None
    return completion + timedelta(seconds=ttl)


def beyond_history(runs: Iterable[dict[str, Any]], retention: Retention) -> list[str]:
    """Finished runs beyond the history limit (per outcome, oldest first); none without a limit."""
    if not retention.history_limit:
        return []
    history = [(r["metadata"]["name"], (r.get("status") or {}).get("phase"),
                parse_time((r.get("status") or {}).get("completionTime"))) for r in runs]
    return runs_to_prune(history, retention.history_limit, retention.history_limit)
