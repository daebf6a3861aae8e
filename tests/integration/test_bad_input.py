"""Hostile and broken input (issue 11): every case is stopped where it should be, and the operator
neither restarts nor logs a traceback meanwhile.

The cases are in ``tests/data/bad/`` (see its README). All are created in one namespace at once,
then one loop polls the namespace until each case has settled or the deadline passes; each test
then asserts on what its case came to. Cases marked ``late`` (hostile to the operator itself: a
catastrophic regex, a payload nested 5,000 deep) are applied afterwards, one at a time.

Set ``KUBETASKS_BAD_INPUT_REPORT=<path>`` to get the count of cases by outcome (admission,
condition, documented, hang, misbehave, crash) as JSON.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import threading
import time
import unicodedata
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import (FINISHED_PHASES, KWOK_PLACEMENT, REPO, VERSIONS, get, kubectl, kubectl_run, label,
                            wait_until)

pytestmark = pytest.mark.cluster

DATA = Path(__file__).resolve().parents[1] / "data" / "bad"
IMAGE = VERSIONS["PYTHON_IMAGE"]
MAIN_DEADLINE = 100.0  # the cron case waits for a minute's tick
LATE_DEADLINE = 45.0
GROUP = "kubetasks.io/v1alpha1"


def _name(n: int) -> str:
    return ("bad-" + "x" * n)[:n - 2] + "-1" if n > 4 else "x" * n


PLACEHOLDERS = {"${IMAGE}": IMAGE, "${N253}": _name(253), "${N254}": _name(254), "${N64}": _name(64),
                "${IMAGE_10K}": "localhost/" + "a" * 10_240 + ":1", "${N300_IMAGE}": "a" * 300 + ":1",
                "${N40000}": "x" * 40_000}


class RefListener:
    """An HTTP server on 127.0.0.1 that remote ``$ref``s point at: it must never be asked."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                hits.append(self.path)
                body = b'{"type": "object", "defs": {"x": {"type": "integer"}}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/schema.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def load_cases(ref_url: str) -> list[dict[str, Any]]:
    cases = []
    for path in sorted(DATA.glob("*.yaml")):
        text = path.read_text()
        for key, value in {**PLACEHOLDERS, "${REF}": ref_url}.items():
            text = text.replace(key, value)
        for case in yaml.safe_load(text):
            case["file"] = path.name
            cases.append(case)
    return cases


CASES = load_cases("http://127.0.0.1:1/schema.json")  # for the test ids; the fixture loads its own


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386): ``None`` removes a key."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def base_task(real: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"image": IMAGE, "imagePullPolicy": "Never", "command": ["python3", "-c", "pass"],
                            "machine": {"preset": "micro"}, "retry": {"maxAttempts": 1}}
    return spec if real else {**spec, **copy.deepcopy(KWOK_PLACEMENT)}


DEEP = "__deep_payload__"


def deep_text(depth: int) -> str:
    """JSON nested ``depth`` objects deep, written without recursion (json.dumps would recurse)."""
    return '{"a":' * depth + "1" + "}" * depth


def manifests(case: dict[str, Any]) -> list[dict[str, Any]]:
    if "manifests" in case:
        return [{"apiVersion": GROUP, **m} for m in case["manifests"]]
    docs = []
    if case.get("task") != "none":
        spec = merge(base_task(bool(case.get("real"))), case.get("task") or {})
        docs.append({"apiVersion": GROUP, "kind": "Task", "metadata": {"name": case["id"]}, "spec": spec})
    if case.get("run") != "none":
        spec = merge({"taskRef": case["id"]}, case.get("run") or {})
        gen = case.get("gen") or {}
        if "payload_depth" in gen:
            spec["payload"] = DEEP  # replaced by the text of the payload when sent: see create()
        if "payload_bytes" in gen:
            spec["payload"] = {"blob": "x" * gen["payload_bytes"]}
        if "payload_key" in gen:
            spec["payload"] = {gen["payload_key"]: 1}
        docs.append({"apiVersion": GROUP, "kind": "TaskRun", "metadata": {"name": case["id"]}, "spec": spec})
    return docs


