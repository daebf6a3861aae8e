"""The run pages' log reads: a finished attempt's log read once (a bounded cache), "no log" believed
for a while only, and nodes whose kubelet gave no log left alone (core.logs.LoglessNodes)."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from kubetasks.core.logs import LOGLESS_NODE_SECONDS, LoglessNodes, kubelet_gave_no_log
from kubetasks.dashboard.logs import NO_LOG_SECONDS, LogReader


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Pods:
    """list_pods, read_log and get as kubetasks.kube answers them: one pod per Job, on node-<job>."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.failing: dict[str, int] = {}  # pod -> status its log read fails with
        self.gone: set[str] = set()  # Jobs without pods

    def get(self, resource: Any, namespace: str, name: str) -> None:
        return None  # no kept log

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        job = selector.removeprefix("job-name=")
        if job in self.gone:
            return []
        return [{"metadata": {"name": f"{job}-pod", "creationTimestamp": "2026-01-01T00:00:00Z"},
                 "spec": {"nodeName": f"node-{job}"}}]

    def read_log(self, namespace: str, pod: str, tail_lines: int, limit_bytes: int) -> bytes:
        self.reads.append(pod)
        if pod in self.failing:
            raise ApiException(status=self.failing[pod])
        return f"log of {pod}\n".encode()


def test_the_rule_for_nodes_without_logs():
    assert kubelet_gave_no_log(500)
    assert not any(kubelet_gave_no_log(s) for s in (None, 403, 404, 429, 503))
    nodes = LoglessNodes()
    nodes.failed("kwok-1", 500, now=10.0)
    nodes.failed("busy", 503, now=10.0)
    nodes.failed("", 500, now=10.0)
    assert nodes.quiet("kwok-1", 11.0) and not nodes.quiet("busy", 11.0) and not nodes.quiet("", 11.0)
    assert not nodes.quiet("kwok-1", 10.0 + LOGLESS_NODE_SECONDS)  # asked again after a while


def test_a_finished_attempts_log_is_read_once_and_a_running_ones_each_time():
    pods, clock = Pods(), Clock()
    reader = LogReader(pods, clock)
    for _ in range(5):
        assert reader.attempt("ns", "uid", "done-1", finished=True).text == "log of done-1-pod\n"
        assert reader.attempt("ns", "uid", "live-2", finished=False).text == "log of live-2-pod\n"
    assert pods.reads.count("done-1-pod") == 1 and pods.reads.count("live-2-pod") == 5


def test_no_log_of_a_finished_attempt_is_believed_for_a_while():
    pods, clock = Pods(), Clock()
    pods.gone.add("done-1")
    reader = LogReader(pods, clock)
    assert reader.attempt("ns", "uid", "done-1", finished=True).text is None
    pods.gone.clear()  # the kept log or the pod turned up after all
    assert reader.attempt("ns", "uid", "done-1", finished=True).text is None
    clock.now += NO_LOG_SECONDS + 1
    assert reader.attempt("ns", "uid", "done-1", finished=True).text == "log of done-1-pod\n"


def test_a_kubelet_that_gave_no_log_is_not_asked_again_for_a_while():
    pods, clock = Pods(), Clock()
    pods.failing["live-1-pod"] = 500
    reader = LogReader(pods, clock)
    for _ in range(10):
        got = reader.attempt("ns", "uid", "live-1", finished=False)
        assert got.text is None
    assert pods.reads == ["live-1-pod"] and "gave none lately" in got.source
    clock.now += LOGLESS_NODE_SECONDS + 1
    reader.attempt("ns", "uid", "live-1", finished=False)
    assert pods.reads == ["live-1-pod", "live-1-pod"]
    pods.failing["live-3-pod"] = 503  # the API server busy: asked again next time
    reader.attempt("ns", "uid", "live-3", finished=False)
    reader.attempt("ns", "uid", "live-3", finished=False)
    assert pods.reads.count("live-3-pod") == 2


def test_the_cache_is_bounded():
    pods, clock = Pods(), Clock()
    reader = LogReader(pods, clock, cached=3)
    for i in range(10):
        reader.attempt("ns", "uid", f"job-{i}", finished=True)
    reader.attempt("ns", "uid", "job-9", finished=True)  # still cached
    reader.attempt("ns", "uid", "job-0", finished=True)  # evicted: read again
    assert len(pods.reads) == 11 and pods.reads[-1] == "job-0-pod"
