"""Where a client on a user's machine reaches the operator's HTTPS endpoints (/why, /results).

Through the API server's service proxy to the operator's metrics Service
(``KUBETASKS_OPERATOR_SERVICE``: ``NAMESPACE/NAME[:PORT]``, default
``kubetasks-system/kubetasks-metrics:metrics``), as the kubeconfig's user; or at
``KUBETASKS_OPERATOR_URL`` directly (a port-forward, an operator on this machine), its certificate
checked with ``KUBETASKS_OPERATOR_CA``. The user's token travels in ``TOKEN_HEADER`` too (the proxy
drops Authorization). Shared by the CLI (operator_client) and the SDK (runtime.results).
"""

from __future__ import annotations

URL_ENV, SERVICE_ENV, CA_ENV = "KUBETASKS_OPERATOR_URL", "KUBETASKS_OPERATOR_SERVICE", "KUBETASKS_OPERATOR_CA"
DEFAULT_SERVICE = "kubetasks-system/kubetasks-metrics:metrics"
RESULTS_PREFIX = "/results/"


def service_of(value: str) -> tuple[str, str]:
    """``NAMESPACE/NAME[:PORT]`` -> (namespace, the proxy's ``https:NAME:PORT``)."""
    namespace, _, rest = value.partition("/")
    name, _, port = rest.partition(":")
    if not namespace or not name:
        raise ValueError(f"{SERVICE_ENV} must be NAMESPACE/NAME[:PORT], not {value!r}")
    return namespace, f"https:{name}:{port or 'metrics'}"


def proxy_path(namespace: str, service: str, path: str) -> str:
    """The API server's path to ``path`` of the Service (``https:NAME:PORT``) in ``namespace``."""
    return f"/api/v1/namespaces/{namespace}/services/{service}/proxy{path}"