@dataclass
class Result:
    case: dict[str, Any]
    refused: str | None = None  # the API server's message
    updated: bool | None = None  # whether the update was accepted
    created_at: float = 0.0
    settled_at: float | None = None
    run: dict[str, Any] | None = None
    task: dict[str, Any] | None = None
    cron_runs: list[str] = field(default_factory=list)
    outcome: str = ""  # admission, condition, documented, hang, misbehave, crash
    survived: bool | None = None  # late cases: the operator was alive after it

    @property
    def expect(self) -> dict[str, Any]:
        return self.case["expect"]

    @property
    def run_name(self) -> str:
        if "run_name" in self.case:
            return self.case["run_name"]
        runs = [m for m in manifests(self.case) if m["kind"] == "TaskRun"]
        return runs[-1]["metadata"]["name"] if runs else ""

    @property
    def task_name(self) -> str:
        tasks = [m for m in manifests(self.case) if m["kind"] == "Task"]
        return tasks[0]["metadata"]["name"] if tasks else ""

    def status(self) -> dict[str, Any]:
        return (self.run or {}).get("status") or {}

    def reason(self) -> str | None:
        cond = next((c for c in self.status().get("conditions") or [] if c.get("type") == "Succeeded"), None)
        return cond.get("reason") if cond else None

    def ready(self) -> dict[str, Any] | None:
        conds = ((self.task or {}).get("status") or {}).get("conditions") or []
        return next((c for c in conds if c.get("type") == "Ready"), None)

    def matches(self) -> bool:
        """Whether the case ended where it should have been stopped."""
        e = self.expect
        if "refused" in e:
            return (self.refused is not None and all(t in self.refused for t in e["refused"])
                    and not any(t in self.refused for t in e.get("never", [])))
        if self.refused is not None:
            return False
        if "cron_run_of" in e:
            return bool(self.cron_runs)
        if "ready" in e:
            ready = self.ready()
            if not ready or ready.get("status") != "False" or ready.get("reason") != e["ready"]:
                return False
        status = self.status()
        if "phase" in e:
            if status.get("phase") != e["phase"]:
                return False
            if e.get("reason") not in ("*", self.reason()):
                return False
        if "attempts" in e and status.get("attempt") != e["attempts"]:
            return False
        if "shows" in e and e["shows"] not in json.dumps(status):
            return False
        if any(t in json.dumps(status) for t in e.get("never", [])):
            return False
        if e.get("printable") and unprintable(status):
            return False
        return True

    def settled(self) -> bool:
        """Nothing more will happen to it within the test's time: matched, refused, or finished."""
        if self.refused is not None or self.matches():
            return True
        if self.case.get("update_status"):
            return False  # the forged status is an end until the operator undoes it: matched, or the deadline
        phase = self.status().get("phase")
        if phase in FINISHED_PHASES:
            return True
        ready = self.ready()
        return bool("ready" in self.expect and "phase" not in self.expect and ready and ready.get("status") == "False")

    def classify(self, operator_alive: bool) -> str:
        e = self.expect
        if self.refused is not None:
            return "admission"
        if self.matches():
            if "refused" in e:
                return "admission"
            if e.get("phase") == "Failed" or "ready" in e or "shows" in e or e.get("reason") == "TaskNotFound":
                return "condition"
            return "documented"
        if not operator_alive:
            return "crash"
        if self.settled() or (self.case.get("update_status") and self.status().get("phase") in FINISHED_PHASES):
            return "misbehave"  # (a forged finished phase the operator left as it was)
        return "hang"


VIA = {"create": ["create"], "apply": ["apply"], "server-side": ["apply", "--server-side"]}


def create(namespace: str, doc: dict[str, Any], depth: int = 0, via: str = "create") -> str | None:
    """Creates one object (``kubectl create``, or ``apply`` client- or server-side); returns the API
    server's refusal, or None when it was created."""
    text = json.dumps(label(doc)).replace(json.dumps(DEEP), deep_text(depth))
    done = kubectl_run(*VIA[via], "-n", namespace, "-f", "-", input=text, timeout=60)
    return done.stderr.strip() if done.returncode else None


def unprintable(value: Any) -> list[str]:
    """The strings in ``value`` with a control character other than newline and tab."""
    found: list[str] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in node):
            found.append(node)
    return found


def submit(namespace: str, result: Result) -> None:
    result.created_at = time.monotonic()
    docs = manifests(result.case)
    for doc in docs:
        refused = create(namespace, doc, (result.case.get("gen") or {}).get("payload_depth", 0),
                         result.case.get("via", "create"))
        if refused is not None:
            result.refused = refused
            return
        if result.case.get("in_order") and doc["kind"] == "TaskRun" and doc is not docs[-1]:
            name = doc["metadata"]["name"]
            wait_until(f"{name} has a phase (its key claimed)",
                       lambda: (get("taskrun", name, namespace).get("status") or {}).get("phase"), timeout=60)
    update = result.case.get("update")
    if update:
        done = kubectl_run("patch", "taskrun", result.run_name, "-n", namespace, "--type", "merge",
                           "-p", json.dumps(update), timeout=60)
        result.updated = done.returncode == 0
        if done.returncode:
            result.refused = done.stderr.strip()
    forged = result.case.get("update_status")
    if forged and result.refused is None:  # as a user with rights on taskruns/status would
        done = kubectl_run("patch", "taskrun", result.run_name, "-n", namespace, "--subresource=status",
                           "--type", "merge", "-p", json.dumps({"status": forged}), timeout=60)
        assert done.returncode == 0, done.stderr


