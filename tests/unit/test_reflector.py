"""The reflector's decisions, without a cluster: when it lists, and when a watch resumes from the
last version instead. A fake ``kube`` plays scripted list and watch outcomes on a virtual clock;
the real ``kube.watch`` is checked for how it reports 410 Gone and idle ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from kubetasks import kube
from kubetasks.informer import reflector as reflector_module
from kubetasks.informer.reflector import Reflector, Timing
from kubetasks.informer.store import Store


def obj(name: str, rv: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", "resourceVersion": str(rv)}}


def bookmark(rv: int) -> tuple[str, dict[str, Any]]:
    return "BOOKMARK", {"metadata": {"resourceVersion": str(rv)}}


class Clock:
    """The reflector's ``time``: virtual seconds that the fake's requests advance."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class ScriptOver(BaseException):
    """Not an Exception: the reflector's loop does not catch it."""


class FakeKube:
    """Answers the reflector's lists and watches from a script, one step per request:
    ``("list", items, rv)``, ``("list", error)``, ``("watch", events, took, error_or_None)``.
    Ends the reflector's loop when the script runs out."""

    Gone = kube.Gone
    is_status = staticmethod(kube.is_status)

    def __init__(self, clock: Clock, script: list[tuple[Any, ...]]) -> None:
        self.clock, self.script = clock, list(script)
        self.calls: list[tuple[Any, ...]] = []  # ("list", limit) / ("watch", from_version, timeout_seconds)

    def _next(self, kind: str) -> tuple[Any, ...]:
        if not self.script:
            raise ScriptOver()
        step = self.script.pop(0)
        assert step[0] == kind, f"the reflector made a {kind} where the script has {step}"
        return step

    def list_all(self, resource: kube.Resource, namespace: str | None, selector: str, limit: int,
                 each: Any) -> tuple[list[dict[str, Any]], str]:
        step = self._next("list")
        self.calls.append(("list", limit))
        if isinstance(step[1], Exception):
            raise step[1]
        return [each(item) for item in step[1]], str(step[2])

    def watch(self, resource: kube.Resource, namespace: str | None, selector: str, version: str,
              timeout_seconds: int, idle_seconds: float) -> Any:
        _, events, took, error = self._next("watch")
        self.calls.append(("watch", version, timeout_seconds))
        yield from events
        self.clock.now += took
        if error is not None:
            raise error


TIMING = Timing(relist_seconds=6 * 3600, watch_seconds=300, idle_seconds=150)


def run(script: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch, timing: Timing = TIMING,
        store: Store | None = None) -> tuple[FakeKube, Store, Reflector]:
    """Runs the reflector's thread body on this thread until the script is played out."""
    clock = Clock()
    monkeypatch.setattr(reflector_module, "time", clock)
    api = FakeKube(clock, script)
    store = Store("X") if store is None else store  # an empty Store is falsy
    loop = asyncio.new_event_loop()
    try:
        reflector = Reflector(store, kube.TASKRUNS, "ns", "", loop, timing, api=api)
        reflector.backoff_base = 0.001
        with pytest.raises(ScriptOver):
            reflector._run()
        loop.run_until_complete(asyncio.sleep(0))  # what the thread handed to the loop
    finally:
        loop.close()
    return api, store, reflector


def lists(api: FakeKube) -> list[int]:
    return [c[1] for c in api.calls if c[0] == "list"]


def watched_from(api: FakeKube) -> list[str]:
    return [c[1] for c in api.calls if c[0] == "watch"]


def test_quiet_watches_that_end_or_go_idle_resume_without_a_list(monkeypatch):
    ended = [("watch", [bookmark(10 + i)], 300, None) for i in range(5)]  # the server's timeout, after a bookmark
    idle = [("watch", [], 150, None) for _ in range(3)]  # nothing for idle_seconds: kube.watch ends it
    api, store, reflector = run([("list", [obj("a", 1)], 9), *ended, *idle], monkeypatch)
    assert lists(api) == [reflector_module.PAGE_SIZE]
    assert watched_from(api) == ["9", "10", "11", "12", "13", "14", "14", "14"]
    assert store.keys() == [("ns", "a")]
    assert reflector.lists == 1


def test_each_watch_asks_for_a_jittered_timeout_of_one_to_two_watch_periods(monkeypatch):
    api, _, _ = run([("list", [], 1), *[("watch", [bookmark(2)], 300, None)] * 20], monkeypatch)
    timeouts = [c[2] for c in api.calls if c[0] == "watch"]
    assert all(300 <= t < 600 for t in timeouts) and len(set(timeouts)) > 1


