"""Flow control, decided: the limits a run is under, and who of the runs waiting for them starts.

A *limit* is a number of slots (a Task's total, one concurrency key's share, a TaskQueue) or a
rate (a throttle: how many starts it allows now). A run starts when every limit it is under has
room. Waiting runs are served in *groups*, one per Task and concurrency key: all the runs of a
group are under the same limits, so only a group's head can start before the rest of it, and a
pass over W waiters looks at the G group heads (a heap), not at every run:

- between groups, the least recently served group first (a noisy key cannot starve the others);
  a group never served yet comes before any that has been;
- within a group, by ``created − priority`` (priority is a time offset: ageing for free), then
  creation time, then uid (never the name);
- a head that cannot start blocks its group only (Kueue's BestEffortFIFO); under a limit with
  ``strict`` order it blocks every later run under that limit too (StrictFIFO).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from kubetasks.api.durations import parse_duration
from kubetasks.api.flow import TaskQueueSpec
from kubetasks.api.task import TaskSpec

Order = tuple[float, float, str]


@dataclass(frozen=True)
class Limit:
    id: str  # Task/NAME, Task/NAME/key/KEY, TaskQueue/NAME, Throttle/NAME[/key/KEY]
    reason: str  # what a run it holds back waits for: TaskLimit | KeyLimit | QueueLimit | Throttled
    capacity: int  # slots; for a throttle, filled in by the caller with the starts it allows now
    strict: bool = False
    hold_across_waits: bool = False  # a started run holds its slot until it ends, through waits
    throttle: Throttle | None = None

    @property
    def is_rate(self) -> bool:
        return self.throttle is not None


@dataclass(frozen=True)
class Throttle:
    """GCRA (Inngest's throttle): a start every ``interval`` seconds on average, ``burst`` at once."""
    interval: float  # period / limit
    burst: int
    period: float
    task: str = ""  # whose starts it counts: the Task's runs,
    key: str | None = None  # or only those of this concurrency key (perKey)


@dataclass(frozen=True)
class Waiter:
    uid: str
    name: str
    order: Order
    group: str  # Task and concurrency key: the runs served together
    limits: tuple[str, ...]


@dataclass
class Pass:
    """One admission pass: the runs that may start now, in order, and what holds back the others."""
    admitted: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)  # uid -> id of the limit holding it back
    served: dict[str, int] = field(default_factory=dict)  # group -> its turn, as it would be after


def order_of(created: datetime | None, priority: int, uid: str) -> Order:
    """Queue order: created − priority, then created, then uid."""
    at = created.timestamp() if created else 0.0
    return at - priority, at, uid


def group_of(namespace: str, task: str, key: str | None) -> str:
    return f"{namespace}/{task}/{key or ''}"


def domain_of(namespace: str, task: str, spec: TaskSpec) -> str:
    """The runs whose admissions can affect each other: a Task's, or all those of the Tasks that
    share its TaskQueue."""
    return f"{namespace}/queue/{spec.queue}" if spec.queue else f"{namespace}/task/{task}"


def limits_for(task: str, spec: TaskSpec, key: str | None, queue: TaskQueueSpec | None) -> list[Limit]:
    """The limits a run of ``task`` with concurrency ``key`` is under. A Task that names a TaskQueue
    that does not exist holds its runs (capacity 0: the queue's absence is what they wait for)."""
    limits: list[Limit] = []
    concurrency = spec.concurrency
    if concurrency and concurrency.limit:
        limits.append(Limit(f"Task/{task}", "TaskLimit", concurrency.limit, concurrency.strict_order,
                            concurrency.hold_across_waits))
    if concurrency and concurrency.per_key:
        limits.append(Limit(f"Task/{task}/key/{key or ''}", "KeyLimit", concurrency.per_key,
                            concurrency.strict_order, concurrency.hold_across_waits))
    if spec.queue:
        limits.append(Limit(f"TaskQueue/{spec.queue}", "QueueLimit", queue.limit if queue else 0,
                            bool(queue and queue.strict_order)))
    if spec.throttle:
        t = spec.throttle
        period = parse_duration(t.period).total_seconds()
        name = f"Throttle/{task}/key/{key or ''}" if t.per_key else f"Throttle/{task}"
        limits.append(Limit(name, "Throttled", 0, throttle=Throttle(period / t.limit, t.burst, period, task,
                                                                    (key or "") if t.per_key else None)))
    return limits


def throttle_room(starts: Iterable[float], now: float, throttle: Throttle) -> tuple[int, float]:
    """(starts the throttle allows at ``now``, when it allows the next one after those), by GCRA
    over the starts it has seen (seconds since the epoch). The theoretical arrival time advances
    ``interval`` per start; a start conforms when ``now >= tat - (burst - 1) * interval``."""
    tolerance = (throttle.burst - 1) * throttle.interval
    tat = -math.inf
    for at in sorted(starts):
        tat = max(tat, at) + throttle.interval
    room = 0
    while room < throttle.burst and now >= tat - tolerance:
        room += 1
        tat = max(tat, now) + throttle.interval
    return room, tat - tolerance


def admission_pass(limits: Mapping[str, Limit], used: Mapping[str, int], groups: Mapping[str, Sequence[Waiter]],
                   served: Mapping[str, int], turn: int, until: str | None = None,
                   held: Mapping[str, frozenset[str]] | None = None) -> Pass:
    """Who of the waiting runs starts now, given the slots ``used`` per limit (a rate limit's
    capacity is what it allows now). ``groups`` are sorted by order; ``served`` tells each group's
    last turn (``turn`` is the next). ``held``: the limits a waiter holds already (through a wait,
    under holdAcrossWaits), which it needs no room in. Stops once ``until`` (a uid) is decided."""
    free = {lid: limit.capacity - used.get(lid, 0) for lid, limit in limits.items()}
    out = Pass(served=dict(served))
    stopped: dict[str, str] = {}  # strict limits a blocked head holds back -> that head's blocker
    heap = [(out.served.get(g, -1), runs[0].order, g, 0) for g, runs in groups.items() if runs]
    heapq.heapify(heap)
    while heap:
        _, _, group, index = heapq.heappop(heap)
        runs = groups[group]
        head = runs[index]
        holds = (held or {}).get(head.uid, frozenset())
        needs = [lid for lid in head.limits if lid not in holds]
        # A strict limit's line stops behind a blocked run, except for a run that holds what blocks
        # it (a lock kept across a wait): the blocked run waits for that one, which must pass.
        blocker = next((stopped[lid] for lid in needs if lid in stopped and stopped[lid] not in holds), None) or \
            next((lid for lid in needs if free.get(lid, 0) <= 0), None)
        if blocker is not None:
            after = None  # the next in the group that holds the blocker (across a wait): not held back by it
            for i in range(index, len(runs)):  # the same limits hold back the rest of the group
                if i > index and blocker in (held or {}).get(runs[i].uid, ()):
                    after = i
                    break
                out.blocked[runs[i].uid] = blocker
            if after is not None:
                heapq.heappush(heap, (out.served.get(group, -1), runs[after].order, group, after))
            for lid in head.limits:
                if limits[lid].strict:
                    stopped.setdefault(lid, blocker)
            if until is not None and until in out.blocked:
                return out
            continue
        for lid in needs:
            free[lid] -= 1
        out.admitted.append(head.uid)
        out.served[group] = turn
        turn += 1
        if head.uid == until:
            return out
        if index + 1 < len(runs):
            heapq.heappush(heap, (turn - 1, runs[index + 1].order, group, index + 1))
    return out