def crd_generations(apply: bool = False) -> dict[str, int]:
    """The generation of each kubetasks CRD (after applying this tree's, with ``apply``)."""
    if apply:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"), timeout=60)
    names = ("tasks.kubetasks.io", "taskruns.kubetasks.io")
    if apply:
        for name in names:
            kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s", timeout=70)
        # Established comes before the API server validates with the new schema: a dry run of
        # what only this tree's schema refuses tells when it does.
        probe = json.dumps({"apiVersion": GROUP, "kind": "Task", "metadata": {"name": "crd-probe"},
                            "spec": {"image": "Not An Image"}})
        deadline = time.monotonic() + 60
        while "must be an image reference" not in kubectl_run(
                "create", "--dry-run=server", "-n", "default", "-f", "-", input=probe, timeout=30).stderr:
            assert time.monotonic() < deadline, "the API server still validates Tasks with other CRDs"
            time.sleep(0.5)
    return {name: int(kubectl("get", "crd", name, "-o", "jsonpath={.metadata.generation}", timeout=30))
            for name in names}


def listing(namespace: str, kind: str) -> list[dict[str, Any]]:
    text = kubectl("get", kind, "-n", namespace, "-o", "json", timeout=60)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # the deep-payload case's run is in the list
    try:
        return json.loads(text)["items"]
    finally:
        sys.setrecursionlimit(limit)


XFAIL_GRACE = 30.0  # the most a case known to fail (xfail) holds up the others


def poll(namespace: str, results: list[Result], deadline: float) -> None:
    """One loop for all cases: a list of each kind per round, until every case settled (a case
    known to fail gets ``XFAIL_GRACE`` seconds once the others have settled)."""
    start = time.monotonic()
    end = start + deadline
    while True:
        runs = {r["metadata"]["name"]: r for r in listing(namespace, "taskruns")}
        tasks = {t["metadata"]["name"]: t for t in listing(namespace, "tasks")}
        now = time.monotonic()
        for r in results:
            if r.settled_at is not None:
                continue
            r.run, r.task = runs.get(r.run_name), tasks.get(r.task_name)
            if "cron_run_of" in r.expect:
                r.cron_runs = [n for n, run in runs.items() if run["spec"].get("taskRef") == r.expect["cron_run_of"]]
            if r.settled():
                r.settled_at = now
        waiting = [r for r in results if r.settled_at is None]
        if not waiting or now > end or (now > start + XFAIL_GRACE and all(r.case.get("xfail") for r in waiting)):
            return
        time.sleep(1.0)


@dataclass
class Suite:
    namespace: str
    results: dict[str, Result]
    listener: RefListener
    events: list[dict[str, Any]]
    log_before: int
    log_text: str = ""
    pid: int = 0
    alive: bool = True
    summary: dict[str, int] = field(default_factory=dict)


def operator_alive(operator: Any, pid: int) -> bool:
    return operator.proc is not None and operator.proc.pid == pid and operator.proc.poll() is None


