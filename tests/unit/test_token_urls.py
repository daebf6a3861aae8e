"""Signed completion URLs of tokens (core.token_urls): a URL completes the one token, until the one
expiry, it was signed for, with the run key of the run that made the token; anything else is
refused alike. And the pod's side: the URL from the run key in its grant."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hypothesis import given, strategies as st

from kubetasks import protocol
from kubetasks.controller.token_completion import TokenUrls
from kubetasks.core.token_urls import LIFETIME, REFUSED, completion_url, run_key, url_expiry, url_refusal
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


def query(url: str) -> tuple[str, str]:
    q = parse_qs(urlsplit(url).query)
    return q["expires"][0], q["sig"][0]


def signed(name: str = "r-approve-abc", expires: int = LATER, uid: str = "uid-1") -> tuple[str, str]:
    return query(completion_url("https://tasks.example.com", run_key(MASTER, uid), "shop", name, expires))


def test_a_url_signed_with_its_runs_key_completes_its_token_until_it_expires():
    url = completion_url("https://tasks.example.com/", run_key(MASTER, "uid-1"), "shop", "r-approve-abc", LATER)
    assert url.startswith("https://tasks.example.com/tokens/shop/r-approve-abc?expires=")
    expires, sig = query(url)
    assert url_refusal(MASTER, waitpoint(), "shop", "r-approve-abc", expires, sig, NOW.timestamp()) is None
    status, why = url_refusal(MASTER, waitpoint(), "shop", "r-approve-abc", expires, sig, LATER + 1) or (0, "")
    assert status == 410 and "expired at" in why


def test_anything_else_is_refused_alike():
    expires, sig = signed()
    refused = (403, REFUSED)
    assert url_refusal(MASTER, None, "shop", "r-approve-abc", expires, sig, 0) == refused  # no such token
    assert url_refusal(MASTER, waitpoint(), "shop", "r-approve-other", expires, sig, 0) == refused  # another token
    assert url_refusal(MASTER, waitpoint(), "bank", "r-approve-abc", expires, sig, 0) == refused  # another namespace
    assert url_refusal(MASTER, waitpoint(), "shop", "r-approve-abc", str(LATER + 3600), sig, 0) == refused  # later
    assert url_refusal(b"k" * 32, waitpoint(), "shop", "r-approve-abc", expires, sig, 0) == refused  # another key
    # Another run's pod signs with its own run key: not for this run's token.
    assert url_refusal(MASTER, waitpoint(), "shop", "r-approve-abc", *signed(uid="uid-2"), 0) == refused
    # A Waitpoint someone else made, naming the run: its run's pods never signed for it.
    assert url_refusal(MASTER, waitpoint(owner=None), "shop", "r-approve-abc", expires, sig, 0) == refused
    assert url_refusal(MASTER, waitpoint(owner="uid-9"), "shop", "r-approve-abc", expires, sig, 0) == refused
    for bad in ((None, sig), (expires, None), ("-1", sig), ("1e9", sig), (expires, "")):
        assert url_refusal(MASTER, waitpoint(), "shop", "r-approve-abc", *bad, 0) == refused


@given(st.integers(min_value=0, max_value=63), st.sampled_from("0123456789abcdef"))
def test_a_signature_changed_anywhere_is_refused(at: int, char: str):
    expires, sig = signed()
    forged = sig[:at] + char + sig[at + 1:]
    refusal = url_refusal(MASTER, waitpoint(), "shop", "r-approve-abc", expires, forged, 0)
    assert (refusal is None) == (forged == sig)


def test_a_url_lives_as_long_as_its_token_or_a_month():
    assert url_expiry(NOW, NOW + timedelta(hours=2)) == int((NOW + timedelta(hours=2)).timestamp()) + 1
    assert url_expiry(NOW, None) == int((NOW + LIFETIME).timestamp()) + 1


def test_the_pod_signs_with_the_run_key_of_its_grant_and_has_no_url_without_one(tmp_path: Path):
    assert pod_url("shop", "r-approve-abc", None, NOW, str(tmp_path)) is None
    (tmp_path / protocol.GRANT_TOKEN_URL_KEY).write_text(run_key(MASTER, "uid-1").hex())
    (tmp_path / protocol.GRANT_TOKEN_URL_BASE).write_text("https://tasks.example.com")
    url = pod_url("shop", "r-approve-abc", NOW + timedelta(minutes=5), NOW, str(tmp_path))
    assert url is not None
    expires, sig = query(url)
    assert int(expires) == int((NOW + timedelta(minutes=5)).timestamp()) + 1
    assert url_refusal(MASTER, waitpoint(), "shop", "r-approve-abc", expires, sig, NOW.timestamp()) is None


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
