"""Flow control, carried out: who holds the slots of each limit, who waits for them, and who is
let start (core.flow decides).

- A slot is held by a run's attempt that has a Job (unfinished, not being deleted) or one this
  operator is creating (an expectation, taken synchronously with the decision to start it: two
  reconciles cannot both take the last slot, and no lock is held across API calls). Under
  ``holdAcrossWaits`` a started run holds it until it ends. The holders are derived from the
  stores on every change (and so on every relist), never from a status alone: a run whose
  status write failed after its Job was created still holds its slot.
- The waiters of each *domain* (a Task, or the Tasks sharing a TaskQueue) are kept sorted per
  group (core.flow); a change that frees a slot, or takes a waiter away, runs one pass and wakes
  the runs it lets start: no waiter is stranded until a resync.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from kubetasks.api.durations import parse_duration
from kubetasks.api.flow import TaskQueueSpec, WaitingFor
from kubetasks.api.task import TaskSpec
from kubetasks.api.taskrun import Phase
from kubetasks.api.times import parse_time
from kubetasks.controller import metrics
from kubetasks.controller.cache import Body, Cache, Key, key_of, uid_of
from kubetasks.core.children import POD_ENDED, controller_uid, job_finished, pod_turned, pods_ended
from kubetasks.core.flow import Limit, Pass, Waiter, admission_pass, domain_of, group_of, limits_for, order_of, throttle_room
from kubetasks.core.wakeups import task_spec_changed, unfinished
from kubetasks.core.why import slot_eta

log = logging.getLogger(__name__)
SLOT_REASONS = ("TaskLimit", "KeyLimit", "QueueLimit", "Throttled")
RELEASES_KEPT = 50  # per limit: the service rate an ETA is told from


@dataclass(frozen=True)
class Blocked:
    """Why a run may not start now: what its status says, and when to look again (a throttle)."""
    waiting_for: WaitingFor
    message: str
    until: datetime | None = None


def _spec(body: Body) -> dict[str, Any]:
    return body.get("spec") or {}


def _status(body: Body) -> dict[str, Any]:
    return body.get("status") or {}


def _created(body: Body) -> datetime | None:
    try:
        return parse_time(body["metadata"].get("creationTimestamp"))
    except ValueError:
        return None


def _priority(body: Body) -> int:
    value = _spec(body).get("priority")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _not_before(body: Body) -> datetime | None:
    spec = _spec(body)
    try:
        if spec.get("notBefore"):
            return parse_time(spec["notBefore"])
        if spec.get("delay"):
            created = _created(body)
            return created + parse_duration(spec["delay"]) if created else None
    except (ValueError, OverflowError):  # not a time (the reconciler says so), or past any date: not yet
        return datetime.max.replace(tzinfo=timezone.utc)
    return None


class FlowControl:
    def __init__(self, cache: Cache, wake: Callable[[Key], None] = lambda key: None) -> None:
        self.cache = cache
        self.wake = wake  # queues a run's reconcile (set by the operator)
        self._specs: dict[Key, tuple[str, TaskSpec | None]] = {}  # Task -> (resourceVersion, parsed spec)
        self._limits: dict[str, Limit] = {}  # namespaced limit id -> the limit as last seen
        self._holding: dict[str, set[str]] = defaultdict(set)  # namespaced limit id -> uids of its holders
        self._held: dict[str, set[str]] = {}  # uid -> the limits it holds a slot of
        self._waiting: dict[str, dict[str, list[Waiter]]] = defaultdict(dict)  # domain -> group -> sorted
        self._waiter: dict[str, tuple[str, Waiter]] = {}  # uid -> (domain, its entry)
        self._served: dict[str, int] = {}  # group -> its last turn (least recently served first)
        self._turn = 0
        self._starts: dict[str, deque[float]] = {}  # namespaced throttle id -> first starts (epoch seconds)
        # Run uid -> (its throttles, when it was let start): a first start decided, its Job not created yet
        self._starting: dict[str, tuple[tuple[str, ...], float]] = {}
        self._releases: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=RELEASES_KEPT))
        cache.runs.listeners.append(self._run_changed)
        cache.jobs.listeners.append(self._job_changed)
        cache.job_pods.listeners.append(self._pod_changed)
        cache.tasks.listeners.append(self._task_changed)
        cache.queues.listeners.append(self._queue_changed)

    # What a run is under -----------------------------------------------------------------------
    def task_spec(self, namespace: str, task: str) -> TaskSpec | None:
        body = self.cache.tasks.get((namespace, task))
        if body is None:
            return None
        version = str(body["metadata"].get("resourceVersion", ""))
        known = self._specs.get((namespace, task))
        if known is None or known[0] != version:
            try:
                spec: TaskSpec | None = TaskSpec.model_validate(_spec(body))
            except ValidationError:
                spec = None
            known = self._specs[(namespace, task)] = (version, spec)
        return known[1]

    def queue_spec(self, namespace: str, name: str) -> TaskQueueSpec | None:
        """The TaskQueue's spec as the store has it; None when it does not exist (or is being deleted)."""
        body = self.cache.queues.get((namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        try:
            return TaskQueueSpec.model_validate(_spec(body))
        except ValidationError:
            return None

    def limits_of(self, body: Body) -> tuple[str, dict[str, Limit]]:
        """(its domain, its limits by namespaced id); no limits when its Task has none."""
        ns, task = body["metadata"].get("namespace", ""), _spec(body).get("taskRef", "")
        spec = self.task_spec(ns, task)
        if spec is None:
            return "", {}
        queue = self.queue_spec(ns, spec.queue) if spec.queue else None
        limits = {f"{ns}/{limit.id}": limit for limit in limits_for(task, spec, _spec(body).get("concurrencyKey"), queue)}
        self._limits.update(limits)
        return domain_of(ns, task, spec), limits

    # Holders -----------------------------------------------------------------------------------
    def _holds(self, body: Body | None, limit: Limit) -> bool:
        if body is None or not unfinished(body) or body["metadata"].get("deletionTimestamp") or limit.is_rate:
            return False
        uid = uid_of(body) or ""
        if self.cache.expected_attempts(uid):
            return True
        if any(self._job_runs(j) for j in self.cache.jobs_of_run(uid)):
            return True
        # Held from the first start: known from its Jobs (one finished, or gone), not from its
        # status alone, which a lost write leaves saying it never started.
        return limit.hold_across_waits and (int(_status(body).get("attempt") or 0) > 0
                                            or bool(self.cache.jobs_of_run(uid) or self.cache.gone.get(uid)))

    def _job_runs(self, job: Body) -> bool:
        """The Job's attempt still uses its slot: not finished, not being deleted, and its pod not
        ended (with backoffLimit 0 an ended pod ends the Job, but the Job controller says so up to
        a second later: its sync batches pods' updates)."""
        if job_finished(job) or job["metadata"].get("deletionTimestamp"):
            return False
        pods = self.cache.pods_of(job)
        return not pods_ended(pods)

    def _refresh(self, body: Body | None, uid: str) -> bool:
        """Brings the run's slots and its place in line up to date; True when it gave a slot up
        or left the line (someone else may start now)."""
        limits = self.limits_of(body)[1] if body is not None else {}
        holding = {lid for lid, limit in limits.items() if self._holds(body, limit)}
        before = self._held.get(uid, set())
        if body is None or not unfinished(body):
            self._starting.pop(uid, None)
        for lid in before - holding:
            self._holding[lid].discard(uid)
            self._releases[lid].append(time.time())
        for lid in holding - before:
            self._holding[lid].add(uid)
        if holding:
            self._held[uid] = holding
        else:
            self._held.pop(uid, None)
        waits = body is not None and bool(limits) and not holding and self._ready(body)
        left = False if waits else self._leave(uid)
        if waits and uid not in self._waiter:
            self._enter(body)  # type: ignore[arg-type]
        return bool(before - holding) or left

    def _ready(self, body: Body) -> bool:
        """Whether the run's status or spec says it waits to start (a run the reconciler found
        blocked says so in waitingFor; a new run is ready once its delay is over)."""
        status = _status(body)
        if not unfinished(body) or _spec(body).get("cancel") or body["metadata"].get("deletionTimestamp"):
            return False
        if self.cache.expected_attempts(uid_of(body) or ""):
            return False  # let start: its Job is being created (its status does not say so yet)
        if ((status.get("waitingFor") or {}).get("reason")) in SLOT_REASONS:
            return True
        if int(status.get("attempt") or 0) or status.get("phase", Phase.PENDING) not in (Phase.PENDING, Phase.QUEUED):
            return False
        start = _not_before(body)
        return start is None or start <= datetime.now(timezone.utc)

    # The line ----------------------------------------------------------------------------------
    def _enter(self, body: Body) -> None:
        uid = uid_of(body) or ""
        domain, limits = self.limits_of(body)
        if not limits:
            return
        ns, spec = body["metadata"].get("namespace", ""), _spec(body)
        waiter = Waiter(uid, body["metadata"].get("name", ""), order_of(_created(body), _priority(body), uid),
                        group_of(ns, spec.get("taskRef", ""), spec.get("concurrencyKey")), tuple(limits))
        line = self._waiting[domain].setdefault(waiter.group, [])
        bisect.insort(line, waiter, key=lambda w: w.order)
        self._waiter[uid] = (domain, waiter)

    def _leave(self, uid: str) -> bool:
        entry = self._waiter.pop(uid, None)
        if entry is None:
            return False
        domain, waiter = entry
        line = self._waiting[domain].get(waiter.group, [])
        if waiter in line:
            line.remove(waiter)
        if not line:
            self._waiting[domain].pop(waiter.group, None)
        return True

    # Deciding ----------------------------------------------------------------------------------
    def _used(self, lid: str) -> int:
        """Holders of the limit, each checked again: one a missed event left there is let go
        (and counted: a leak repaired)."""
        holders = self._holding.get(lid, set())
        limit = self._limits[lid]
        for uid in list(holders):
            if not self._holds(self.cache.run_by_uid(uid), limit):
                holders.discard(uid)
                self._held.get(uid, set()).discard(lid)
                metrics.SLOT_LEAKS_REPAIRED.labels(limit.reason).inc()
        return len(holders)

    def _pass(self, domain: str, until: str | None = None, now: float | None = None) -> tuple[Pass, dict[str, Limit]]:
        """One admission pass over the domain's line; and its limits, a throttle's with the room it has now."""
        groups = self._waiting.get(domain, {})
        lids = {lid for line in groups.values() for lid in line[0].limits}  # a group's runs share its limits
        now = time.time() if now is None else now
        limits: dict[str, Limit] = {}
        for lid in lids:
            limit = self._limits[lid]
            if limit.throttle is not None:
                room, _ = throttle_room(self._throttle_starts(lid), now, limit.throttle)
                limit = Limit(limit.id, limit.reason, room, limit.strict, throttle=limit.throttle)
            limits[lid] = limit
        used = {lid: self._used(lid) for lid in lids if limits[lid].throttle is None}
        # Waiters that hold some of their slots across a wait (holdAcrossWaits): few, of all holders.
        held = {uid: frozenset(taken) for uid, taken in self._held.items() if uid in self._waiter}
        return admission_pass(limits, used, groups, self._served, self._turn, until, held), limits

    def try_start(self, body: Body, attempt: int) -> Blocked | None:
        """None when the run may start ``attempt`` now: it then holds its slots (an expectation
        of its Job, dropped by :meth:`release` if the Job is not created). Else why it waits."""
        domain, limits = self.limits_of(body)
        uid = uid_of(body) or ""
        if attempt > 1:  # a throttle counts first starts only
            limits = {lid: limit for lid, limit in limits.items() if limit.throttle is None}
        if not limits:
            return None
        if all(limit.throttle is None and uid in self._holding.get(lid, ()) for lid, limit in limits.items()):
            self._take(body, uid, attempt)  # it holds them all already (holdAcrossWaits, or taken before)
            return None
        if uid not in self._waiter:
            self._enter(body)
        decided, shown = self._pass(domain, until=uid)
        if uid in decided.admitted:
            self._take(body, uid, attempt)
            return None
        lid = decided.blocked.get(uid) or next(iter(limits))
        return self._blocked(lid, shown.get(lid) or self._limits[lid])

    def _take(self, body: Body, uid: str, attempt: int) -> None:
        """The run starts ``attempt``: it holds its slots from now (an expectation of its Job)."""
        self.cache.expect(uid, attempt)
        if uid in self._waiter:
            group = self._waiter[uid][1].group
            self._served[group] = self._turn
            self._turn += 1
        throttles = tuple(lid for lid, limit in self.limits_of(body)[1].items() if limit.throttle is not None)
        if throttles and attempt == 1:  # counted from now; its Job's creation is its start (started())
            self._starting[uid] = (throttles, time.time())
        self._refresh(body, uid)

    def started(self, uid: str) -> None:
        """The run's first Job is created: that is when its throttles count it as started. Counted
        from the decision instead, a slow create (tens to hundreds of milliseconds) would let the
        next Job follow it sooner than the rate allows."""
        entry = self._starting.pop(uid, None)
        if entry is not None:
            now = time.time()
            for lid in entry[0]:
                self._starts_of(lid).append(now)

    def release(self, body: Body, attempt: int) -> None:
        """The run did not create the Job it was let start for: its slot is free again."""
        uid = uid_of(body) or ""
        self._starting.pop(uid, None)  # not started: its throttles do not count it
        expected = self.cache.expected.get(uid)
        if expected is not None:
            expected.pop(attempt, None)
            if not expected:
                del self.cache.expected[uid]
        current = self.cache.runs.get(key_of(body))
        if self._refresh(current if current is not None and uid_of(current) == uid else None, uid):
            self._wake_domain(self.limits_of(body)[0])

    def _blocked(self, lid: str, limit: Limit) -> Blocked:
        """Why a run waits, in words that change only with the reason: its status is written when
        the reason changes, never per holder or per window (Kueue's lesson). Who holds the slots,
        the position and the next window are live, from `kubetasks why` (explain)."""
        name = limit.id
        if limit.throttle is not None:
            _, next_at = throttle_room(self._throttle_starts(lid), time.time(), limit.throttle)
            per = limit.throttle.period
            return Blocked(WaitingFor(reason="Throttled", limit=name),
                           f"throttled by {name}: {round(per / limit.throttle.interval)} starts per {per:g}s "
                           f"(`kubetasks why` shows the next start)", datetime.fromtimestamp(next_at, timezone.utc))
        if limit.capacity == 0 and limit.reason == "QueueLimit":
            message = f"waiting for {name}, which does not exist"
        else:
            message = (f"waiting for a slot of {name} ({limit.capacity} at once; "
                       f"`kubetasks why` shows who holds them and the position)")
        return Blocked(WaitingFor(reason=limit.reason, limit=name), message)  # type: ignore[arg-type]

    def _throttle_starts(self, lid: str) -> list[float]:
        """The throttle's recent first starts, with those decided whose Jobs are being created."""
        return [*self._starts_of(lid), *(at for lids, at in self._starting.values() if lid in lids)]

    def _starts_of(self, lid: str) -> deque[float]:
        """The throttle's recent first starts; on first use after a start, read from the runs'
        start times (rounded up: after a restart it may start late, never early)."""
        starts = self._starts.get(lid)
        limit = self._limits[lid]
        assert limit.throttle is not None
        horizon = time.time() - 2 * (limit.throttle.period + limit.throttle.burst * limit.throttle.interval)
        if starts is None:
            ns, key = lid.split("/", 1)[0], limit.throttle.key
            seen = []
            for run in self.cache.runs_of_task(ns, limit.throttle.task):
                if key is not None and (_spec(run).get("concurrencyKey") or "") != key:
                    continue
                try:
                    at = parse_time(_status(run).get("startTime"))
                except ValueError:
                    at = None
                if at is not None and at.timestamp() + 1 > horizon:
                    seen.append(at.timestamp() + 1)
            starts = self._starts[lid] = deque(sorted(seen))
        while starts and starts[0] < horizon:
            starts.popleft()
        return starts

    # Waking ------------------------------------------------------------------------------------
    def _wake_domain(self, domain: str) -> None:
        if not domain or not self._waiting.get(domain):
            return
        decided, _ = self._pass(domain)
        for uid in decided.admitted:
            body = self.cache.run_by_uid(uid)
            if body is not None:
                self.wake(key_of(body))

    def _run_changed(self, old: Body | None, new: Body | None) -> None:
        body = new if new is not None else old
        assert body is not None
        uid = uid_of(body) or ""
        if self._refresh(new, uid):
            self._wake_domain(self.limits_of(body)[0])

    def _job_changed(self, old: Body | None, new: Body | None) -> None:
        owner = controller_uid(new or old or {})
        if old is None and owner in self._starting:  # its create's answer was lost: its Job says it started
            self.started(owner)
        run = self.cache.run_by_uid(owner) if owner else None
        if run is not None and self._refresh(run, owner or ""):
            self._wake_domain(self.limits_of(run)[0])

    def _pod_changed(self, old: Body | None, new: Body | None) -> None:
        if not pod_turned(old, new, POD_ENDED):
            return  # only a pod's end can end its attempt's hold before its Job says so
        job = self.cache.job_of(new or {})
        if job is not None:
            self._job_changed(None, job)

    def _task_changed(self, old: Body | None, new: Body | None) -> None:
        if not task_spec_changed(old, new):
            return  # its status written
        ns, name = key_of(new or old or {})
        self._specs.pop((ns, name), None)
        runs = [r for r in self.cache.runs_of_task(ns, name) if unfinished(r)]
        for run in runs:  # its limits may be others now
            self._leave(uid_of(run) or "")
            self._refresh(run, uid_of(run) or "")
        if runs:
            self._wake_domain(self.limits_of(runs[0])[0])

    def _queue_changed(self, old: Body | None, new: Body | None) -> None:
        if not task_spec_changed(old, new):
            return
        ns, name = key_of(new or old or {})
        for (task_ns, task), (_, spec) in list(self._specs.items()):
            if task_ns == ns and spec is not None and spec.queue == name:
                self._task_changed(None, self.cache.tasks.get((ns, task)))

    # Telling -----------------------------------------------------------------------------------
    def holders(self, namespace: str, limit_id: str) -> list[str]:
        """The uids holding the limit's slots (Task and TaskQueue status list them)."""
        lid = f"{namespace}/{limit_id}"
        if lid in self._limits:
            self._used(lid)
        return sorted(self._holding.get(lid, ()))

    def waiting(self, namespace: str, limit_id: str) -> int:
        lid = f"{namespace}/{limit_id}"
        return sum(1 for _, waiter in self._waiter.values() if lid in waiter.limits)

    def waits(self, uid: str) -> bool:
        """Whether the run waits in line for a slot now."""
        return uid in self._waiter

    def _rate(self, lid: str) -> float | None:
        """Slots the limit has given up per second lately (its service rate), or None."""
        releases = self._releases.get(lid)
        if not releases or len(releases) < 2 or releases[-1] <= releases[0]:
            return None
        return (len(releases) - 1) / (releases[-1] - releases[0])

    def explain(self, body: Body) -> dict[str, Any]:
        """Why the run waits, live: per limit, who holds its slots, the run's place in its line,
        the next throttle window, and an ETA from the limit's observed service rate."""
        domain, limits = self.limits_of(body)
        uid, now = uid_of(body) or "", time.time()
        ns = body["metadata"].get("namespace", "")
        mine = self._waiter.get(uid)
        entries, etas = [], []
        for lid, limit in limits.items():
            line = sorted((w for _, w in self._waiter.values() if lid in w.limits), key=lambda w: w.order)
            ahead = next((i for i, w in enumerate(line) if w.uid == uid), None)
            entry: dict[str, Any] = {"limit": limit.id, "reason": limit.reason, "waiting": len(line),
                                     "position": None if ahead is None else ahead + 1}
            eta: float | None = None
            if limit.throttle is not None:
                room, next_at = throttle_room(self._throttle_starts(lid), now, limit.throttle)
                entry.update(startsPerPeriod=round(limit.throttle.period / limit.throttle.interval),
                             periodSeconds=limit.throttle.period, room=room,
                             nextStartAt=datetime.fromtimestamp(max(next_at, now), timezone.utc).isoformat(timespec="seconds"))
                if ahead is not None:
                    eta = 0.0 if ahead < room else max(next_at - now, 0.0) + (ahead - room) * limit.throttle.interval
            else:
                holders = self.holders(ns, limit.id)
                rate = self._rate(lid)
                entry.update(capacity=limit.capacity, used=len(holders), servicePerSecond=rate,
                             holders=[{"run": key_of(b)[1], "uid": u} for u in holders
                                      if (b := self.cache.run_by_uid(u)) is not None])
                free = limit.capacity - len(holders)
                if ahead is not None:
                    last = self._releases[lid][-1] if self._releases.get(lid) else now
                    eta = slot_eta(ahead, free, rate, now - last)
            entry["etaSeconds"] = None if eta is None else round(eta, 1)
            etas.append(eta)
            entries.append(entry)
        known = [e for e in etas if e is not None]
        return {"run": body["metadata"].get("name"), "namespace": ns, "waiting": mine is not None,
                "waitingFor": _status(body).get("waitingFor"), "domain": domain, "limits": entries,
                "etaSeconds": round(max(known), 1) if mine is not None and known and len(known) == len(etas) else None}
