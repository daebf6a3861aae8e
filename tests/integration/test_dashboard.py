"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against the real
cluster: ``kubetasks dashboard`` started as a user would, with a kubeconfig for the identity under
test (the admin's for the pages; ServiceAccount tokens for what a user may not see or do), and the
operator installed by the chart serving nothing to a raw port-forward.

Screenshots of every page go to the test's tmp_path, and to $KUBETASKS_SCREENSHOTS when set
(docs/screenshots/ holds the README's). Install chromium with hack/chromium.sh; in CI a missing
chromium fails the tests, never skips them.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import (INSTANCE, INSTANCE_LABEL, KUBECONFIG, KUBECTL, KWOK_PLACEMENT, REPO, REQUIRE_CLUSTER,
                            TASK_IMAGE, apply, get, kubectl, kubectl_run, label, token_kubeconfig,
                            wait_until)

pytestmark = pytest.mark.cluster
CHROMIUM = os.environ.get("KUBETASKS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 800}
EXAMPLES_PATH = "/app/operator:/app/examples/python"
FINISHED = {"Succeeded", "Failed", "Cancelled", "TimedOut", "Duplicate"}


# ---------------------------------------------------------------- browser and screenshots

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[test]')"
    if problem is None and not Path(CHROMIUM).exists():
        problem = f"no chromium at {CHROMIUM}: run hack/chromium.sh"
    if problem:
        if REQUIRE_CLUSTER:
            pytest.fail(f"CI requires the browser tests: {problem}")
        pytest.skip(problem)
    with sync_playwright() as p:
        # --no-sandbox: chromium's sandbox needs user namespaces, which root in a container lacks.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(20_000)
    p = context.new_page()
    yield p
    context.close()


@pytest.fixture
def shot(tmp_path: Path) -> Any:
    """shot(page, name): a PNG of the page in tmp_path, and in $KUBETASKS_SCREENSHOTS when set."""
    def take(p: Any, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        p.screenshot(path=str(path))
        if os.environ.get("KUBETASKS_SCREENSHOTS"):
            keep = Path(os.environ["KUBETASKS_SCREENSHOTS"])
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, keep / path.name)
        return path
    return take


# ---------------------------------------------------------------- the CLI's proxy, as a user starts it

class Dashboard:
    """``kubetasks dashboard ... --no-open`` as a subprocess; ``url`` is the URL it printed. It
    shows the session's instance only (``-l``): other sessions' runs are not this test's business."""

    def __init__(self, *args: str, kubeconfig: str = KUBECONFIG) -> None:
        env = {**os.environ, "KUBECONFIG": kubeconfig, "PYTHONPATH": str(REPO / "operator")}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from kubetasks.cli.main import main; sys.exit(main())",
             "dashboard", "--no-open", "-l", f"{INSTANCE_LABEL}={INSTANCE}", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr or []), daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout or []:
            self.lines.put(line)
        self.lines.put(None)

    def url(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith("dashboard: "):
                return line.split(" ", 1)[1].strip()
        self.proc.wait(timeout=10)
        raise AssertionError(f"kubetasks dashboard printed no URL (exit {self.proc.poll()}): {''.join(self.stderr)}")

    def said(self, text: str, timeout: float = 10) -> None:
        """Waits for ``text`` on its stderr, which a thread of its own reads: a line the dashboard
        wrote before its URL may not have been read when the URL was."""
        wait_until(f"the dashboard to say {text!r}", lambda: text in "".join(self.stderr), timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # its SIGTERM handler stops the server and the informers
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def base_of(url: str) -> str:
    return url.split("/?", 1)[0]


def at(url: str, path: str) -> str:
    """``path`` (with its query) on the proxy of ``url`` (the printed one), token included: each
    test's browser context starts without the proxy's cookie."""
    base, token = url.split("/?", 1)
    return f"{base}{path}{'&' if '?' in path else '?'}{token}"


# ---------------------------------------------------------------- runs to look at (one set for the module)

def task(name: str, **spec: Any) -> dict:
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"image": TASK_IMAGE, "imagePullPolicy": "Never", "retry": {"minDelay": "1s"}, **spec}}


def run(name: str, task_ref: str, payload: Any = None) -> dict:
    spec: dict[str, Any] = {"taskRef": task_ref}
    if payload is not None:
        spec["payload"] = payload
    return {"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name}, "spec": spec}


def phase(namespace: str, name: str) -> str | None:
    return (get("taskrun", name, namespace).get("status") or {}).get("phase")


# (Not the key "n": kubectl's YAML reads a bare n as false, and conftest's apply() sends YAML.)
GREETING = {"greeting": "hello from the dashboard test", "count": 42}
ABORT = "the input is unusable:\nline two of the reason"


@pytest.fixture(scope="module")
def runs(cluster: str, operator: Any) -> Iterator[str]:
    """A namespace with: 4 runs of a Task on kwok nodes; a run of the steps example on the real
    node (payload, steps, logs); a run that fails at once with a two-line error; a cron Task; a
    long sleeper for the cancel tests."""
    ns = f"kt-dashboard-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", ns)
    kubectl("label", "namespace", ns, "kubetasks.io/test=true")
    env = [{"name": "PYTHONPATH", "value": EXAMPLES_PATH}]
    apply([task("kw", command=["true"], machine={"cpu": "10m", "memory": "32Mi"}, **KWOK_PLACEMENT),
           task("steps", entrypoint="kubetasks_examples.steps:steps", env=env),
           task("flaky", entrypoint="kubetasks_examples.flaky:flaky", env=env),
           task("nightly", command=["true"], schedule="0 3 * * *", **KWOK_PLACEMENT),
           task("sleeper", command=["sleep", "600"])], ns)
    apply([run(f"kw-{i}", "kw") for i in range(1, 5)]
          + [run("steps-1", "steps", GREETING), run("flaky-1", "flaky", {"abort": ABORT}),
             run("sleeper-1", "sleeper")], ns)
    for name in ("kw-1", "kw-2", "kw-3", "kw-4", "steps-1", "flaky-1"):
        wait_until(f"{name} finished", lambda: phase(ns, name) in FINISHED, timeout=240)
    wait_until("sleeper-1 Running", lambda: phase(ns, "sleeper-1") == "Running", timeout=120)
    yield ns
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def admin_url(runs: str) -> Iterator[str]:
    """``kubetasks dashboard`` of a user with the admin kubeconfig (every namespace)."""
    dashboard = Dashboard()
    try:
        yield dashboard.url()
    finally:
        dashboard.stop()


READ_RULES = [  # what a namespace's viewer may read: the dashboard needs no more
    ("kubetasks.io", "tasks,taskruns", "get,list,watch"), ("", "events,pods,configmaps", "get,list,watch"),
    ("", "pods/log", "get")]


def viewer(namespace: str, account: str, path: Path, extra: list[tuple[str, str, str]] = ()) -> str:
    """A ServiceAccount that may read ``namespace``'s runs, Tasks, Events, pods and logs (and
    ``extra``), nothing elsewhere; its token kubeconfig (context namespace ``namespace``)."""
    kubectl("create", "serviceaccount", account, "-n", namespace)
    rules = [{"apiGroups": [g], "resources": r.split(","), "verbs": v.split(",")} for g, r, v in [*READ_RULES, *extra]]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": account, "namespace": namespace}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": account, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]}]))
    return token_kubeconfig(path, namespace, account)


