"""An attempt's log, kept after its Job and pod are gone: the end of it (the last N bytes, which
is where a failure explains itself), in a ConfigMap owned by the run, so it goes with the run.

The log is read with ``tailLines`` and a ``limitBytes`` cap, not with ``limitBytes`` alone: that
keeps the *start* of a log, and a log can be gigabytes. ``tailLines`` makes the kubelet seek back
from the end of the file, so only about the bytes kept cross the network. The number of lines is
a guess (N / MIN_LINE_BYTES), and the cap bounds what a log of long lines costs. When the guess
was wrong, a second read asks for as many lines as N bytes hold, judged by the lines read
(:func:`lines_to_fill`): after a read that hit the cap (it holds the start of the window, not its
end), or one of short lines that filled less than N though the log goes on before them. At most
two reads; one for most logs; one failed read (a pod on a kwok node) and no retry.

What is kept is bounded twice: a small tail per attempt (DEFAULT_KEEP_BYTES: a traceback's
worth), and a byte budget per namespace (DEFAULT_BUDGET_BYTES) over which the oldest kept logs
are deleted (:func:`evictions`). A ConfigMap lives in etcd, whose quota (2 GiB by default) is the
whole cluster's: past it every write fails. Logs of any length belong in an object store.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable
from typing import Any

from kubetasks.api.taskrun import TaskRun
from kubetasks.core.children import controlled_by
from kubetasks.core.naming import LABEL_ATTEMPT, LABEL_MANAGED_BY, MANAGER, attempt_log_name
from kubetasks.core.render import owner_reference

Body = dict[str, Any]

DEFAULT_KEEP_BYTES = 16 * 1024
DEFAULT_BUDGET_BYTES = 64 * 2**20  # per namespace; 0: no budget
MAX_KEEP_BYTES = 900 * 1024  # a ConfigMap holds 1 MiB of data in all
LOG_KEY = "log"
ANNOTATION_ATTEMPT = "kubetasks.io/attempt"
ANNOTATION_POD = "kubetasks.io/pod"
ANNOTATION_TRUNCATED = "kubetasks.io/log-truncated"
ANNOTATION_BYTES = "kubetasks.io/log-bytes"
# Lines asked for: enough to fill N bytes when lines average this long or more. Shorter lines
# leave less than N kept (and say it was truncated); longer ones are cut by the cap below.
MIN_LINE_BYTES = 64
CAP_FACTOR = 8  # a read transfers at most this many times N bytes


def log_window(keep: int) -> tuple[int, int]:
    """(tailLines, limitBytes) of the first read of a log whose last ``keep`` bytes are kept."""
    return keep // MIN_LINE_BYTES + 1, keep * CAP_FACTOR


def read_again(data: bytes, keep: int, lines: int, cap: int) -> bool:
    """Whether a read of ``lines`` lines capped at ``cap`` missed the end of the log (cut off by
    the cap), or left room for more of it (as many lines as asked, fewer bytes than kept)."""
    return len(data) >= cap or (count_lines(data) >= lines and len(data) < keep)


def lines_to_fill(data: bytes, keep: int) -> int:
    """How many lines ``keep`` bytes hold, at the mean length of the lines in ``data``, plus a
    quarter (lines vary; what is read beyond ``keep`` is trimmed)."""
    mean = len(data) / max(1, count_lines(data))
    return max(1, int(keep * 1.25 / mean))


def count_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def keep_tail(data: bytes, keep: int) -> tuple[str, bool]:
    """The end of ``data`` in at most ``keep`` bytes of UTF-8, and whether anything was cut.

    Undecodable bytes become U+FFFD first (a ConfigMap holds text), so the bound holds for what
    is stored. The cut is at a line start when one is in the first half of what fits (a whole
    first line reads better), else at a character start (one long line keeps its end)."""
    encoded = data.decode("utf-8", "replace").encode()
    if len(encoded) <= keep:
        return encoded.decode(), False
    cut = encoded[len(encoded) - keep:]
    newline = cut.find(b"\n")
    if 0 <= newline < len(cut) // 2:
        cut = cut[newline + 1:]
    else:
        start = 0
        while start < len(cut) and cut[start] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            start += 1
        cut = cut[start:]
    return cut.decode(), True


def log_tail(data: bytes, keep: int, lines: int, cap: int) -> tuple[str, bool]:
    """What is kept of a read of ``lines`` lines capped at ``cap`` bytes: (text, truncated).
    Truncated when bytes were cut here, or when the read may not have held the whole log (as
    many lines as asked for, or the cap reached)."""
    text, cut = keep_tail(data, keep)
    return text, cut or len(data) >= cap or count_lines(data) >= lines


# A node whose kubelet the API server could not reach for a log (a kwok node has none, a real one
# may be down) is not asked again for this long: one failed request, not one per attempt or page.
LOGLESS_NODE_SECONDS = 300.0


def kubelet_gave_no_log(status: int | None) -> bool:
    """Whether a failed log read's HTTP status says the node's kubelet gave no log: a 500 from the
    API server's proxy to it. Not its load (429, 503), nor a pod that is gone (404)."""
    return status == 500


KNOWN_NODES = 10_000  # nodes remembered as giving logs: past this, forgotten (a churning cluster's)


