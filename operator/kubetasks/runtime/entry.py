"""The entry point of task pods: ``python -m kubetasks.runtime``.

Reads the run from the environment and the payload from its file, or from the TaskRun when it was
too large for one (see :mod:`kubetasks.protocol`), validates the payload, runs the task function (sync or async) and ends the attempt the way the operator expects: a Report in the
termination message and an exit code (0 success or durable sleep, 1 retry, 78 fail for good).
:func:`run_task` does all but the process-level I/O, so it is tested in-process.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from kubetasks import protocol
from kubetasks.runtime import kube, outcome
from kubetasks.runtime.checkpoints import Checkpoints, CheckpointStore, ConfigMapStore, MemoryStore
from kubetasks.runtime.context import Clock, Context, Steps, utcnow
from kubetasks.runtime import bridge, lifecycle, tracing
from kubetasks.runtime.errors import (
    AbortTaskRun, InvalidEntrypoint, InvalidPayload, SleepRequested, Stopped, WaitRequested,
)
from kubetasks.runtime.lifecycle import Hooks, Outcome, Wait, after, call, global_hooks, wrapped
from kubetasks.runtime.metadata import Metadata, RunMetadata
from kubetasks.runtime.outcome import Exit
from kubetasks.runtime.results import keep_result, read_grant
from kubetasks.runtime.step_blobs import read_step_grant
from kubetasks.runtime.stopping import RunReader, run_cancelled, sigterm_stops
from kubetasks.runtime.payloads import PayloadUnavailable, fetch_payload, no_grant_error, read_payload_grant
from kubetasks.runtime.task import TaskDefinition, call_arguments, payload_model_of

log = logging.getLogger("kubetasks.runtime")

ENV_TERMINATION_LOG = "KUBETASKS_TERMINATION_LOG"  # where to write the report; for tests and local runs


@dataclass(frozen=True)
class Invocation:
    """One attempt of one run, as the operator describes it in the environment."""

    entrypoint: str | None
    payload: str | None  # JSON text given in the environment (local runs, Jobs of older operators)
    run: str = "local"
    run_uid: str = ""
    namespace: str = "default"
    task: str = ""
    attempt: int = 1
    checkpoints: str | None = None  # ConfigMap name
    termination_log: str = protocol.TERMINATION_MESSAGE_PATH
    payload_file: str | None = None  # set by the operator; no such file: the payload is in the TaskRun only
    replay_of: str | None = None  # the run this one replays (kubetasks replay), by name
    # Attempts that may follow a failure of this one; None (a local run, an older operator): this
    # one is taken as the last, so on_failure hooks run when it fails.
    retries_left: int | None = None


def invocation_from_env(env: Mapping[str, str]) -> Invocation:
    try:
        attempt = int(env.get(protocol.ENV_ATTEMPT) or 1)
    except ValueError:
        attempt = 1
    run = env.get(protocol.ENV_RUN) or "local"
    return Invocation(
        entrypoint=env.get(protocol.ENV_ENTRYPOINT) or None,
        payload=env.get(protocol.ENV_PAYLOAD),
        run=run,
        run_uid=env.get(protocol.ENV_RUN_UID) or run,
        namespace=env.get(protocol.ENV_NAMESPACE) or "default",
        task=env.get(protocol.ENV_TASK) or "",
        attempt=attempt,
        checkpoints=env.get(protocol.ENV_CHECKPOINTS) or None,
        termination_log=env.get(ENV_TERMINATION_LOG) or protocol.TERMINATION_MESSAGE_PATH,
        payload_file=env.get(protocol.ENV_PAYLOAD_FILE) or None,
        replay_of=env.get(protocol.ENV_REPLAY_OF) or None,
        retries_left=_number(env.get(protocol.ENV_RETRIES_LEFT)),
    )


def _number(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def load_entrypoint(spec: str | None) -> tuple[Callable[..., Any], type[BaseModel] | None, str | None, Hooks]:
    """(function, payload model, task id, its own hooks) named by ``module:function``. A module that is missing
    or names nothing callable is a permanent error; errors raised while importing it are not."""
    if not spec or spec.count(":") != 1:
        raise InvalidEntrypoint(f"{protocol.ENV_ENTRYPOINT} must be 'module:function', not {spec!r}")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise InvalidEntrypoint(f"entry point {spec!r}: no module named {e.name!r}") from None
        raise
    target = getattr(module, attr, None)
    if isinstance(target, TaskDefinition):
        return target.fn, target.payload_model, target.id, target.hooks
    if target is None or not callable(target) or isinstance(target, type):
        raise InvalidEntrypoint(f"entry point {spec!r}: module {module_name!r} has no function {attr!r}")
    return target, payload_model_of(target), None, Hooks()


def describe_validation_error(error: ValidationError, limit: int = 5) -> str:
    """One line per problem, as ``field.path: message``."""
    problems = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in error.errors()]
    more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def payload_text(invocation: Invocation, read_run: RunReader, grant_dir: str = protocol.GRANT_DIR) -> str | None:
    """The payload's JSON text: from the environment when it is there, else from the object store
    through the attempt's grant (spec.payloadRef: runtime.payloads), else from the payload file,
    else from the TaskRun (the operator leaves payloads over PAYLOAD_FILE_LIMIT out of the file)."""
    if invocation.payload is not None:
        return invocation.payload
    granted = read_payload_grant(grant_dir)
    if granted is not None:
        return fetch_payload(granted)
    if not invocation.payload_file:
        return None
    try:
        with open(invocation.payload_file, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        pass
    log.info("no %s (payloads over %d bytes have none): reading the payload from TaskRun %s/%s",
             invocation.payload_file, protocol.PAYLOAD_FILE_LIMIT, invocation.namespace, invocation.run)
    run = read_run(invocation.namespace, invocation.run)
    uid = (run.get("metadata") or {}).get("uid")
    # A TaskRun deleted and created again under the same name is another run, with another payload.
    # (run_uid falls back to the run's name when the environment has no uid: nothing to compare then.)
    if invocation.run_uid not in ("", invocation.run) and uid != invocation.run_uid:
        raise RuntimeError(f"TaskRun {invocation.namespace}/{invocation.run} is now another run "
                           f"(uid {uid}, this attempt's is {invocation.run_uid})")
    spec = run.get("spec") or {}
    if spec.get("payloadRef") is not None:
        raise no_grant_error(invocation.namespace, invocation.run, spec["payloadRef"])
    return protocol.encode_payload(spec.get("payload"))


def parse_payload(text: str | None, model: type[BaseModel] | None) -> Any:
    """The payload to pass to the task: the model instance when there is a model."""
    try:
        payload = json.loads(text) if text else None
    except ValueError as e:
        raise InvalidPayload(f"the payload is not JSON: {e}") from None
    if model is None:
        return payload
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        raise InvalidPayload(f"payload does not match {model.__name__}: {describe_validation_error(e)}") from None


def run_task(invocation: Invocation, store: CheckpointStore, clock: Clock = utcnow,
             read_run: RunReader = kube.read_taskrun, grant_dir: str = protocol.GRANT_DIR) -> Exit:
    """Runs one attempt and decides how it ends. Never raises (but for KeyboardInterrupt)."""
    try:
        fn, model, task_id, own_hooks = load_entrypoint(invocation.entrypoint)
        payload = parse_payload(payload_text(invocation, read_run, grant_dir), model)
    except (InvalidEntrypoint, InvalidPayload, PayloadUnavailable, Stopped) as e:
        return outcome.failed(e, with_traceback=False)
    except Exception as e:  # the module raised while being imported, or reading the TaskRun failed: may pass
        return outcome.failed(e)

    task_id = invocation.task or task_id or fn.__name__
    checkpoints = Checkpoints(store, read_step_grant(grant_dir))  # step outputs above the threshold: the store
    steps = Steps(checkpoints, invocation.run_uid or invocation.run, invocation.attempt, clock,
                  run=invocation.run, namespace=invocation.namespace)
    metadata = RunMetadata(checkpoints)
    ctx = Context(run_id=invocation.run, task_id=task_id, attempt=invocation.attempt, namespace=invocation.namespace,
                  payload=payload, step=steps, run_uid=invocation.run_uid, replay_of=invocation.replay_of,
                  logger=logging.getLogger(f"kubetasks.task.{task_id}"), metadata=Metadata(metadata))
    hooks = global_hooks().then(own_hooks)  # read now: the module registered its global hooks on import
    checkpoints.resumed = lambda record: lifecycle.waited(hooks, payload, Wait(
        record.kind, record.key, until=record.wake_at or record.timeout_at, on=record.waiting_on or ()), ctx, "on_resume")
    uid = invocation.run_uid if invocation.run_uid not in ("", invocation.run) else None  # else: no uid to compare
    asked: list[bool] = []  # whether the run was cancelled, once a SIGTERM made it a question

    def cancelled() -> bool:
        if not asked:
            asked.append(run_cancelled(read_run, invocation.namespace, invocation.run, uid))
        return asked[0]

    try:
        return run_attempt(fn, payload, ctx, hooks, invocation, checkpoints, grant_dir, clock, cancelled)
    except Stopped as e:  # between the task's end and its outcome
        return outcome.failed(e, with_traceback=False)
    finally:
        with contextlib.suppress(Stopped):  # a SIGTERM now: the outcome stands, and is reported
            bridge.close()  # what async hooks left running ends before the attempt reports
        if not any(asked):  # a cancelled run has ended: the operator took its pods' access
            _flush_metadata(metadata)  # after every hook: what they recorded is the operator's to read


def run_attempt(fn: Callable[..., Any], payload: Any, ctx: Context, hooks: Hooks, invocation: Invocation,
                checkpoints: Checkpoints, grant_dir: str = protocol.GRANT_DIR, clock: Clock = utcnow,
                cancelled: Callable[[], bool] = lambda: False) -> Exit:
    """The task inside its hooks (runtime.lifecycle), and how the attempt ends. The middleware
    wraps everything: ``next()`` runs on_start_attempt, the task, catch_error and the ending
    hooks, then returns the task's output or raises its error. The outcome is decided inside;
    what the middleware does after ``next()`` (swallow, replace or raise) no longer changes it,
    nor does a SIGTERM (runtime.stopping) that comes after the task returned. A SIGTERM before
    that stops the attempt: on_cancel when ``cancelled()`` says the run was."""
    decided: list[Exit] = []
    raised: list[BaseException] = []  # the error that decided it, which middleware may pass on

    def succeeded(value: Any) -> Exit:
        ended = outcome.succeeded(value, keep=result_keeper(invocation, checkpoints, grant_dir))
        decided.append(ended)  # before the hooks: a SIGTERM during them does not undo it
        if ended.report.outcome == "succeeded":
            after(hooks, payload, ctx, Outcome(ok=True, output=value), last=True)
        else:  # the result could not be reported: a failure, with its own last-attempt rule
            _after_failure(hooks, payload, ctx, ended, RuntimeError(ended.report.error_message or "failed"),
                           invocation)
        return ended

    def everything() -> Any:
        try:
            for hook in hooks.on_start_attempt:
                call(hook, payload, ctx)
            value = call(fn, *call_arguments(fn, payload, ctx))
        except SystemExit as e:
            if outcome.exited(e.code).code != protocol.EXIT_SUCCESS:
                raise  # its code is the Task's to read (permanentExitCodes): no hook guesses at it
            value = None
        except Exception as e:
            decided.append(_failed(payload, e, ctx, hooks, invocation, clock))
            raised.append(e)
            raise
        succeeded(value)
        return value

    try:
        returned = wrapped(hooks.middleware, payload, ctx, everything)()
    except SleepRequested as s:  # not an end: no catch_error, no on_success/on_failure/on_complete
        lifecycle.waited(hooks, payload, Wait("sleep", s.key, until=s.wake_at), ctx)
        return outcome.sleeping(s.wake_at)
    except WaitRequested as w:
        lifecycle.waited(hooks, payload, Wait("wait", w.key, on=tuple(w.runs)), ctx)
        return outcome.waiting()
    except SystemExit as e:
        return outcome.exited(e.code)
    except Stopped as e:
        return decided[0] if decided else _stopped(e, payload, ctx, hooks, cancelled)
    except Exception as e:
        if decided:
            if not raised or e is not raised[0]:
                log.warning("middleware raised %s after the attempt's outcome was decided: %s (the outcome stands)",
                            type(e).__name__, e)
            return decided[0]
        return _failed(payload, e, ctx, hooks, invocation, clock)  # middleware failed before next()
    if decided:
        return decided[0]
    return succeeded(returned)  # a middleware that never called next(): its value is the result


def _stopped(error: Stopped, payload: Any, ctx: Context, hooks: Hooks, cancelled: Callable[[], bool]) -> Exit:
    """An attempt stopped by SIGTERM: on_cancel when its run was cancelled (or deleted). A failure
    all the same, for the operator, which has decided the run's end (Cancelled, TimedOut) or a
    retry (an evicted pod) from the Job."""
    if cancelled():
        log.info("the run was cancelled: on_cancel hooks run")
        lifecycle.cancelled(hooks, payload, ctx)
    return outcome.failed(error, with_traceback=False)


def _failed(payload: Any, error: Exception, ctx: Context, hooks: Hooks, invocation: Invocation,
            clock: Clock) -> Exit:
    """A failed attempt: catch_error's decision (none for AbortTaskRun), then the report."""
    decision = None if isinstance(error, AbortTaskRun) else lifecycle.decide(hooks, payload, error, ctx)
    reported = decision.error if decision is not None and decision.error is not None else error
    ended = outcome.failed(reported)
    if decision is not None and decision.skip_retrying:
        ended = outcome.not_retried(ended)
    elif decision is not None:
        try:
            at = decision.when(clock())
        except (TypeError, ValueError) as e:
            log.warning("catch_error asked for a retry time that is not one (%s): the retry policy applies", e)
            at = None
        if at is not None:
            ended = outcome.retried_at(ended, at)
    _after_failure(hooks, payload, ctx, ended, reported, invocation)
    return ended