# ---------------------------------------------------------------- the pages

def rows(p: Any) -> list[str]:
    return p.eval_on_selector_all('[data-testid="run-row"]', "rs => rs.map(r => r.dataset.run)")


def test_the_runs_list_filters_pages_and_is_live(page, shot, runs, admin_url):
    base = base_of(admin_url)
    page.goto(at(admin_url, f"/?namespace={runs}"))
    page.wait_for_selector(f'[data-run="{runs}/kw-1"]')
    shown = rows(page)
    assert {f"{runs}/{n}" for n in ("kw-1", "kw-2", "kw-3", "kw-4", "steps-1", "flaky-1", "sleeper-1")} <= set(shown)
    row = page.locator(f'[data-run="{runs}/flaky-1"]')
    assert row.get_attribute("data-phase") == "Failed"
    assert page.locator(f'[data-run="{runs}/kw-1"] [data-testid="phase"]').inner_text() == "Succeeded"
    shot(page, "runs")

    # Filters: by Task, then by phase (the form, as a user uses it).
    page.fill("#filter-task", "kw")
    page.click("#filter-apply")
    page.wait_for_url("**task=kw**")
    assert sorted(rows(page)) == [f"{runs}/kw-{i}" for i in range(1, 5)]
    page.goto(f"{base}/?namespace={runs}&phase=Failed")
    assert rows(page) == [f"{runs}/flaky-1"]
    page.goto(f"{base}/?namespace={runs}&phase=active")
    assert rows(page) == [f"{runs}/sleeper-1"]

    # Paging, newest first: two pages of 2 over the 4 kw runs, none twice.
    page.goto(f"{base}/?namespace={runs}&task=kw&limit=2")
    first = rows(page)
    assert len(first) == 2 and page.inner_text("#runs-shown").endswith("of 4")
    page.click("#page-next")
    page.wait_for_url("**cursor=**")
    second = rows(page)
    assert len(second) == 2 and not set(first) & set(second)
    assert sorted(first + second) == [f"{runs}/kw-{i}" for i in range(1, 5)]
    assert page.locator("#page-next").count() == 0 and page.locator("#page-prev").count() == 1

    # Live: a run created after the page loaded shows up without a reload.
    page.goto(f"{base}/?namespace={runs}&task=kw")
    page.wait_for_selector(f'[data-run="{runs}/kw-1"]')
    page.evaluate("window.__loaded_once = true")
    apply(run("kw-live", "kw"), runs)
    page.wait_for_selector(f'[data-run="{runs}/kw-live"]', timeout=30_000)
    assert page.evaluate("window.__loaded_once") is True  # the same document: no navigation happened
    wait_until("kw-live shown Succeeded", lambda: page.locator(f'[data-run="{runs}/kw-live"]')
               .get_attribute("data-phase") == "Succeeded", timeout=60)
    assert page.inner_text("#runs-total") == "5"


