"""``kubetasks dev MODULE [--instance ID] [-n NS]``: a module's tasks run on this machine, for the
TaskRuns of the cluster, with no image built.

It applies the module's Tasks as ``kubetasks deploy`` would (same loader, same field manager),
labelled ``kubetasks.io/instance: <dev instance>`` (default ``dev-<user>``) and with a placeholder
image that is never pulled. No operator acts on that instance, so the installed one leaves their
runs alone. Then it watches the instance's TaskRuns and runs each attempt itself, as a fresh
``python -m kubetasks.runtime`` process with the environment a pod of it would get (core.render),
the developer's kubeconfig, and the module's directory on PYTHONPATH. A process per attempt is
how it reloads: an edited file is what the next attempt imports, with no watcher to miss a change
(each attempt says "reloaded" when a task file changed since the one before). Each run is decided
by the operator's state machine (core.plan), so retries and their delays, durable sleeps,
checkpoints (the run's ConfigMap), results and errors are the real ones, in the run's status.
With an OTLP endpoint in its environment (``OTEL_EXPORTER_OTLP_ENDPOINT``, docs/tracing.md) it
traces as the operator does: the run's, wait, admission and attempt spans from it (service
``kubetasks-dev``), each attempt's and step's from the attempt's process, under one trace.

Not in dev mode: durable waits (children, tokens, events) fail the run, saying so; a Task's
``valueFrom`` variables are left out (named as they are); machine sizes are not enforced;
flow control, idempotency keys, a replay's checkpoints, a Task's hook runs and retention are the
operator's; payloads and results in the object store need the operator. ``--context`` is refused:
the attempts' processes read the kubeconfig's current context.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from kubetasks import protocol
from kubetasks.api.durations import parse_duration
from kubetasks.api.task import Task
from kubetasks.api.taskrun import TaskRun
from kubetasks.cli import deploy
from kubetasks.cli.common import FINISHED, CliError, namespace_of
from kubetasks.core.deploy import FIELD_MANAGER, change_of
from kubetasks.core.dev import (DEV_IMAGE, attempt_env, dev_instance, instance_problem, lost_attempts,
                                observe_process, taken_tasks, with_result_ref)
from kubetasks.core.naming import checkpoint_name, instance_selector
from kubetasks.core.observe import AttemptObservation
from kubetasks.core.payload import payload_data
from kubetasks.core.backoff import effective_retry
from kubetasks.core.plan import World, plan_run, retries_left
from kubetasks.core.render import STOP_GRACE_SECONDS, stop_grace_seconds, render_job, render_run_identity, uses_sdk
from kubetasks.core.result_refs import judge_ref
from kubetasks.core.status_patch import status_patch
from kubetasks.core.tracing import transition_spans
from kubetasks.core.version import locked_task
from kubetasks.otlp import Tracing
from kubetasks.protocol import steps_from_configmap
from kubetasks.runtime.entry import ENV_TERMINATION_LOG  # where a local attempt writes its report

IDLE_SECONDS = 30.0  # a run with nothing due is looked at again this often (or as soon as it changes)
POLL_SECONDS = 0.5  # how often a running attempt's run is checked for a cancel or its deadline


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("dev", help="run a module's tasks on this machine for the TaskRuns created meanwhile "
                                   "(no image; the installed operator leaves them alone)")
    p.add_argument("module", metavar="MODULE", help="a dotted module name (from the current directory) or a .py file")
    p.add_argument("--instance", metavar="ID",
                   help="the dev instance its Tasks and runs are labelled with (default: dev-<your user name>)")
    return p


def cmd_dev(args: argparse.Namespace, out: Console, err: Console) -> int:
    from kubetasks import kube

    if getattr(args, "context", None):
        raise CliError("kubetasks dev takes no --context: its attempts read the kubeconfig's current context "
                       "(set it with kubectl config use-context, or point --kubeconfig at another file)")
    instance = args.instance or dev_instance(getpass.getuser())
    problem = instance_problem(instance, os.environ.get(protocol.ENV_INSTANCE) or None)
    if problem:
        raise CliError(problem)
    ns = namespace_of(args)
    root, _ = deploy.module_root(args.module)
    _, manifests = deploy.task_manifests(
        argparse.Namespace(module=args.module, image=DEV_IMAGE, app=None, instance=instance), ns)
    live = {m["metadata"]["name"]: kube.get(kube.TASKS, ns, m["metadata"]["name"]) for m in manifests}
    taken = taken_tasks(live, instance)
    if taken:  # before any write: applying would take them from the operator that runs them
        raise CliError(f"another instance runs {', '.join(taken)}: kubetasks dev would take it over; "
                       "use a namespace of your own (-n)")
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        after = kube.apply(kube.TASKS, ns, manifest, FIELD_MANAGER, force=True)
        out.print(f"task/{name} {change_of(live[name], after)} (instance {instance})", highlight=False)
    modules = {str(m["spec"]["entrypoint"]).partition(":")[0] for m in manifests}
    files = [Path(f) for m in modules if (f := getattr(sys.modules.get(m), "__file__", None))]
    out.print(f"kubetasks dev: running the TaskRuns of instance {instance} in namespace {ns} on this machine "
              f"(kubetasks run TASK -n {ns} starts one; Ctrl-C stops)", highlight=False)
    DevRunner(ns, instance, root, files, out, err).serve()
    return 0


class DevRunner:
    """The runs of one dev instance in one namespace: a thread per unfinished run, each deciding
    its run with core.plan and running its attempts as processes, one at a time."""

    def __init__(self, namespace: str, instance: str, root: Path, files: Iterable[Path], out: Console,
                 err: Console) -> None:
        self.namespace, self.instance, self.root = namespace, instance, root
        self.files = list(files)
        self.out, self.err = out, err
        self.host = socket.gethostname()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._drivers: dict[str, threading.Thread] = {}  # run uid -> its thread
        self._changed: dict[str, threading.Event] = {}  # run uid -> set when the watch shows it changed
        self._processes: dict[str, subprocess.Popen[bytes]] = {}  # run uid -> its attempt's process, while it runs
        self._mtimes = self._file_times()
        self.tracing = Tracing(service="kubetasks-dev", scope="kubetasks.cli.dev")  # off without an endpoint
        self.tracing.configure(os.environ)

    def serve(self) -> None:
        """Lists the instance's runs, then watches them, until Ctrl-C. Unfinished runs already
        there are taken up too: nobody else runs them."""
        from kubetasks import kube

        selector = instance_selector(self.instance)
        version: str | None = None
        try:
            while True:
                try:
                    if version is None:
                        items, version = kube.list_all(kube.TASKRUNS, self.namespace, selector)
                        for body in items:
                            self._seen(body)
                    for kind, body in kube.watch(kube.TASKRUNS, self.namespace, selector, version, 300):
                        version = (body.get("metadata") or {}).get("resourceVersion") or version
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            self._seen(body, deleted=kind == "DELETED")
                except kube.Gone:
                    version = None
                except Exception as e:
                    if not kube.is_transient(e):
                        raise
                    self._say(f"watch: {kube.error_line(e)}; again in 2s", error=True)
                    time.sleep(2)
                    version = None
        except KeyboardInterrupt:
            self.stopping.set()
            with self._lock:
                running = list(self._processes.values())
            for process in running:  # not left behind: the threads that wait for them end with this process
                _stop(process, STOP_GRACE_SECONDS)
            self._say("stopped: a run whose attempt was cut short is retried (by its Task's policy) "
                      "when kubetasks dev runs again")
        finally:
            self.tracing.shutdown()  # what is batched leaves before this process does

    def _seen(self, body: dict[str, Any], deleted: bool = False) -> None:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        with self._lock:
            thread = self._drivers.get(uid)
            if thread is not None and thread.is_alive():
                self._changed[uid].set()  # its thread looks again now (a cancel, a deletion)
                return
            if not uid or deleted or (body.get("status") or {}).get("phase") in FINISHED:
                return
            self._changed[uid] = threading.Event()
            thread = threading.Thread(target=self._drive, args=(str(meta["name"]), uid), daemon=True,
                                      name=f"dev-{meta['name']}")
            self._drivers[uid] = thread
        thread.start()

    def _drive(self, name: str, uid: str) -> None:
        from kubetasks import kube

        seen: dict[int, AttemptObservation] = {}  # the attempts this process ran, as core.plan reads Jobs
        while not self.stopping.is_set():
            try:
                wait = self._step(name, uid, seen)
            except ValidationError as e:  # a run or Task the API models refuse: no retry mends it
                self._say(f"taskrun/{name}: cannot be run: {e}", error=True)
                return
            except Exception as e:  # the API away, say: the run is decided again, as a requeue would
                self._say(f"taskrun/{name}: {kube.error_line(e)}; again in 2s", error=True)
                wait = 2.0
            if wait is None:
                return
            if wait > 0 and self._changed[uid].wait(wait):
                self._changed[uid].clear()

    def _step(self, name: str, uid: str, seen: dict[int, AttemptObservation]) -> float | None:
        """Decides the run once and carries it out; how long until the next look (None: done)."""
        from kubetasks import kube

        ns = self.namespace
        body = kube.get(kube.TASKRUNS, ns, name)
        if body is None or body["metadata"].get("uid") != uid:
            return None
        run = TaskRun.model_validate(body)
        if run.status.phase.finished:
            return None
        task_body = kube.get(kube.TASKS, ns, run.spec.task_ref)
        task = locked_task(Task.model_validate(task_body), run.status.task_version) if task_body else None
        attempts = {**lost_attempts(run, seen), **seen}
        steps = None
        if task is not None and uses_sdk(task) and attempts:
            data = kube.get_configmap_data(ns, checkpoint_name(name, uid))
            steps = steps_from_configmap(data) if data is not None else None
        now = datetime.now(timezone.utc)
        plan = plan_run(World(now=now, run=run, task=task, attempts=attempts, steps=steps))
        if plan.start_attempt and task is not None:
            for obj in render_run_identity(run, task):  # its checkpoints' ConfigMap; no account: it runs as you
                if obj["kind"] == "ConfigMap":
                    kube.create_or_get(obj)
        old = body.get("status") or {}
        patch = status_patch(old, plan.status.to_api(), whole=True)
        if patch:
            try:
                written = kube.patch_status("taskruns", ns, name, patch, uid=uid,
                                            resource_version=body["metadata"].get("resourceVersion"), old=old)
            except Exception as e:
                if kube.is_conflict(e):  # changed meanwhile (a cancel): decided again on what it is now
                    return 0.0
                raise
            if written is None:
                return None
            body = written
            # After the write that records them, as the operator does: each transition's spans once.
            self.tracing.emit(transition_spans(run.metadata, run.spec.task_ref, run.status, plan.status))
        for event in plan.events:
            self._event(body, event.type, event.reason, event.message)
        if plan.status.phase.finished:
            shown = f": {plan.status.error.message}" if plan.status.error else ""
            self._say(f"taskrun/{name} {plan.status.phase.value}{shown}")
            return None
        if plan.start_attempt and task is not None:
            obs = self._attempt(run, task, plan.start_attempt, retries_left(effective_retry(run, task), plan.status),
                                body)
            if obs is not None:
                seen[obs.attempt] = obs
            return 0.0
        if plan.requeue_at is not None:
            return max((plan.requeue_at - now).total_seconds(), 0.0)
        return IDLE_SECONDS

    def _attempt(self, run: TaskRun, task: Task, attempt: int, left: int, body: dict[str, Any]
                 ) -> AttemptObservation | None:
        """Runs one attempt as a process; what it did (None: this process is stopping)."""
        traced = self.tracing.job_env(run.metadata, attempt, task.task_id)  # {} when off
        job = render_job(run, task, attempt, retries_left=left, trace_env=traced)
        env, missing = attempt_env(job)
        if missing:
            self._say(f"taskrun/{run.name}: not set in dev mode (valueFrom): {', '.join(missing)}", error=True)
        changed = self._changed_files()
        if changed:
            self._say(f"reloaded: {', '.join(changed)} changed")
        limit = parse_duration(task.spec.max_duration).total_seconds() if task.spec.max_duration else None
        with tempfile.TemporaryDirectory(prefix="kubetasks-dev-") as tmp:
            payload = payload_data(run.spec.payload).get(protocol.PAYLOAD_KEY)
            env[protocol.ENV_PAYLOAD_FILE] = str(Path(tmp) / protocol.PAYLOAD_KEY)  # none: read from the run
            if payload is not None:
                Path(env[protocol.ENV_PAYLOAD_FILE]).write_text(payload, encoding="utf-8")
            report = Path(tmp) / "termination-log"
            env[ENV_TERMINATION_LOG] = str(report)
            path = os.pathsep.join(p for p in (str(self.root), os.environ.get("PYTHONPATH", "")) if p)
            started = datetime.now(timezone.utc)
            self._say(f"taskrun/{run.name} attempt {attempt} ({task.task_id}) starts")
            process = subprocess.Popen([sys.executable, "-m", "kubetasks.runtime"], cwd=self.root,
                                       env={**os.environ, **env, "PYTHONPATH": path})
            with self._lock:
                self._processes[str(run.metadata.get("uid"))] = process
            self._event(body, "Normal", "DevAttempt", f"attempt {attempt} runs in kubetasks dev on {self.host} "
                                                      f"(pid {process.pid}, instance {self.instance}): no Job")
            try:
                timed_out = self._wait(process, run, limit, stop_grace_seconds(task.spec))
            finally:
                with self._lock:
                    self._processes.pop(str(run.metadata.get("uid")), None)
            text = report.read_text(encoding="utf-8") if report.exists() else None
        if self.stopping.is_set():
            return None
        obs = observe_process(attempt, job["metadata"]["name"], started.replace(microsecond=0),
                              datetime.now(timezone.utc).replace(microsecond=0), process.returncode, text, timed_out)
        if obs.state == "succeeded" and obs.report is not None and obs.report.result_ref is not None:
            obs = self._read_ref(run, obs)
        self._say(f"taskrun/{run.name} attempt {attempt}: {obs.state}")
        return obs

    def _wait(self, process: subprocess.Popen[bytes], run: TaskRun, limit: float | None, grace: int) -> bool:
        """Waits for the attempt's process; stops it (SIGTERM, then SIGKILL after ``grace``
        seconds, as the operator's cancel) when its run is cancelled, its maxDuration passes
        (True) or this process stops."""
        from kubetasks import kube

        deadline = time.monotonic() + limit if limit else None
        uid = str(run.metadata.get("uid"))
        while True:
            try:
                process.wait(POLL_SECONDS)
                return False
            except subprocess.TimeoutExpired:
                pass
            if deadline is not None and time.monotonic() >= deadline:
                _stop(process, grace)
                return True
            if self.stopping.is_set():
                _stop(process, grace)
                return False
            if self._changed[uid].is_set():
                self._changed[uid].clear()
                try:
                    now = kube.get(kube.TASKRUNS, run.namespace, run.name)
                except Exception as e:  # the API away: the attempt goes on, and the run is read again
                    self._say(f"taskrun/{run.name}: {kube.error_line(e)}", error=True)
                    self._changed[uid].set()
                    continue
                if now is None or now["metadata"].get("uid") != uid or (now.get("spec") or {}).get("cancel"):
                    _stop(process, grace)
                    return False

    def _read_ref(self, run: TaskRun, obs: AttemptObservation) -> AttemptObservation:
        """A result kept in the run's ConfigMap (core.result_refs), read and checked as the operator does."""
        from kubetasks import kube

        assert obs.report is not None
        judged = judge_ref(obs.report.result_ref, run.namespace, run.name, str(run.metadata.get("uid")),
                           obs.attempt, None)  # the object store is the operator's: not in dev mode
        data = None
        if judged.place is not None and judged.place.configmap and judged.place.key:
            text = (kube.get_configmap_data(run.namespace, judged.place.configmap) or {}).get(judged.place.key)
            data = None if text is None else text.encode()
        return with_result_ref(obs, judged, data)

    def _say(self, text: str, error: bool = False) -> None:
        """A line of the dev log, between the attempts' own output (which goes to this terminal)."""
        (self.err if error else self.out).print(f"[dev] {text}", highlight=False, markup=False)

    def _event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        from kubetasks import kube

        try:
            kube.post_event(body, type_, reason, message)
        except Exception as e:  # an Event is a courtesy, as the operator's
            self._say(f"could not post event {reason}: {kube.error_line(e)}", error=True)

    def _file_times(self) -> dict[Path, float]:
        return {f: f.stat().st_mtime for f in self.files if f.exists()}

    def _changed_files(self) -> list[str]:
        with self._lock:
            now = self._file_times()
            changed = sorted(f.name for f, t in now.items() if self._mtimes.get(f) != t)
            self._mtimes = now
        return changed


def _stop(process: subprocess.Popen[bytes], grace: int) -> None:
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

