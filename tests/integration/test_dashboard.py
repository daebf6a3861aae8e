"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against the real
cluster: the pages of the session operator's dashboard through ``kubetasks dashboard --url`` (the
local proxy that performs actions as the user), and once the whole path of a user: the chart
installed, ``kubetasks dashboard`` port-forwarding to its pod.

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

from tests.conftest import (INSTANCE, KUBECONFIG, KUBECTL, KWOK_PLACEMENT, REPO, REQUIRE_CLUSTER, TASK_IMAGE, apply, free_port,
                            get, kubectl, wait_until)

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
    """``kubetasks dashboard ... --no-open`` as a subprocess; ``url`` is the URL it printed."""

    def __init__(self, *args: str, kubeconfig: str = KUBECONFIG) -> None:
        env = {**os.environ, "KUBECONFIG": kubeconfig, "KUBECTL": KUBECTL, "PYTHONPATH": str(REPO / "operator")}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from kubetasks.cli.main import main; sys.exit(main())",
             "dashboard", "--no-open", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # its SIGTERM handler stops the proxy and the port-forward
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


def token_kubeconfig(path: Path, namespace: str, account: str) -> str:
    """A kubeconfig for the cluster with a ServiceAccount's token instead of the admin's identity."""
    token = kubectl("create", "token", account, "-n", namespace, "--duration=1h").strip()
    admin = yaml.safe_load(Path(KUBECONFIG).read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "sa",
              "clusters": [{"name": "c", "cluster": cluster}],
              "users": [{"name": account, "user": {"token": token}}],
              "contexts": [{"name": "sa", "context": {"cluster": "c", "user": account, "namespace": namespace}}]}
    path.write_text(yaml.safe_dump(config))
    return str(path)


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
    if not operator.dashboard_url:
        pytest.fail("the session operator serves no dashboard (conftest gives it KUBETASKS_DASHBOARD)")
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
def admin_url(runs: str, operator: Any) -> Iterator[str]:
    """The proxy of a user with the admin kubeconfig, in front of the session operator's dashboard."""
    proxy = Dashboard("--url", operator.dashboard_url)
    try:
        yield proxy.url()
    finally:
        proxy.stop()


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


def test_actions_are_done_as_the_user(page, shot, runs, admin_url, operator, tmp_path):
    """Cancel and trigger go through the user's proxy, with the user's identity: a token without
    rights gets the API server's 403 on the page and changes nothing; the admin's cancel works."""
    kubectl("create", "serviceaccount", "nobody", "-n", runs)
    proxy = Dashboard("--url", operator.dashboard_url, kubeconfig=token_kubeconfig(tmp_path / "nobody.kubeconfig", runs, "nobody"))
    try:
        nobody = proxy.url()
        page.goto(at(nobody, f"/runs/{runs}/sleeper-1"))
        assert "attempt 1 is running" in page.inner_text("#waiting-reason")  # why it is not finished
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

    before = {r["metadata"]["name"] for r in json.loads(kubectl("get", "taskruns", "-n", runs, "-o", "json"))["items"]}
    page.goto(f"{base}/tasks/{runs}/kw")
    page.fill("#trigger-payload", json.dumps({"from": "the trigger form"}))
    page.click("#trigger-button")
    result.wait_for(state="visible")
    assert result.get_attribute("data-ok") == "true", result.inner_text()
    created = wait_until("the triggered run", lambda: {r["metadata"]["name"] for r in json.loads(
        kubectl("get", "taskruns", "-n", runs, "-o", "json"))["items"]} - before)
    (name,) = created
    triggered = get("taskrun", name, runs)
    assert (triggered["spec"]["taskRef"], triggered["spec"]["payload"]) == ("kw", {"from": "the trigger form"})
    assert triggered["metadata"]["labels"]["kubetasks.io/instance"] == INSTANCE  # the Task's operator runs it
    assert name in result.inner_text()
    wait_until(f"{name} Succeeded", lambda: phase(runs, name) == "Succeeded", timeout=120)


# ---------------------------------------------------------------- the whole path: chart, port-forward, proxy

def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_kubetasks_dashboard_port_forwards_to_the_installed_operator(cluster, tmp_path):
    from tests.integration.test_helm import helm, CHART, pods, ready

    release = f"kt-{uuid.uuid4().hex[:6]}"
    system, watched = f"{release}-system", f"{release}-apps"
    installed = False
    try:
        for ns in (system, watched):
            kubectl("create", "namespace", ns)
        helm("install", release, CHART, "-n", system, "--set", f"watchNamespaces={{{watched}}}",
             "--set", f"instanceID={release}", "--wait", "--timeout", "4m")
        installed = True
        wait_until("the operator pod Ready", lambda: any(ready(p) for p in pods(system, release)), timeout=120)
        apply(task("hello", command=["true"], **KWOK_PLACEMENT), watched, instance=release)
        apply(run("hello-1", "hello"), watched, instance=release)

        port = free_port()
        proxy = Dashboard("-n", system, "--port", str(port))
        try:
            url = proxy.url()
            assert url.startswith(f"http://127.0.0.1:{port}/?token=")
            status, body = http_get(url)
            assert status == 200 and "kubetasks" in body and 'id="runs-table"' in body, body[:500]
            wait_until("hello-1 listed through the port-forward",
                       lambda: f"{watched}/hello-1" in http_get(url)[1], timeout=60)
            assert http_get(base_of(url) + "/")[0] == 401  # without the token: nothing
        finally:
            proxy.stop()

        # A user who may read the pods but not port-forward to them: a clear refusal, exit 1.
        kubectl("create", "serviceaccount", "viewer", "-n", system)
        kubectl("create", "role", "pod-reader", "-n", system, "--verb=get,list", "--resource=pods")
        kubectl("create", "rolebinding", "viewer", "-n", system, "--role=pod-reader",
                f"--serviceaccount={system}:viewer")
        viewer = Dashboard("-n", system, kubeconfig=token_kubeconfig(tmp_path / "viewer.kubeconfig", system, "viewer"))
        assert viewer.proc.wait(timeout=60) == 1
        wait_until("its message", lambda: "pods/portforward" in "".join(viewer.stderr), timeout=10)
        said = "".join(viewer.stderr)
        assert "may not port-forward" in said and "forbidden" in said.lower(), said
    finally:
        if installed:
            helm("uninstall", release, "-n", system, "--wait", check=False)
        for ns in (system, watched):
            kubectl("delete", "namespace", ns, "--wait=false", check=False)
