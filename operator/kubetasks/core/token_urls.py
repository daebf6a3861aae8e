"""Signed completion URLs for tokens: for systems that cannot talk to Kubernetes (opt-in).

A run's pod may hand out a URL that completes one of its tokens with a POST, as Trigger.dev's
``token.url`` does. The operator serves it (controller.token_completion) and holds the one master
key (a Secret the chart makes, mounted into the operator only). A pod never sees the master key:
its attempt's grant Secret (core.grants) holds its *run key*, HMAC(master, run uid), with which
it signs URLs for its own tokens. A URL names its run's uid, one token and one expiry; changing any
makes another message, which the signature does not match. The operator checks the signature
first, with the run key derived again from the uid the URL names, so a forged request costs it an
HMAC and no API request; only then does it read the Waitpoint, which must be that run's (its
``spec.runUid`` and its owner): a pod can sign for no other run's tokens.

Nothing tells a request for a token that does not exist from one with a bad signature: both are
refused alike (403), so the URL space cannot be probed. An expired URL with a good signature says
so (410). A completion is the CLI's (core.waits.completed_token): the first one wins, a later one
changes nothing and says so.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode

from kubetasks.api.times import format_time

PREFIX = "/tokens/"  # <base>/tokens/<namespace>/<name>?run=<uid>&expires=<unix seconds>&sig=<hex>
LIFETIME = timedelta(days=30)  # of a URL for a token that never times out
KEY_BYTES = 32
REFUSED = "not a valid completion URL"


def run_key(master: bytes, run_uid: str) -> bytes:
    """The key a run's pods sign their tokens' URLs with."""
    return hmac.new(master, f"token-url\n{run_uid}".encode(), hashlib.sha256).digest()


def signature(key: bytes, namespace: str, name: str, expires: int) -> str:
    """The hex HMAC-SHA256 of one URL (names hold no newline: the message is unambiguous)."""
    return hmac.new(key, f"{namespace}\n{name}\n{expires}".encode(), hashlib.sha256).hexdigest()


def url_expiry(now: datetime, token_expires_at: datetime | None) -> int:
    """When a token's URL stops working: with the token, else after :data:`LIFETIME`."""
    return int((token_expires_at or now + LIFETIME).timestamp()) + 1


def completion_url(base: str, key: bytes, run_uid: str, namespace: str, name: str, expires: int) -> str:
    """The URL of token ``namespace/name`` of run ``run_uid``, signed with that run's ``key``."""
    query = urlencode({"run": run_uid, "expires": expires, "sig": signature(key, namespace, name, expires)})
    return f"{base.rstrip('/')}{PREFIX}{quote(namespace)}/{quote(name)}?{query}"


def signature_refusal(master: bytes, namespace: str, name: str, run_uid: str | None, expires: str | None,
                      sig: str | None, now: float) -> tuple[int, str] | None:
    """(HTTP status, why) a URL is refused before anything is read; None when its signature is the
    run key's of the run it names, for exactly this token and expiry, and it has not expired."""
    if not run_uid or not expires or not expires.isdigit() or not sig:
        return 403, REFUSED
    if not hmac.compare_digest(signature(run_key(master, run_uid), namespace, name, int(expires)), sig):
        return 403, REFUSED
    if int(expires) <= now:
        return 410, f"the URL expired at {format_time(datetime.fromtimestamp(int(expires), timezone.utc))}"
    return None


def token_refusal(waitpoint: dict[str, Any] | None, run_uid: str) -> tuple[int, str] | None:
    """(403, why) when the token is not one run ``run_uid`` made (gone, or planted naming it):
    refused as a bad signature is."""
    spec = (waitpoint or {}).get("spec") or {}
    owners = [o.get("uid") for o in ((waitpoint or {}).get("metadata") or {}).get("ownerReferences") or []
              if o.get("controller")]
    if waitpoint is None or spec.get("runUid") != run_uid or owners != [run_uid]:
        return 403, REFUSED
    return None