def _after_failure(hooks: Hooks, payload: Any, ctx: Context, ended: Exit, error: BaseException,
                   invocation: Invocation) -> None:
    last = (ended.code == protocol.EXIT_PERMANENT or ended.report.skip_retrying
            or invocation.retries_left is None or invocation.retries_left <= 0)
    after(hooks, payload, ctx, Outcome(ok=False, error=error), last=last)


def _flush_metadata(metadata: RunMetadata) -> None:
    """The attempt's last metadata, written before it reports (and the operator reads it): a
    failed write is logged, never the attempt's outcome."""
    try:
        metadata.flush()
    except (Exception, Stopped) as e:
        log.warning("could not write the run's metadata at the attempt's end: %s", e)


def result_keeper(invocation: Invocation, checkpoints: Checkpoints, grant_dir: str) -> outcome.Keep:
    """How this attempt keeps a result too large for its termination message (runtime.results)."""
    def keep(text: str) -> dict[str, Any]:
        return keep_result(text, invocation.attempt, invocation.checkpoints, checkpoints.save_value,
                           checkpoints.used, read_grant(grant_dir))
    return keep


def write_report(path: str, report: protocol.Report) -> None:
    """Writes the termination message; when that is impossible (a local run), prints it."""
    text = report.encode()
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        log.debug("cannot write %s (%s)", path, e)
        print(text, file=sys.stderr)


