"""A task pod told to stop: SIGTERM interrupts the task, and whether its run was cancelled.

Kubernetes stops a pod with SIGTERM, then SIGKILL once its grace period (30 s by default) has
passed: when the operator cancels the run (it deletes the attempt's Job), when the run is deleted,
when the Job's activeDeadlineSeconds (maxDuration) passes, or when the pod is evicted. The task is
not PID 1 (core.render shares the pod's process namespace), so without a handler SIGTERM would end
it at once; with :func:`sigterm_stops`, the first SIGTERM raises
:class:`~kubetasks.runtime.errors.Stopped` in the main thread instead, and the attempt ends as
runtime.entry says (``finally`` blocks, then on_cancel when :func:`run_cancelled`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from kubetasks.runtime.errors import Stopped

log = logging.getLogger("kubetasks.runtime")
RunReader = Callable[[str, str], Mapping[str, Any]]  # (namespace, name) -> the TaskRun
GONE = (403, 404)  # the run, and with it the Role that let this pod read it, was deleted


@contextmanager
def sigterm_stops() -> Iterator[Callable[[], None]]:
    """Within it, the first SIGTERM raises Stopped in the main thread; later ones are ignored, so
    that the hooks it leads to are not cut short. It gives ``ended``: once called (the attempt's
    outcome is known), a SIGTERM is ignored too, so that the report is written. Outside the main
    thread, nothing changes."""
    told = False

    def ended() -> None:
        nonlocal told
        told = True

    if threading.current_thread() is not threading.main_thread():
        yield ended
        return

    def stop(signum: int, frame: Any) -> None:
        nonlocal told
        if told:
            return
        told = True
        log.info("SIGTERM: the task is stopped (the run was cancelled or deleted, or the pod is being stopped)")
        raise Stopped("the pod was told to stop (SIGTERM) before the task ended")

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield ended
    finally:
        signal.signal(signal.SIGTERM, before)


def run_cancelled(read_run: RunReader, namespace: str, name: str, uid: str | None) -> bool:
    """Whether the run this pod works for was cancelled (``spec.cancel``) or deleted, as the API
    server says now. False when that cannot be told: no on_cancel on a guess."""
    from kubernetes.client.exceptions import ApiException

    try:
        run = read_run(namespace, name)
    except ApiException as e:
        if e.status in GONE:
            return True
        log.warning("could not read TaskRun %s/%s to tell whether it was cancelled: %s", namespace, name, e.reason)
        return False
    except Exception as e:
        log.warning("could not read TaskRun %s/%s to tell whether it was cancelled: %s", namespace, name, e)
        return False
    meta = run.get("metadata") or {}
    if (uid and meta.get("uid") != uid) or meta.get("deletionTimestamp"):
        return True  # deleted (and perhaps made again under its name)
    return bool((run.get("spec") or {}).get("cancel"))