def test_events_reach_the_store_and_the_watch_resumes_after_the_last_one(monkeypatch):
    events = [("ADDED", obj("b", 11)), ("MODIFIED", obj("a", 12))]
    api, store, _ = run([("list", [obj("a", 1)], 10), ("watch", events, 5, None),
                         ("watch", [("DELETED", obj("b", 13))], 5, None)], monkeypatch)
    assert watched_from(api) == ["10", "12"]
    assert store.keys() == [("ns", "a")] and store.get(("ns", "a"))["metadata"]["resourceVersion"] == "12"


def test_listeners_know_when_the_event_they_apply_was_read_and_no_one_else_does(monkeypatch):
    """What the operator's "event seen -> Job POST sent" starts from: the read, not the loop's turn."""
    store = Store("X")
    seen: list[float] = []
    store.listeners.append(lambda old, new: seen.append(reflector_module.seen_at()))
    run([("list", [obj("a", 1)], 10), ("watch", [], 7, None), ("watch", [("ADDED", obj("b", 11))], 5, None)],
        monkeypatch, store=store)
    assert seen == [0.0, 1007.0]  # a list's replace is no event; the event was read at 1007, after the quiet watch
    assert reflector_module.seen_at() == 0.0


@pytest.mark.parametrize("gone", [kube.Gone("too old resource version: 5 (20)"),  # an ERROR event, code 410
                                  ApiException(status=410, reason="Gone")],  # the response's own status
                         ids=["error-event", "http-status"])
def test_a_watch_that_cannot_resume_lists_again_at_once_and_replaces_the_store(monkeypatch, gone):
    api, store, _ = run([("list", [obj("a", 1), obj("b", 2)], 5), ("watch", [], 60, gone),
                         ("list", [obj("b", 20)], 20), ("watch", [bookmark(21)], 300, None)], monkeypatch)
    assert lists(api) == [500, 500]
    assert watched_from(api) == ["5", "20"]
    assert store.keys() == [("ns", "b")], "what vanished while the watch was down is deleted"


def test_a_list_whose_continue_token_expired_is_listed_again_in_one_request(monkeypatch):
    expired = ApiException(status=410, reason="The provided continue parameter is too old")
    api, store, _ = run([("list", expired), ("list", [obj("a", 1)], 7), ("watch", [bookmark(8)], 300, None),
                         ("watch", [], 1, kube.Gone("too old")), ("list", [obj("a", 1)], 30)], monkeypatch)
    assert lists(api) == [500, 0, 500], "unpaged once, as client-go's pager falls back; paged again later"
    assert store.keys() == [("ns", "a")]


def test_a_broken_watch_resumes_from_the_last_version_after_a_pause(monkeypatch):
    broken = urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead")
    api, _, _ = run([("list", [], 3), ("watch", [bookmark(4)], 30, broken), ("watch", [], 1, OSError("refused")),
                     ("watch", [bookmark(5)], 300, None)], monkeypatch)
    assert lists(api) == [500]
    assert watched_from(api) == ["3", "4", "4"]


def test_a_failed_list_is_retried(monkeypatch):
    api, store, _ = run([("list", OSError("refused")), ("list", ApiException(status=503)), ("list", [obj("a", 1)], 2),
                         ("watch", [bookmark(3)], 300, None)], monkeypatch)
    assert lists(api) == [500, 500, 500] and store.keys() == [("ns", "a")]


