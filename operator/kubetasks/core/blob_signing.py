"""Presigned URLs for the filesystem backend, which has no server of its own to sign for.

S3, GCS and Azure check their own presigned URLs; a ``file://`` store is a directory on the
operator's PVC, so the operator serves it to task pods itself (controller.grant_server) and signs
the URLs it hands them: HMAC-SHA256, with a key only the operator holds, over the method, the
blob's path and the expiry. A URL is good for that one method on that one blob until it expires,
as a presigned S3 URL is; changing any of them (another run's path, a later expiry, PUT for GET)
makes another message, which the signature does not match.

Only blobs kubetasks hands out are served: GET below ``runs/`` and ``payloads/``, PUT below
``runs/`` only (payloads are uploaded through the operator's reviewed ``PUT /payloads``). A path
is plain segments of ``[A-Za-z0-9._-]``: no ``..``, no empty segment, no percent-encoding (the
signed path is the raw one, never a decoded twin), so nothing outside those prefixes (the key's
own file) can be named.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import urlencode

BLOBS_PREFIX = "/blobs/"  # the grant server's route: <grant URL>/blobs/<path>?expires=..&sig=..
KEY_BYTES = 32
METHOD_PREFIXES = {"GET": ("runs/", "payloads/"), "PUT": ("runs/",)}
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def path_refusal(method: str, path: str) -> str | None:
    """Why ``method`` on ``path`` is never granted; None when it may be."""
    prefixes = METHOD_PREFIXES.get(method)
    if prefixes is None:
        return f"{method} is not a method a grant allows"
    segments = path.split("/")
    if any(not _SEGMENT.fullmatch(s) or s in (".", "..") for s in segments):
        return f"{path!r} is not a plain blob path"
    if not path.startswith(prefixes) or len(segments) < 3:
        return f"{method} {path!r} is not below {' or '.join(prefixes)}"
    return None


def signature(key: bytes, method: str, path: str, expires: int) -> str:
    """The hex HMAC-SHA256 of one grant (a path holds no newline: the message is unambiguous)."""
    return hmac.new(key, f"{method}\n{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signed_url(base: str, key: bytes, method: str, path: str, expires: int) -> str:
    """``<base>/blobs/<path>?expires=..&sig=..``; ValueError for a path no grant may name."""
    refused = path_refusal(method, path)
    if refused:
        raise ValueError(refused)
    query = urlencode({"expires": expires, "sig": signature(key, method, path, expires)})
    return f"{base.rstrip('/')}{BLOBS_PREFIX}{path}?{query}"


def grant_refusal(key: bytes, method: str, path: str, expires: str | None, sig: str | None,
                  now: float) -> str | None:
    """Why a request for ``method`` on ``path`` with these query values is refused; None when its
    signature is this key's for exactly them and it has not expired."""
    refused = path_refusal(method, path)
    if refused:
        return refused
    if not expires or not sig or not expires.isdigit() or len(expires) > 12:
        return "not a signed URL (expires and sig are required)"
    # Compared first, then the time: a forged URL learns nothing about the clock.
    if not hmac.compare_digest(signature(key, method, path, int(expires)).encode(), sig.encode()):
        return "the signature does not match"
    if now >= int(expires):
        return "the grant has expired"
    return None
