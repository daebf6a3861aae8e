"""kube's connections to kube-apiserver share one TLS context (kube.one_tls_context): a new
connection reads no CA or client certificate file again, and still proves who it talks to."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
import urllib3

from kubetasks import kube

pytestmark = pytest.mark.cluster


def fresh_get(pool_kwargs: dict[str, Any] | None = None) -> urllib3.BaseHTTPResponse:
    """GET /version on a connection opened for it: the operator's client, its pools emptied."""
    client = kube.api_client()
    manager = client.rest_client.pool_manager
    manager.clear()
    pool = manager.connection_from_url(client.configuration.host, pool_kwargs=pool_kwargs)
    return pool.urlopen("GET", "/version", retries=False)


def test_new_connections_read_no_certificate_again(cluster, monkeypatch):
    fresh_get()  # the client and its context exist before counting
    reads: list[str] = []
    for method in ("load_verify_locations", "load_cert_chain", "load_default_certs"):
        original = getattr(ssl.SSLContext, method)
        monkeypatch.setattr(ssl.SSLContext, method,
                            lambda self, *a, _m=method, _o=original, **k: reads.append(_m) or _o(self, *a, **k))
    statuses = [fresh_get().status for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert reads == [], f"each new connection read certificates again: {reads}"


def test_the_shared_context_still_checks_the_server_name(cluster):
    with pytest.raises(urllib3.exceptions.SSLError, match="certificate verify failed"):
        fresh_get({"server_hostname": "not-the-apiserver.example"})
    assert fresh_get().status == 200  # and the right name still passes
