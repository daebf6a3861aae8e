"""kubetasks: background tasks on Kubernetes.

The SDK that task code imports lives in :mod:`kubetasks.runtime`; its public names are
re-exported here lazily, so ``from kubetasks import task`` works without importing the
operator's dependencies.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_SDK = {"task", "Context", "AbortTaskRun", "RunHandle", "trigger", "trigger_and_wait", "batch_trigger", "list_runs",
        "Debounce"}


def __getattr__(name: str) -> Any:
    if name in _SDK:
        from kubetasks import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'kubetasks' has no attribute {name!r}")