class LoglessNodes:
    """Nodes not to ask for a log until a moment (times are the caller's monotonic clock), and
    nodes whose kubelet gave one (no need to learn about them first)."""

    def __init__(self, seconds: float = LOGLESS_NODE_SECONDS) -> None:
        self.seconds = seconds
        self._until: dict[str, float] = {}
        self._gave: set[str] = set()

    def gave_log(self, node: str) -> bool:
        """Whether a log was read from ``node`` since it last failed to give one."""
        return node in self._gave

    def read(self, node: str) -> None:
        """A log was read from ``node``."""
        if len(self._gave) >= KNOWN_NODES:
            self._gave.clear()
        self._gave.add(node)

    def quiet(self, node: str, now: float) -> bool:
        """Whether ``node``'s pods' logs are not to be read now."""
        until = self._until.get(node)
        if until is None:
            return False
        if until <= now:
            self._until.pop(node, None)
            return False
        return True

    def failed(self, node: str, status: int | None, now: float) -> None:
        """A log read from ``node`` failed with ``status``: remember the node when its kubelet gave none."""
        if node and kubelet_gave_no_log(status):
            self._until[node] = now + self.seconds
            self._gave.discard(node)


def render_attempt_log(run: TaskRun, job: Body, attempt: int, pod: str, text: str, truncated: bool) -> Body:
    """The ConfigMap that keeps an attempt's log: named after its Job (:func:`attempt_log_name`),
    labelled as the Job is (run, run UID, task, attempt: listed per run with the run-uid label),
    owned by the run. Immutable: it is a record, written once."""
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": attempt_log_name(job["metadata"]["name"]), "namespace": run.namespace,
            "labels": dict(job["metadata"].get("labels") or {}),
            "annotations": {ANNOTATION_ATTEMPT: str(attempt), ANNOTATION_POD: pod,
                            ANNOTATION_TRUNCATED: "true" if truncated else "false",
                            ANNOTATION_BYTES: str(len(text.encode()))},
            "ownerReferences": [owner_reference(run)],
        },
        "immutable": True,
        "data": {LOG_KEY: text},
    }


@dataclass(frozen=True)
class KeptLog:
    text: str
    truncated: bool
    kept_bytes: int
    pod: str


def kept_log(configmap: Body | None, run_uid: str) -> KeptLog | None:
    """The log kept in ``configmap`` when it is the run's (owned by its UID: a ConfigMap of that
    name left by a deleted run of the same name is not this run's log), else None."""
    if configmap is None or not controlled_by(configmap, run_uid):
        return None
    notes = configmap["metadata"].get("annotations") or {}
    text = (configmap.get("data") or {}).get(LOG_KEY, "")
    try:
        kept = int(notes.get(ANNOTATION_BYTES, ""))
    except ValueError:
        kept = len(text.encode())
    return KeptLog(text, notes.get(ANNOTATION_TRUNCATED) == "true", kept, notes.get(ANNOTATION_POD, ""))


def last_pod(pods: list[Body]) -> Body | None:
    """The pod whose log is the attempt's: the newest, when its Job made several."""
    return max(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]), default=None)


# The budget ------------------------------------------------------------------------------------

# Every kept log has carried its Job's labels since logs were kept, and no other ConfigMap that
# kubetasks makes has an attempt label: this selects them all, those an earlier version kept too.
KEPT_LOG_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER},{LABEL_ATTEMPT}"
_SLIM_META = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "ownerReferences")


def is_kept_log(body: Body) -> bool:
    """Whether ``body`` is selected by KEPT_LOG_SELECTOR."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_MANAGED_BY) == MANAGER and LABEL_ATTEMPT in labels


def slim_kept_log(body: Body) -> Body:
    """What the operator holds of a kept log: its metadata and size (ANNOTATION_BYTES), never its
    text (it lists them as metadata only: kube.CONFIGMAP_METADATA)."""
    meta = body.get("metadata") or {}
    size = (meta.get("annotations") or {}).get(ANNOTATION_BYTES)
    slim = {k: meta[k] for k in _SLIM_META if meta.get(k) is not None}
    return {"metadata": {**slim, "annotations": {ANNOTATION_BYTES: size}} if size is not None else slim}


def kept_size(body: Body) -> int | None:
    """The bytes of log a kept log holds (its ANNOTATION_BYTES, which is what its data weighs);
    None when it does not say, which no log kubetasks kept does: not counted, never evicted."""
    try:
        size = int(((body.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_BYTES, ""))
    except ValueError:
        return None
    return size if size >= 0 else None


def age(body: Body) -> tuple[str, str]:
    """Oldest first: by creation time (RFC 3339 in UTC, seconds: ordered as text), then name."""
    meta = body.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


def evictions(logs: Iterable[Body], budget: int) -> list[Body]:
    """The kept logs of one namespace to delete so that the others hold at most ``budget`` bytes,
    oldest first (:func:`age`): the newest logs are the ones asked for. A budget of 0 is none."""
    sized = sorted(((age(b), size, b) for b in logs if (size := kept_size(b)) is not None), key=lambda t: t[0])
    total = sum(size for _, size, _ in sized)
    evicted: list[Body] = []
    for _, size, body in sized:
        if not budget or total <= budget:
            break
        evicted.append(body)
        total -= size
    return evicted
