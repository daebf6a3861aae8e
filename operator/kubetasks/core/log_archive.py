"""Archiving each attempt's whole log in the object store: when to try an upload again, when to give
up, and whether a run's outcome may be written yet. Pure: times are seconds on one clock.

An upload that the store refuses (down, unreachable, full) is tried again with backoff until
``deadline`` seconds after its first try, then given up for good: the run's outcome is written
with a clear reason, never held forever. A log that cannot be read (the pod gone, a node that
gives no logs) is not the store's fault and waiting would not mend it: given up at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DEFAULT_DEADLINE = 300.0  # seconds (KUBETASKS_STORAGE_UPLOAD_DEADLINE_SECONDS)
FIRST_DELAY, MAX_DELAY = 1.0, 30.0  # backoff between tries: 1, 2, 4 ... 30 s
CONDITION = "LogArchived"  # a run condition, False when a log could not be archived
FAILED = "LogArchiveFailed"  # its reason, and the Warning Event's
# The operator serves an archived log at LOGS_PREFIX<namespace>/<name>/<attempt> (its metrics port, as
# /why, to a caller who may get the run); the blob's size and digest travel in these headers.
LOGS_PREFIX = "/logs/"
SHA256_HEADER = "X-Kubetasks-Sha256"


def logs_path(namespace: str, name: str, attempt: int) -> str:
    return f"{LOGS_PREFIX}{namespace}/{name}/{attempt}"


class State(StrEnum):
    UPLOADING = "Uploading"  # a try is under way or due
    ARCHIVED = "Archived"
    GAVE_UP = "GaveUp"  # failed for good (the store stayed down past the deadline)
    NO_LOG = "NoLog"  # nothing to archive: the log could not be read


@dataclass(frozen=True)
class Upload:
    """What is known of one attempt's upload."""

    first_try: float  # when it began
    failures: int = 0  # store failures so far
    state: State = State.UPLOADING
    error: str = ""  # the last failure, for the reason shown
    last_failure: float | None = None  # when the store last refused
    from_start: bool = False  # archived from the log's first byte (followed from before its container ran)


@dataclass(frozen=True)
class Next:
    give_up: bool
    at: float  # when to try again (give_up: now)


def after_store_failure(upload: Upload, now: float, deadline: float = DEFAULT_DEADLINE) -> Next:
    """After the store refused a try (``upload.failures`` counts it): the next try, with exponential
    backoff, or give up once ``deadline`` seconds have passed since the first. The last try comes
    at the deadline itself, so a store back just in time still gets the log."""
    give_up_at = upload.first_try + deadline
    if now >= give_up_at:
        return Next(True, now)
    delay = min(MAX_DELAY, FIRST_DELAY * 2 ** max(0, upload.failures - 1))
    return Next(False, min(now + delay, give_up_at))


# A finished attempt's Job (and so its pod, and its log) is kept at least MIN_JOB_TTL seconds when
# its log is archived: its follow drains (the kubelet sees an exit within 5 s) or a read after the
# end is made. While the store refuses, its TTL is raised to the upload's deadline + TTL_MARGIN, so
# the last try still finds the log; a Task's longer TTL is never lowered.
MIN_JOB_TTL, TTL_MARGIN = 30, 60


def job_ttl(requested: int | None) -> int | None:
    """A new Job's ttlSecondsAfterFinished when its log is archived (None: kept for ever)."""
    return None if requested is None else max(requested, MIN_JOB_TTL)


def held_job_ttl(current: int | None, deadline: float) -> int | None:
    """The TTL to give a finished Job whose upload the store refused; None: leave it as it is."""
    wanted = int(deadline) + TTL_MARGIN
    return wanted if current is not None and current < wanted else None


def outcome_may_be_written(uploads: list[Upload | None]) -> bool:
    """Whether a run's outcome may be written: every finished attempt's upload has ended, archived or
    given up (None: an attempt with no upload, none to wait for)."""
    return all(u is None or u.state != State.UPLOADING for u in uploads)


def failure_message(attempt: int, upload: Upload, deadline: float) -> str:
    if upload.state == State.GAVE_UP:
        failing = (upload.last_failure or upload.first_try) - upload.first_try
        tries = f"{upload.failures} {'try' if upload.failures == 1 else 'tries'}"
        return (f"the log of attempt {attempt} was not archived: the object store failed for {failing:.0f} s, past "
                f"the limit of {deadline:.0f} s ({tries}): {upload.error}")
    return f"the log of attempt {attempt} was not archived: {upload.error}"