def test_a_run_page_shows_attempts_steps_payload_logs_and_events(page, shot, runs, admin_url):
    base = base_of(admin_url)
    page.goto(at(admin_url, f"/runs/{runs}/steps-1"))
    assert page.inner_text("#run-name") == "steps-1"
    assert page.locator('h1 [data-testid="phase"]').inner_text() == "Succeeded"
    assert page.locator('[data-testid="attempt-row"]').count() == 1
    steps = page.eval_on_selector_all('[data-testid="step-row"]', "rs => rs.map(r => r.dataset.step)")
    assert steps == ["step-1", "step-2", "step-3"]
    payload = page.inner_text("#payload")
    assert GREETING["greeting"] in payload and '"count": 42' in payload
    assert page.locator('[data-testid="event-row"]').count() >= 1
    assert "Succeeded" in page.inner_text("#events") or "Started" in page.inner_text("#events")
    logs = page.locator('[data-testid="attempt-log"][data-attempt="1"]')
    assert logs.get_attribute("open") is not None  # the latest attempt's log is unfolded
    assert "side effect: step-1" in logs.locator("pre.log").inner_text()
    assert page.locator("#cancel-button").count() == 0  # finished: nothing to cancel
    shot(page, "run")

    page.goto(f"{base}/runs/{runs}/flaky-1")
    assert page.locator('h1 [data-testid="phase"]').inner_text() == "Failed"
    error = page.inner_text("#error")
    assert "the input is unusable:" in error and "line two of the reason" in error
    shot(page, "run-failed")

    page.goto(f"{base}/runs/{runs}/no-such-run")
    assert page.locator('[data-testid="not-found"]').count() == 1


def test_the_tasks_pages_show_schedules_rates_and_durations(page, shot, runs, admin_url):
    base = base_of(admin_url)
    page.goto(at(admin_url, "/tasks"))
    tasks = page.eval_on_selector_all('[data-testid="task-row"]', "rs => rs.map(r => r.dataset.task)")
    assert {f"{runs}/{t}" for t in ("kw", "steps", "flaky", "nightly", "sleeper")} <= set(tasks)
    assert "0 3 * * *" in page.locator(f'[data-task="{runs}/nightly"]').inner_text()
    shot(page, "tasks")

    page.goto(f"{base}/tasks/{runs}/nightly")
    ticks = page.locator('[data-testid="next-tick"]').all_inner_texts()
    assert len(ticks) == 5 and all("03:00" in t for t in ticks), ticks
    shot(page, "task-schedule")
    page.goto(f"{base}/tasks/{runs}/kw")
    assert "100" in page.inner_text("#success-rate")  # every kw run succeeded
    assert page.locator('[data-testid="duration-bar"]').count() >= 4
    shot(page, "task")


def run_names(namespace: str) -> set[str]:
    listed = json.loads(kubectl("get", "taskruns", "-n", namespace, "-o", "json"))
    return {r["metadata"]["name"] for r in listed["items"]}