def _configure_logging() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:  # line by line, so the log of a pod that crashes hard is complete
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            pass
    if not logging.getLogger().handlers:
        logging.basicConfig(level=os.environ.get("KUBETASKS_LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _log_end(result: Exit) -> None:
    report = result.report
    if report.outcome == "failed":
        log.error("attempt failed (exit %d): %s: %s", result.code, report.error_type, report.error_message)
        if report.traceback:
            print(report.traceback, file=sys.stderr, end="")
    elif report.outcome == "sleeping" and report.wake_at:
        log.info("sleeping until %s", report.wake_at.isoformat())
    elif report.outcome == "waiting":
        log.info("waiting for child runs: the next attempt starts when they have finished")
    else:
        log.info("attempt succeeded")


def main(env: Mapping[str, str] | None = None) -> int:
    """Runs the attempt described by ``env`` (default: the process environment); the exit code."""
    _configure_logging()
    invocation = invocation_from_env(os.environ if env is None else env)
    store: CheckpointStore
    if invocation.checkpoints:
        store = ConfigMapStore(invocation.checkpoints, invocation.namespace)
    else:
        log.info("%s is not set: steps are checkpointed in memory only", protocol.ENV_CHECKPOINTS)
        store = MemoryStore()
    log.info("run %s attempt %d: %s", invocation.run, invocation.attempt, invocation.entrypoint)
    attributes: dict[str, str | int] = {"kubetasks.run": invocation.run, "kubetasks.namespace": invocation.namespace,
                                        "kubetasks.task": invocation.task, "kubetasks.attempt": invocation.attempt}
    with sigterm_stops() as attempt_ended:  # to its report: a SIGTERM after the outcome waits for it
        with tracing.attempt_span(os.environ if env is None else env, f"task {invocation.task or invocation.run}",
                                  attributes) as ended:
            result = run_task(invocation, store)
            attempt_ended()
            report = result.report
            ended(f"{report.error_type}: {report.error_message}" if report.outcome == "failed" else None)
        _log_end(result)
        write_report(invocation.termination_log, report)
    return result.code
