"""Durable waits for tokens: ``ctx.step.wait_for_token`` and ``ctx.step.create_token``.

A token is a Waitpoint (api.waitpoint), named from the run and the step key
(core.naming.token_name), made by the run's pod with its expiry. A person or an outside system
completes it with ``kubetasks complete NAME --data JSON`` (RBAC: ``update`` on
``waitpoints/status``), or, where the operator serves them, with a POST to the token's signed
``url`` (core.token_urls); the first completion wins. Waiting writes a ``wait`` record naming the
token and ends the attempt: the run is Waiting, with no pod. The operator ends the wait when the
token is completed or timed out, and writes its outcome as a record of its own in the run's
checkpoints (protocol.TOKEN: the pod may not read Waitpoints); the next attempt replays the steps
before, completes the wait's record with the outcome, and the call returns the data or raises
TokenTimeout. A completion made before the run suspends is kept: the Waitpoint exists first.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kubetasks import protocol
from kubetasks.api.common import API_VERSION, GROUP, VERSION
from kubetasks.api.times import format_time
from kubetasks.protocol import TOKEN
from kubetasks.core.naming import LABEL_INSTANCE, token_name
from kubetasks.core.token_urls import completion_url as signed_url, url_expiry
from kubetasks.runtime.checkpoints import Checkpoint, Checkpoints
from kubetasks.runtime.durations import DurationLike, seconds_of
from kubetasks.runtime.errors import DuplicateStepKey, TokenError, TokenTimeout, WaitRequested

log = logging.getLogger("kubetasks.runtime")
PLURAL = "waitpoints"


def waitpoint(name: str, namespace: str, run: str, run_uid: str, key: str, expires_at: datetime | None,
              instance: str | None) -> dict[str, Any]:
    """The Waitpoint of step ``key``'s token, owned by its run (it goes when the run goes)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {},
                            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "TaskRun", "name": run,
                                                 "uid": run_uid, "controller": True}]}
    if instance:
        meta["labels"][LABEL_INSTANCE] = instance
    spec: dict[str, Any] = {"run": run, "runUid": run_uid, "step": key}
    if expires_at is not None:
        spec["expiresAt"] = format_time(expires_at)
    return {"apiVersion": API_VERSION, "kind": "Waitpoint", "metadata": meta, "spec": spec}


class Token(str):
    """A token's name (what ``kubetasks complete`` takes), with ``url``: a signed URL that completes
    it with a POST of the data as JSON, for systems that cannot talk to Kubernetes; None unless the
    operator serves such URLs (the chart's ``tokens.completionUrl``). Whoever holds the URL may
    complete the token: send it only to whoever should."""

    url: str | None

    def __new__(cls, name: str, url: str | None = None) -> Token:
        token = super().__new__(cls, name)
        token.url = url
        return token


def completion_url(run_uid: str, namespace: str, name: str, expires_at: datetime | None, now: datetime,
                   grant_dir: str = protocol.GRANT_DIR) -> str | None:
    """The token's signed completion URL, signed with the run key in the attempt's grant (the pod
    never holds the operator's key); None when the grant has none."""
    base = Path(grant_dir)
    try:
        key = bytes.fromhex((base / protocol.GRANT_TOKEN_URL_KEY).read_text().strip())
        url_base = (base / protocol.GRANT_TOKEN_URL_BASE).read_text().strip()
    except (OSError, ValueError):
        return None
    return signed_url(url_base, key, run_uid, namespace, name, url_expiry(now, expires_at))


def make_token(namespace: str, run: str, run_uid: str, key: str, timeout: DurationLike | None, now: datetime,
               grant_dir: str = protocol.GRANT_DIR) -> Token:
    """Creates the token of step ``key`` unless it exists (a retried attempt made it: its name says
    so, and its expiry stands); returns it."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    from kubetasks.runtime.kube import api_client, with_retries

    name = token_name(run, run_uid, key)
    expires = None if timeout is None else now + timedelta(seconds=seconds_of(timeout))
    body = waitpoint(name, namespace, run, run_uid, key, expires, os.environ.get(protocol.ENV_INSTANCE) or None)
    api = CustomObjectsApi(api_client())
    try:
        with_retries(lambda: api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body),
                     f"creating Waitpoint {namespace}/{name}")
        log.info("token %s made%s", name, f", expires {format_time(expires)}" if expires else "")
    except ApiException as e:
        if e.status != 409:
            raise
    return Token(name, completion_url(run_uid, namespace, name, expires, now, grant_dir))


def wait_for_token(checkpoints: Checkpoints, scoped: str, namespace: str, run: str, run_uid: str, attempt: int,
                   now: datetime, timeout: DurationLike | None) -> Any:
    """The data the token of step ``scoped`` was completed with, once it is; until then the
    attempt ends (WaitRequested). Raises TokenTimeout when it timed out, TokenError when it is gone."""
    record = checkpoints.get(scoped)
    if record is not None and record.kind != "wait":
        raise DuplicateStepKey(f"step key {scoped!r} belongs to a {record.kind}, not a wait_for_token")
    if record is not None and record.completed:
        return token_result(record)
    name = token_name(run, run_uid, scoped)
    outcome = checkpoints.get(TOKEN + name)
    if record is not None and outcome is not None and outcome.completed:  # the operator wrote it: the wait is over
        done = replace(record, attempt=attempt, completed_at=now, result={"tokens": [outcome.result]},
                       duration_seconds=max((now - (record.started_at or now)).total_seconds(), 0.0))
        checkpoints.put(done)
        return token_result(done)
    if record is None:
        make_token(namespace, run, run_uid, scoped, timeout, now)  # before the record: a completion may come now
        checkpoints.put(Checkpoint(key=scoped, kind="wait", attempt=attempt, started_at=now,
                                   waiting_on=(TOKEN + name,)))
        log.info("step %s: waiting for token %s (kubetasks complete %s)", scoped, name, name)
    elif record.attempt != attempt:  # woken before its outcome was written: the wait goes on
        checkpoints.put(replace(record, attempt=attempt))
    raise WaitRequested(scoped, [name])


def token_result(record: Checkpoint) -> Any:
    outcome = ((record.result or {}).get("tokens") or [{}])[0]
    phase, name = outcome.get("phase"), str(outcome.get("token"))
    if phase == "Completed":
        return outcome.get("data")
    message = str(outcome.get("message") or "")
    if phase == "TimedOut":
        raise TokenTimeout(name, message)
    raise TokenError(name, str(phase), message)