def test_actions_are_done_as_the_user(page, shot, runs, admin_url, tmp_path):
    """Cancel, trigger and replay are done by ``kubetasks dashboard`` with the user's identity: a
    viewer (read rights only) gets the API server's 403 on the page and changes nothing; the admin's works."""
    proxy = Dashboard(kubeconfig=viewer(runs, "nobody", tmp_path / "nobody.kubeconfig"))
    try:
        nobody = proxy.url()
        page.goto(at(nobody, f"/runs/{runs}/sleeper-1"))
        assert "attempt 1 is running" in page.inner_text("#waiting-reason")  # why it is not finished
        assert page.locator("#replay-button").count() == 0  # not finished: nothing to replay yet
        page.click("#cancel-button")
        result = page.locator("#action-result")
        result.wait_for(state="visible")
        assert result.get_attribute("data-ok") == "false"
        text = result.inner_text()
        assert "forbidden" in text and "403" in text and "system:serviceaccount:" in text, text
        shot(page, "action-forbidden")
        assert not (get("taskrun", "sleeper-1", runs).get("spec") or {}).get("cancel")
        assert phase(runs, "sleeper-1") == "Running"

        page.goto(at(nobody, f"/tasks/{runs}/kw"))
        page.click("#trigger-button")
        result.wait_for(state="visible")
        assert result.get_attribute("data-ok") == "false" and "forbidden" in result.inner_text()

        before = run_names(runs)
        page.goto(f"{base_of(nobody)}/runs/{runs}/kw-1")
        page.click("#replay-button")
        result.wait_for(state="visible")
        assert result.get_attribute("data-ok") == "false"
        text = result.inner_text()
        assert "forbidden" in text and "403" in text and 'cannot create resource "taskruns"' in text, text
        assert run_names(runs) == before
    finally:
        proxy.stop()

    # The admin: the same buttons work.
    base = base_of(admin_url)
    page.goto(at(admin_url, f"/runs/{runs}/sleeper-1"))
    page.click("#cancel-button")
    result = page.locator("#action-result")
    result.wait_for(state="visible")
    assert result.get_attribute("data-ok") == "true", result.inner_text()
    wait_until("sleeper-1 Cancelled", lambda: phase(runs, "sleeper-1") == "Cancelled", timeout=60)

    before = run_names(runs)
    page.goto(f"{base}/tasks/{runs}/kw")
    page.fill("#trigger-payload", json.dumps({"from": "the trigger form"}))
    page.click("#trigger-button")
    result.wait_for(state="visible")
    assert result.get_attribute("data-ok") == "true", result.inner_text()
    created = wait_until("the triggered run", lambda: run_names(runs) - before)
    (name,) = created
    triggered = get("taskrun", name, runs)
    assert (triggered["spec"]["taskRef"], triggered["spec"]["payload"]) == ("kw", {"from": "the trigger form"})
    assert triggered["metadata"]["labels"]["kubetasks.io/instance"] == INSTANCE  # the Task's operator runs it
    assert name in result.inner_text()
    wait_until(f"{name} Succeeded", lambda: phase(runs, name) == "Succeeded", timeout=120)

    # Replay: one new run, as `kubetasks replay kw-1` creates it, linked from the result.
    before = run_names(runs)
    page.goto(f"{base}/runs/{runs}/kw-1")
    page.click("#replay-button")
    result.wait_for(state="visible")
    assert result.get_attribute("data-ok") == "true", result.inner_text()
    (replay,) = run_names(runs) - before  # created before the answer came back
    assert get("taskrun", replay, runs)["spec"]["replayOf"]["name"] == "kw-1"
    assert replay in result.inner_text()
    assert page.get_attribute("#action-run-link", "href") == f"/runs/{runs}/{replay}"