@pytest.fixture(scope="module")
def suite(operator: Any) -> Any:
    namespace = f"kt-bad-input-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, "kubetasks.io/test=true")
    listener = RefListener()
    pid = operator.proc.pid
    log_before = operator.log_path.stat().st_size if operator.log_path.exists() else 0
    results = {c["id"]: Result(c) for c in load_cases(listener.url)}
    main = [r for r in results.values() if not r.case.get("late")]
    late = [r for r in results.values() if r.case.get("late")]
    try:
        # The cluster is shared: a session started from another tree since this one's began may
        # have applied its own CRDs. These cases are about this tree's: applied again, and checked
        # unchanged once every case is submitted.
        before = crd_generations(apply=True)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda r: submit(namespace, r), main))
        crds_held = crd_generations() == before
        poll(namespace, main, MAIN_DEADLINE)
        alive = operator_alive(operator, pid)
        # The log the health test reads ends before the first case known to hurt the operator
        # (xfail): what that case does is its own test's business.
        log_end = None
        for r in sorted(late, key=lambda r: bool(r.case.get("xfail"))):  # one at a time, after the others
            if r.case.get("xfail") and log_end is None:
                log_end = operator.log_path.stat().st_size
            if not operator_alive(operator, pid):
                break
            submit(namespace, r)
            poll(namespace, [r], r.expect.get("within", LATE_DEADLINE))
            time.sleep(2)  # lets a crash that the object causes show before the health check
            r.survived = operator_alive(operator, pid)
        events = listing(namespace, "events")
        suite = Suite(namespace, results, listener, events, log_before, pid=pid, alive=alive)
        suite.log_text = operator.log_path.read_bytes()[log_before:log_end].decode(errors="replace")
        for r in results.values():
            r.outcome = r.classify(alive if not r.case.get("late") else bool(r.survived))
        suite.summary = dict(Counter(r.outcome for r in results.values()))
        report = {"summary": suite.summary, "crds_held": crds_held, "cases": {k: r.outcome for k, r in results.items()},
                  "unmatched": [describe(r) for r in results.values() if not r.matches()],
                  "remote_ref_requests": len(listener.hits)}
        print(f"\nbad input: {len(results)} cases: {suite.summary}"
              + ("" if crds_held else " (another session applied other CRDs meanwhile: run again)"))
        if os.environ.get("KUBETASKS_BAD_INPUT_REPORT"):
            Path(os.environ["KUBETASKS_BAD_INPUT_REPORT"]).write_text(json.dumps(report, indent=1))
        yield suite
    finally:
        listener.close()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _param(case: dict[str, Any]) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case["xfail"])] if case.get("xfail") else []
    return pytest.param(case["id"], id=case["id"], marks=marks)


def describe(r: Result) -> str:
    return (f"{r.case['id']} ({r.case['file']}): expected {r.expect}; outcome {r.outcome}; refused={r.refused!r}; "
            f"run phase={r.status().get('phase')!r} reason={r.reason()!r} attempt={r.status().get('attempt')!r}; "
            f"task Ready={r.ready()!r}; status={json.dumps(r.status())[:600]}")


def test_there_are_enough_cases_across_both_kinds():
    assert len(CASES) >= 80
    assert len({c["id"] for c in CASES}) == len(CASES), "case ids must be unique"
    kinds = Counter(c["file"] for c in CASES)
    assert kinds["tasks.yaml"] >= 30 and kinds["taskruns.yaml"] >= 30


@pytest.mark.parametrize("case_id", [_param(c) for c in CASES])
def test_case_is_stopped_where_it_should_be(suite: Suite, case_id: str) -> None:
    r = suite.results[case_id]
    assert r.matches(), describe(r)
    if "refused" in r.expect and r.updated is None:
        # Refused objects do not exist; the first manifest refused is the one meant.
        assert r.run is None
    if r.case.get("late"):
        assert r.survived, f"the operator died or restarted after {case_id}"
    within = r.expect.get("within")
    if within:
        assert r.settled_at is not None and r.settled_at - r.created_at <= within, describe(r)


def test_payloads_are_never_quoted_in_status_or_events(suite: Suite) -> None:
    checked = 0
    for r in suite.results.values():
        hidden = r.case.get("hidden")
        if not hidden:
            continue
        checked += 1
        assert r.status(), describe(r)
        assert hidden not in json.dumps(r.status()), describe(r)
        mine = [e for e in suite.events if e["involvedObject"].get("name") in (r.run_name, r.task_name)]
        assert hidden not in json.dumps(mine)
    assert checked >= 2


def test_echoes_in_status_and_events_are_printable(suite: Suite) -> None:
    checked = 0
    for r in suite.results.values():
        if not r.expect.get("printable"):
            continue
        checked += 1
        assert r.status() and not unprintable(r.status()), describe(r)
        mine = [e for e in suite.events if e["involvedObject"].get("name") in (r.run_name, r.task_name)]
        assert mine and not unprintable([e.get("message") for e in mine]), mine
    assert checked >= 1


def test_no_remote_ref_is_ever_fetched(suite: Suite) -> None:
    assert sum(suite.listener.url in json.dumps(r.case) for r in suite.results.values()) >= 2
    assert suite.listener.hits == [], f"the operator fetched {len(suite.listener.hits)} remote $ref(s)"


def test_the_operator_neither_restarted_nor_logged_a_traceback(suite: Suite) -> None:
    assert suite.alive, "the operator process died or was restarted during the bad-input cases"
    late = [r for r in suite.results.values() if r.case.get("late") and not r.case.get("xfail")]
    assert late and all(r.survived for r in late), [r.case["id"] for r in late if not r.survived]
    assert "Traceback" not in suite.log_text, suite.log_text[suite.log_text.find("Traceback") - 300:][:3000]
