"""Attempts' logs for the run pages, read as the user, at a bounded cost.

A live run's page is fetched again every 3 s with up to 20 attempts, so:
- a finished attempt's log (the one the operator kept in a ConfigMap, else its pod's) is read once
  and cached (a bounded LRU); when none could be read, that answer is kept for a little while;
- a node whose kubelet gave no log (core.logs.LoglessNodes: a kwok node has none) is not asked again
  for a while;
- reads are blocking and run on the dashboard's own bounded executor (the caller's).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kubetasks import kube
from kubetasks.core.logs import LoglessNodes, kept_log, last_pod
from kubetasks.core.naming import attempt_log_name
from kubetasks.dashboard.views import AttemptLog

# Of a pod's log, on a run's page (the raw log link reads more); the whole kept log of a finished
# attempt is shown (the operator bounds it).
LOG_TAIL_LINES, LOG_LIMIT_BYTES = 2000, 256 * 1024
RAW_TAIL_LINES, RAW_LIMIT_BYTES = 100_000, 8 * 1024 * 1024
CACHED_LOGS = 200  # finished attempts' logs kept (each at most LOG_LIMIT_BYTES or a kept log)
NO_LOG_SECONDS = 30.0  # how long "no log" of a finished attempt is believed (the kept one may come)


def why(e: Exception) -> str:
    """An API error in a few words (:func:`kubetasks.kube.error_line`): its status, reason and the
    API server's message, whole (cut, a forbidden name and a missing one would read apart)."""
    return kube.error_line(e)


class LogReader:
    def __init__(self, api: Any = kube, clock: Callable[[], float] = time.monotonic,
                 cached: int = CACHED_LOGS) -> None:
        self.api = api
        self.clock = clock
        self.logless = LoglessNodes()
        self._cached = cached
        self._finished: OrderedDict[tuple[str, str, str], tuple[AttemptLog, float]] = OrderedDict()
        self._lock = threading.Lock()  # the executor's threads share the cache

    def attempt(self, namespace: str, run_uid: str, job: str, finished: bool) -> AttemptLog:
        """The log shown on a run's page. Blocking: call it on an executor."""
        key = (namespace, run_uid, job)
        if finished:
            with self._lock:
                hit = self._finished.get(key)
                if hit is not None and hit[1] > self.clock():
                    self._finished.move_to_end(key)
                    return hit[0]
        got = self.read(namespace, run_uid, job, finished)
        if finished:
            with self._lock:
                self._finished[key] = (got, self.clock() + (float("inf") if got.text is not None else NO_LOG_SECONDS))
                self._finished.move_to_end(key)
                while len(self._finished) > self._cached:
                    self._finished.popitem(last=False)
        return got

    def read(self, namespace: str, run_uid: str, job: str, finished: bool, tail_lines: int = LOG_TAIL_LINES,
             limit_bytes: int = LOG_LIMIT_BYTES) -> AttemptLog:
        """An attempt's log: the one the operator kept when it finished (a ConfigMap owned by the
        run), else its pod's. Blocking, uncached."""
        api = self.api
        if finished:
            name = attempt_log_name(job)
            try:
                kept = kept_log(api.get(kube.CONFIGMAPS, namespace, name), run_uid)
            except Exception:  # noqa: BLE001 -- the pod may still have it
                kept = None
            if kept is not None:
                return AttemptLog(kept.text, f"kept after the attempt ({name})", kept.truncated)
        try:
            pod = last_pod(api.list_pods(namespace, f"job-name={job}"))
        except Exception as e:  # noqa: BLE001
            return AttemptLog(None, f"pods of {job} not readable: {why(e)}")
        if pod is None:
            return AttemptLog(None, "no log: the attempt's pod is gone" + (" and none was kept" if finished else ""))
        name = pod["metadata"]["name"]
        node = (pod.get("spec") or {}).get("nodeName") or ""
        if self.logless.quiet(node, self.clock()):
            return AttemptLog(None, f"no log: node {node} gave none lately")
        try:
            text = api.read_log(namespace, name, tail_lines, limit_bytes).decode("utf-8", "replace")
        except Exception as e:  # noqa: BLE001 -- a pod on a fake (kwok) node has no log to read
            self.logless.failed(node, getattr(e, "status", None), self.clock())
            return AttemptLog(None, f"log of pod {name} not readable: {why(e)}")
        return AttemptLog(text, f"pod {name}, at most its last {tail_lines} lines")