def test_watches_that_end_at_once_with_nothing_back_off(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(reflector_module.threading.Event, "wait",
                        lambda self, timeout=None: waits.append(timeout or 0.0) or self.is_set())
    api, _, _ = run([("list", [], 3), *[("watch", [], 0, None)] * 4, ("watch", [bookmark(4)], 300, None)],
                    monkeypatch)
    assert lists(api) == [500] and len(waits) == 4 and waits == sorted(waits), "growing pauses, no relist"


def test_the_safety_net_relists_after_its_period_and_no_watch_outlasts_it(monkeypatch):
    monkeypatch.setattr(reflector_module.random, "random", lambda: 0.5)  # relist after 1.5 T, watches of 1.5 W
    timing = Timing(relist_seconds=1000, watch_seconds=300, idle_seconds=150)
    watches = [("watch", [bookmark(10 + i)], 450, None) for i in range(3)]
    api, _, _ = run([("list", [], 9), *watches, ("watch", [bookmark(20)], 150, None), ("list", [], 30),
                     ("watch", [bookmark(31)], 450, None)], monkeypatch, timing)
    assert lists(api) == [500, 500]
    assert [c[2] for c in api.calls if c[0] == "watch"] == [450, 450, 450, 150, 450], "the last asks what is left"


def test_relists_are_spread_across_reflectors(monkeypatch):
    """Each reflector draws its relist time in [T, 2T): kinds started together relist apart."""
    draws = []
    for _ in range(4):
        timing = Timing(relist_seconds=1000, watch_seconds=10_000, idle_seconds=150)
        api, _, _ = run([("list", [], 1), ("watch", [bookmark(2)], 5000, None), ("list", [], 3),
                         ("watch", [bookmark(4)], 1, None)], monkeypatch, timing)
        draws.append(api.calls[1][2])  # the first watch's timeout is what was left until the relist
    assert all(1000 <= d < 2000 for d in draws) and len(set(draws)) > 1


# The real kube.watch: how it reports what the reflector decides on ---------------------------

class Stream:
    def __init__(self, chunks: list[bytes], then: Exception | None = None) -> None:
        self.chunks, self.then = chunks, then

    def stream(self, amt: int, decode_content: bool) -> Any:
        yield from self.chunks
        if self.then:
            raise self.then

    def release_conn(self) -> None:
        pass


class Response:
    def __init__(self, stream: Stream) -> None:
        self.response = stream


def test_kube_watch_reports_410_as_gone_whether_event_or_status(monkeypatch):
    error = b'{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old resource version"}}\n'
    monkeypatch.setattr(kube, "_request", lambda *a, **k: Response(Stream([error])))
    with pytest.raises(kube.Gone):
        list(kube.watch(kube.TASKRUNS, "ns", "", "5", 300))

    def http_410(*args: Any, **kwargs: Any) -> Any:
        raise ApiException(status=410, reason="Gone")

    monkeypatch.setattr(kube, "_request", http_410)
    with pytest.raises(kube.Gone):
        list(kube.watch(kube.TASKRUNS, "ns", "", "5", 300))


def test_kube_watch_ends_quietly_when_idle_and_asks_for_bookmarks_past_the_bookmark_period(monkeypatch):
    asked: dict[str, Any] = {}

    def request(method: str, path: str, query: dict[str, Any], timeout: tuple[float, float], **_: Any) -> Response:
        asked.update(query, read_timeout=timeout[1])
        mark = b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"7"}}}\n'
        return Response(Stream([mark], then=urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")))

    monkeypatch.setattr(kube, "_request", request)
    assert list(kube.watch(kube.TASKRUNS, "ns", "", "5", 300)) == [bookmark(7)]
    assert asked["allowWatchBookmarks"] == "true"
    assert asked["read_timeout"] > 2 * 60, "kube-apiserver bookmarks quiet watches every minute: no reopening each minute"


# The operator's resync: a replay of the stores, spread out -----------------------------------

def test_a_resync_replays_unfinished_runs_and_tasks_spread_over_its_window():
    from kubetasks.controller.operator import Operator

    op = Operator(api=None)
    for store in (op.cache.tasks, op.cache.runs):
        store.listeners.clear()  # only the resync queues keys here
    op.cache.tasks.replace([obj("t1", 1), obj("t2", 2)])
    runs = [dict(obj(f"run-{i}", 10 + i), spec={"taskRef": "t1"}, status={"phase": phase})
            for i, phase in enumerate(["Running", "Queued", "Retrying", "Succeeded", "Failed", "Pending"])]
    op.cache.runs.replace([op.cache.runs.slim(r) for r in runs])

    async def main() -> tuple[tuple[int, int], int, tuple[int, int]]:
        op.resynced(spread=0.3)
        at_once = len(op.run_queue), len(op.task_queue)
        wakeups = len({at for at, _ in op.run_queue._timers.values()})
        await asyncio.sleep(0.4)
        return at_once, wakeups, (len(op.run_queue), len(op.task_queue))

    at_once, wakeups, after = asyncio.run(main())
    assert at_once == (0, 0), "nothing is queued at once"
    assert wakeups == 4, "each key at a time of its own"
    assert after == (4, 2), "within the window: the unfinished runs and every Task, not the finished runs"


def test_a_tasks_own_status_write_does_not_reconcile_it_again_at_once_a_new_spec_does():
    """Runs' phase changes reach their Task batched (one status write per period); the echo of
    that write queued it again at once, and it wrote what had changed since: two writes a period."""
    from kubetasks.controller.operator import Operator

    op = Operator(api=None)
    task = dict(obj("t", 1), spec={"command": ["true"]})
    task["metadata"]["generation"] = 1
    op.cache.tasks.event("ADDED", op.cache.tasks.slim(task))
    assert len(op.task_queue) == 1  # new: reconciled
    op.task_queue._queued.clear()
    written = dict(obj("t", 2), spec=task["spec"], status={"succeeded": 3})
    written["metadata"]["generation"] = 1
    op.cache.tasks.written(written)
    assert len(op.task_queue) == 0
    edited = dict(obj("t", 3), spec={"command": ["false"]}, status={"succeeded": 3})
    edited["metadata"]["generation"] = 2
    op.cache.tasks.event("MODIFIED", op.cache.tasks.slim(edited))
    assert len(op.task_queue) == 1
