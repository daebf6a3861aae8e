"""Signed completion URLs of tokens (core.token_urls): a URL completes the one token, until the one
expiry, it was signed for, with the run key of the run that made the token; anything else is
refused alike. And the pod's side: the URL from the run key in its grant."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, strategies as st

from kubetasks import kube, protocol
from kubetasks.controller.token_completion import CompletionServer, TokenUrls
from kubetasks.core.token_urls import (
    LIFETIME, REFUSED, completion_url, run_key, signature_refusal, token_refusal, url_expiry,
)
from kubetasks.runtime.tokens import completion_url as pod_url
from tests.unit.test_reconcile_runs import NS, World, task, taskrun

MASTER = b"m" * 32
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
LATER = int((NOW + timedelta(hours=1)).timestamp())


def waitpoint(run_uid: str = "uid-1", owner: str | None = "uid-1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "r-approve-abc", "namespace": "shop"}
    if owner:
        meta["ownerReferences"] = [{"kind": "TaskRun", "name": "r", "uid": owner, "controller": True}]
    return {"metadata": meta, "spec": {"run": "r", "runUid": run_uid, "step": "approve"}}


def query(url: str) -> tuple[str, str, str]:
    q = parse_qs(urlsplit(url).query)
    return q["run"][0], q["expires"][0], q["sig"][0]


def signed(name: str = "r-approve-abc", expires: int = LATER, uid: str = "uid-1") -> tuple[str, str, str]:
    return query(completion_url("https://tasks.example.com", run_key(MASTER, uid), uid, "shop", name, expires))


def refusal(*url: str | None, name: str = "r-approve-abc", namespace: str = "shop", now: float = 0,
            master: bytes = MASTER, found: dict[str, Any] | None = None) -> tuple[int, str] | None:
    """What the operator answers, in its order: the signature, then the token it names."""
    run, expires, sig = url
    return signature_refusal(master, namespace, name, run, expires, sig, now) or \
        token_refusal(waitpoint() if found is None else found, str(run))


def test_a_url_signed_with_its_runs_key_completes_its_token_until_it_expires():
    url = completion_url("https://tasks.example.com/", run_key(MASTER, "uid-1"), "uid-1", "shop", "r-approve-abc", LATER)
    assert url.startswith("https://tasks.example.com/tokens/shop/r-approve-abc?run=uid-1&expires=")
    assert refusal(*query(url), now=NOW.timestamp()) is None
    status, why = refusal(*query(url), now=LATER + 1) or (0, "")
    assert status == 410 and "expired at" in why


def test_anything_else_is_refused_alike():
    run, expires, sig = signed()
    refused = (403, REFUSED)
    assert token_refusal(None, run) == refused  # no such token (checked after the signature)
    assert refusal(run, expires, sig, name="r-approve-other") == refused  # another token
    assert refusal(run, expires, sig, namespace="bank") == refused  # another namespace
    assert refusal(run, str(LATER + 3600), sig) == refused  # a later expiry
    assert refusal(run, expires, sig, master=b"k" * 32) == refused  # another key
    assert refusal("uid-2", expires, sig) == refused  # another run named
    # Another run's pod signs with its own run key and names its own run: not this run's token.
    assert refusal(*signed(uid="uid-2")) == refused
    # A Waitpoint someone else made, naming the run: its run's pods never made it.
    assert refusal(run, expires, sig, found=waitpoint(owner=None)) == refused
    assert refusal(run, expires, sig, found=waitpoint(owner="uid-9")) == refused
    assert refusal(run, expires, sig, found=waitpoint(run_uid="uid-9")) == refused
    for bad in ((None, expires, sig), (run, None, sig), (run, expires, None), (run, "-1", sig), (run, "1e9", sig),
                (run, expires, "")):
        assert refusal(*bad) == refused


@given(st.integers(min_value=0, max_value=63), st.sampled_from("0123456789abcdef"))
def test_a_signature_changed_anywhere_is_refused(at: int, char: str):
    run, expires, sig = signed()
    forged = sig[:at] + char + sig[at + 1:]
    assert (refusal(run, expires, forged) is None) == (forged == sig)


def test_a_url_lives_as_long_as_its_token_or_a_month():
    assert url_expiry(NOW, NOW + timedelta(hours=2)) == int((NOW + timedelta(hours=2)).timestamp()) + 1
    assert url_expiry(NOW, None) == int((NOW + LIFETIME).timestamp()) + 1


def test_the_pod_signs_with_the_run_key_of_its_grant_and_has_no_url_without_one(tmp_path: Path):
    assert pod_url("uid-1", "shop", "r-approve-abc", None, NOW, str(tmp_path)) is None
    (tmp_path / protocol.GRANT_TOKEN_URL_KEY).write_text(run_key(MASTER, "uid-1").hex())
    (tmp_path / protocol.GRANT_TOKEN_URL_BASE).write_text("https://tasks.example.com")
    url = pod_url("uid-1", "shop", "r-approve-abc", NOW + timedelta(minutes=5), NOW, str(tmp_path))
    assert url is not None
    run, expires, sig = query(url)
    assert run == "uid-1" and int(expires) == int((NOW + timedelta(minutes=5)).timestamp()) + 1
    assert refusal(run, expires, sig, now=NOW.timestamp()) is None


def test_with_token_urls_served_an_sdk_attempt_gets_its_run_key_in_its_grant_even_without_a_store():
    w = World(task(entrypoint="app:approval", command=None), taskrun("r"))
    w.op.runs.results.token_urls = TokenUrls(MASTER, "https://tasks.example.com/")
    w.settle("r")
    [secret] = [o for (kind, ns, _), o in w.api.objects.items() if kind == "Secret" and ns == NS]
    uid = w.api.objects[("TaskRun", NS, "r")]["metadata"]["uid"]
    assert secret["stringData"] == {protocol.GRANT_TOKEN_URL_KEY: run_key(MASTER, uid).hex(),
                                    protocol.GRANT_TOKEN_URL_BASE: "https://tasks.example.com"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == uid
    pod = w.api.objects[("Job", NS, "r-1")]["spec"]["template"]["spec"]
    assert {"name": "kubetasks-grant", "secret": {"secretName": secret["metadata"]["name"], "defaultMode": 0o440}} \
        in pod["volumes"]


def test_without_them_and_without_a_store_no_grant_is_made():
    w = World(task(entrypoint="app:approval", command=None), taskrun("r"))
    w.settle("r")
    assert not [k for k in w.api.objects if k[0] == "Secret" and k[1] == NS]
    assert "kubetasks-grant" not in str(w.api.objects[("Job", NS, "r-1")])


def test_the_server_reads_nothing_for_a_forged_url_and_completes_a_good_one_once(monkeypatch):
    """The completion endpoint's order: the signature before any API request, so forged requests
    cost the API server nothing; then the token, written once."""
    made = {**waitpoint(), "metadata": {**waitpoint()["metadata"], "uid": "wp-uid", "resourceVersion": "7"}}
    reads: list[str] = []
    writes: list[dict[str, Any]] = []

    def get(resource: Any, namespace: str, name: str) -> dict[str, Any] | None:
        reads.append(name)
        return made if name == "r-approve-abc" else None

    def patch_status(plural: str, namespace: str, name: str, status: dict[str, Any], *_: Any) -> dict[str, Any]:
        writes.append(status)
        made["status"] = status
        return made

    monkeypatch.setattr(kube, "get", get)
    monkeypatch.setattr(kube, "patch_status", patch_status)
    run, expires, sig = signed(expires=int(time.time()) + 3600)  # the server reads the real clock
    good = f"/tokens/shop/r-approve-abc?run={run}&expires={expires}&sig={sig}"

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        async with TestClient(TestServer(CompletionServer(TokenUrls(MASTER, "https://t")).app())) as client:
            said = []
            for path, body in ((good.replace(sig, "0" * 64), {"a": 1}), (good.replace("run=uid-1", "run=uid-2"), 1),
                               (good, {"approved": True}), (good, {"approved": False})):
                answer = await client.post(path, json=body)
                said.append((answer.status, await answer.json()))
            return said

    forged, other_run, first, second = asyncio.run(scenario())
    assert forged == other_run == (403, {"error": REFUSED})
    assert reads == ["r-approve-abc", "r-approve-abc"], "forged URLs read nothing"
    assert first == (200, {"completed": True, "phase": "Completed"})
    assert second[0] == 200 and second[1]["completed"] is False and len(writes) == 1
    assert writes[0]["data"] == {"approved": True}