def test_the_runs_list_cancels_every_unfinished_run_its_filter_matches(page, shot, runs, admin_url):
    """As `kubetasks cancel --tag bulk`: every page's matches, after the user confirms; a run of
    another tag is left alone. Delayed runs: unfinished, and no pod."""
    apply([{**run(name, "kw"), "spec": {"taskRef": "kw", "delay": "1h", "tags": tags}}
           for name, tags in (("bulk-1", ["bulk"]), ("bulk-2", ["bulk"]), ("bulk-other", ["other"]))], runs)
    for name in ("bulk-1", "bulk-2", "bulk-other"):
        wait_until(f"{name} Delayed", lambda: phase(runs, name) == "Delayed", timeout=60)
    page.goto(at(admin_url, f"/?namespace={runs}&tag=bulk&limit=1"))  # one row a page: the button covers them all
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click("#cancel-matching-button")
    result = page.locator("#action-result")
    result.wait_for(state="visible")
    assert result.get_attribute("data-ok") == "true", result.inner_text()
    assert result.inner_text() == "2 cancels requested (tagged bulk)"
    assert asked == [f"Cancel every unfinished run tagged bulk in {runs}?"]
    shot(page, "cancel-matching")
    for name in ("bulk-1", "bulk-2"):
        wait_until(f"{name} Cancelled", lambda: phase(runs, name) == "Cancelled", timeout=60)
    other = get("taskrun", "bulk-other", runs)
    assert not other["spec"].get("cancel") and other["status"]["phase"] == "Delayed", other
    kubectl("delete", "taskrun", "bulk-other", "-n", runs)


# ---------------------------------------------------------------- it reads as you

def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


SECRET = "the payload of namespace B, for its readers only"


def test_a_user_sees_nothing_of_a_namespace_they_may_not_read(page, shot, runs, tmp_path):
    """A ServiceAccount with read rights (and pods/portforward) in namespace A only: its dashboard
    shows A's runs and nothing of B's, in the page, its API, its run, log and Task URLs."""
    b = f"kt-dashboard-b-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", b)
    try:
        apply([task("secret-task", command=["true"], **KWOK_PLACEMENT), run("b-1", "secret-task", {"secret": SECRET})], b)
        wait_until("b-1 finished", lambda: phase(b, "b-1") in FINISHED, timeout=120)
        alice = Dashboard(kubeconfig=viewer(runs, "alice", tmp_path / "alice.kubeconfig",
                                            [("", "pods/portforward", "create")]))
        try:
            url = alice.url()
            alice.said(f"namespace {runs} only")
            page.goto(at(url, "/"))
            page.wait_for_selector(f'[data-run="{runs}/kw-1"]')
            assert f"namespace {runs} only" in page.inner_text("#scope")
            shown = rows(page)
            assert shown and all(r.startswith(f"{runs}/") for r in shown), shown
            namespaces = page.eval_on_selector_all("#filter-namespace option", "os => os.map(o => o.value)")
            assert b not in namespaces and b not in page.content()
            shot(page, "isolation")
            base = base_of(url)
            page.goto(f"{base}/?namespace={b}")
            assert rows(page) == [] and page.inner_text("#runs-total") == "0"
            listed = page.evaluate("fetch('/api/runs?limit=500').then(r => r.text())")
            assert b not in listed and SECRET not in listed and json.loads(listed)["total"] >= 7
            # B's objects answer as objects that do not exist there: nothing tells them apart.
            for path, status, name in ((f"/runs/{b}/b-1", 403, "b-1"), (f"/runs/{b}/b-1/attempts/1/log", 403, "b-1"),
                                       (f"/tasks/{b}/secret-task", 404, "secret-task")):
                answer = page.goto(base + path)
                text = page.content()
                assert answer.status == status and SECRET not in text, (path, answer.status)
                absent = page.goto(base + path.replace(name, "no-such-name"))
                assert absent.status == status and page.content() == text.replace(name, "no-such-name"), path
            page.goto(f"{base}/tasks")
            assert b not in page.content()
            # Its own namespace's run page, logs and Events read as it: all there.
            page.goto(f"{base}/runs/{runs}/steps-1")
            assert "side effect: step-1" in page.locator('[data-testid="attempt-log"] pre.log').first.inner_text()
            assert page.locator('[data-testid="event-row"]').count() >= 1
        finally:
            alice.stop()
        # The same user's kubectl says the same: forbidden.
        said = kubectl_run("--kubeconfig", str(tmp_path / "alice.kubeconfig"), "get", "taskruns", "-n", b)
        assert said.returncode != 0 and "forbidden" in said.stderr
    finally:
        kubectl("delete", "namespace", b, "--wait=false", check=False)


def test_a_user_who_may_read_no_runs_is_told_so(runs, tmp_path):
    kubectl("create", "serviceaccount", "stranger", "-n", runs)
    stranger = Dashboard(kubeconfig=token_kubeconfig(tmp_path / "stranger.kubeconfig", runs, "stranger"))
    assert stranger.proc.wait(timeout=60) == 1
    stranger.said("may not list")
    stranger.said(f"nor in namespace {runs}")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


# About the deepest JSON the API server takes: 10,000 levels in all. Stored, a run this deep is at
# the edge of what kube-apiserver can decode again (its managedFields nest a few levels deeper than
# the payload): one a little deeper stops every list of taskruns once the API server's watch cache
# reinitialises (after a restart, say). The test deletes it before it ends.
DEPTH = 9_990


def test_a_10000_deep_payloads_page_renders_in_a_second_in_bounded_memory(page, runs):
    """The API server takes JSON nested 10,000 deep; pretty-printing such a payload whole would take
    200 MB (and took the operator's dashboard down): cut first, its page is small and quick."""
    text = json.dumps(label(run("deep-1", "no-such-task", "__deep__"))).replace(
        '"__deep__"', '{"a":' * DEPTH + "1" + "}" * DEPTH)  # written without recursion
    created = kubectl_run("create", "-n", runs, "-f", "-", input=text)
    assert created.returncode == 0, created.stderr
    dashboard = Dashboard()
    try:
        url = dashboard.url()
        wait_until("deep-1 listed", lambda: f"{runs}/deep-1" in http_get(at(url, f"/api/runs?namespace={runs}"))[1])
        page.goto(at(url, f"/?namespace={runs}"))  # warm: the page's code paths and the browser's cookie
        pid = dashboard.proc.pid
        before = rss_kib(pid)
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) from now on
        started = time.perf_counter()
        answer = page.goto(f"{base_of(url)}/runs/{runs}/deep-1")
        took = time.perf_counter() - started
        assert answer.status == 200 and page.inner_text("#run-name") == "deep-1"
        assert "shown cut" in page.inner_text('[data-testid="value-cut"]')
        peak, after = rss_kib(pid, "VmHWM"), rss_kib(pid)
        print(f"deep payload page: {took * 1000:.0f} ms; dashboard RSS {before // 1024} MiB before, "
              f"{after // 1024} MiB after, peak {peak // 1024} MiB")
        assert took < 1.0
        assert peak - before < 50 * 1024 and after - before < 50 * 1024
    finally:
        dashboard.stop()
        kubectl_run("delete", "-n", runs, "taskrun", "deep-1", "--wait=true", "--timeout=60s")


# ---------------------------------------------------------------- the operator serves nothing

def test_a_raw_port_forward_to_the_installed_operator_shows_nothing(cluster):
    from tests.integration.test_helm import CHART, helm, pods, ready

    release = f"kt-{uuid.uuid4().hex[:6]}"
    system, watched = f"{release}-system", f"{release}-apps"
    installed = False
    forward = None
    try:
        for ns in (system, watched):
            kubectl("create", "namespace", ns)
        helm("install", release, CHART, "-n", system, "--set", f"watchNamespaces={{{watched}}}",
             "--set", f"instanceID={release}", "--wait", "--timeout", "4m")
        installed = True
        pod = wait_until("the operator pod Ready", lambda: next((p for p in pods(system, release) if ready(p)), None),
                         timeout=120)
        env = {e["name"] for c in pod["spec"]["containers"] for e in c.get("env") or []}
        assert "KUBETASKS_DASHBOARD" not in env
        ports = {p.get("name") for c in pod["spec"]["containers"] for p in c.get("ports") or []}
        # The queue webhook's port answers AdmissionReviews with allowed or refused, nothing of a run.
        assert ports <= {"health", "metrics", "webhook"}, ports
        apply([task("hello", command=["true"], **KWOK_PLACEMENT), run("hello-1", "hello", {"secret": SECRET})],
              watched, instance=release)

        for port in (8081,):  # where the operator's dashboard listened
            forward = subprocess.Popen([KUBECTL, "--kubeconfig", KUBECONFIG, "port-forward", "-n", system,
                                        f"pod/{pod['metadata']['name']}", f":{port}"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = forward.stdout.readline() if forward.stdout else ""
            assert line.startswith("Forwarding from 127.0.0.1:"), line
            local = int(line.split(":")[1].split()[0])
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError)) as refused:
                http_get(f"http://127.0.0.1:{local}/")
            assert SECRET not in str(refused.value)
            forward.terminate()
            _, err = forward.communicate(timeout=20)
            assert "connection refused" in err, err
            forward = None
    finally:
        if forward is not None:
            forward.kill()
        if installed:
            helm("uninstall", release, "-n", system, "--wait", check=False)
        for ns in (system, watched):
            kubectl("delete", "namespace", ns, "--wait=false", check=False)
