"""The one module that talks to Kubernetes (the official client, which is synchronous).

Everything here is blocking and small; the controller calls it through ``asyncio.to_thread``.
Every request has a connect and a read timeout (a hung API server must not hold a worker
forever), and connections use TCP keep-alive. Lists and watches read raw JSON (no model
deserialization): the informers' hot path.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, cast

from urllib.parse import urlsplit

import kubernetes
import kubernetes.watch
import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.keepalive import tcp_keepalive_socket_options
from prometheus_client import Counter, Histogram

from kubetasks.api.common import GROUP, VERSION
from kubetasks.core.echo import bounded

_lock = threading.Lock()
_client: ApiClient | None = None
COMPONENT = "kubetasks-operator"

# Requests this process makes outside kopf's watches: what "API calls per run" costs.
API_REQUESTS = Counter("kubetasks_api_requests_total", "Requests to the API server (kopf's own excluded)",
                       ["method", "resource"])
# Until the response's headers (client-go's rest_client_request_duration_seconds): with the watch
# that shows a created object, the API server's share of a run's latency. Watches are left out.
API_REQUEST_SECONDS = Histogram("kubetasks_api_request_duration_seconds", "Requests to the API server, until the response",
                                ["method", "resource"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def resource_of(url: str) -> str:
    """``/apis/batch/v1/namespaces/ns/jobs/j`` -> ``jobs``; subresources as ``taskruns/status``."""
    parts = urlsplit(url).path.strip("/").split("/")
    parts = parts[2:] if parts[:1] == ["api"] else parts[3:]  # drop api/v1 or apis/<group>/<version>
    if parts[:1] == ["namespaces"] and len(parts) > 2:
        parts = parts[2:]
    return "/".join(parts[0:1] + parts[2:3])


# (connect, read) seconds for every request that does not set its own. The read timeout is
# per socket read, so it bounds a hung server, not a large response.
CONNECT_TIMEOUT, READ_TIMEOUT = 5.0, 30.0


class CountingApiClient(ApiClient):
    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        resource = resource_of(url)
        API_REQUESTS.labels(method, resource).inc()
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = (CONNECT_TIMEOUT, READ_TIMEOUT)
        # A watch lasts as long as it streams: its time says nothing of the API server's speed.
        timer: AbstractContextManager[Any] = (
            nullcontext() if "watch=true" in url else API_REQUEST_SECONDS.labels(method, resource).time())
        with timer:
            return super().call_api(method, url, *args, **kwargs)


_context: str | None = None


def use_context(context: str | None) -> None:
    """Use this kubeconfig context rather than the current one (the CLI's ``--context``); call
    it before the first request."""
    global _context
    _context = context


def api_client() -> ApiClient:
    """A shared client: in-cluster config in a pod, else $KUBECONFIG (loaded once)."""
    global _client
    with _lock:
        if _client is None:
            config = kubernetes.client.Configuration()
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                kubernetes.config.load_incluster_config(client_configuration=config)
            else:
                # $KUBECONFIG as it is now: the client reads it once, when first imported.
                kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                                   context=_context, client_configuration=config)
            config.connection_pool_maxsize = 64  # the workers, the informers and the election
            config.socket_options = tcp_keepalive_socket_options()  # client-go's 30 s keep-alive
            _client = CountingApiClient(config)
            one_tls_context(_client.rest_client.pool_manager)
        return _client


def one_tls_context(manager: urllib3.PoolManager) -> None:
    """Makes every new connection share one TLS context, its CA and client certificate read once.
    Left to itself urllib3 builds a context for each connection and reads those files into it
    again: 1.5 ms more CPU for each new connection (bench/tls_connections.py). A burst after a
    quiet spell opens one connection per busy worker (kube-apiserver closes idle ones after 90 s),
    so that is paid as every burst starts. client-go too reads them once, when it builds its
    transport: a rotated CA is read at the next start."""
    pool = manager.connection_pool_kw
    if pool.get("ssl_context") is not None:
        return
    context = urllib3.util.ssl_.create_urllib3_context(cert_reqs=pool.get("cert_reqs"))
    if pool.get("ca_certs") or pool.get("ca_cert_data"):
        context.load_verify_locations(cafile=pool.get("ca_certs"), cadata=pool.get("ca_cert_data"))
    else:  # as urllib3 does when given no CA: the system's
        context.load_default_certs()
    if pool.get("cert_file"):
        context.load_cert_chain(pool["cert_file"], pool.get("key_file"))
    pool.update(ssl_context=context, ca_certs=None, ca_cert_data=None, cert_file=None, key_file=None)
    manager.clear()


def custom() -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client())


def core() -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client())


def is_status(e: Exception, *codes: int) -> bool:
    return isinstance(e, ApiException) and e.status in codes


def is_transient(e: Exception) -> bool:
    """An error that a later try may not meet: the API server busy (429, 5xx), timing out,
    unreachable, or a conflict with another writer (409). Other 4xx say the request is wrong."""
    if isinstance(e, ApiException):
        return not e.status or e.status in (408, 409, 429) or e.status >= 500
    return isinstance(e, (urllib3.exceptions.HTTPError, OSError, TimeoutError))


def error_line(e: Exception, limit: int = 900) -> str:
    """One line on why a request failed: an API error's code, reason and the server's message."""
    if isinstance(e, ApiException):
        message = ""
        try:
            message = str(json.loads(e.body or "{}").get("message") or "")
        except (ValueError, AttributeError):
            message = str(e.body or "")
        line = f"{e.status} {e.reason}" + (f": {message}" if message else "")
    else:
        line = f"{type(e).__name__}: {e}"
    first = line.strip().splitlines()[0] if line.strip() else type(e).__name__
    return first[:limit]


def is_conflict(e: Exception) -> bool:
    """409: a write's resourceVersion is not the object's (it changed, or another object was
    re-created under the name), or a create's name is taken."""
    return is_status(e, 409)


def guarded(patch: dict[str, Any], uid: str | None, resource_version: str | None = None) -> dict[str, Any]:
    """A merge patch meant for the object ``uid`` as it was at ``resource_version``. In the body,
    a resourceVersion is a precondition: the API server answers 409 Conflict when the object is
    at another (changed since, or deleted and re-created under the name: resourceVersions are
    etcd revisions, never reused), and this holds on the status subresource too. The uid is
    checked only outside status (a 422, the field being immutable): the status subresource keeps
    the stored metadata. So the resourceVersion is what keeps a write off another object; both
    cost no request."""
    meta = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
    return {**patch, "metadata": {**(patch.get("metadata") or {}), **meta}} if meta else patch


def patch_status(plural: str, namespace: str, name: str, status: dict[str, Any], uid: str | None = None,
                 resource_version: str | None = None, old: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Patches the status subresource of the object ``uid`` at ``resource_version``
    (:func:`guarded`); returns the new object (None when it is gone); 409 when it is not at that
    version. ``status`` is a merge patch (null: remove the field). Given ``old``, the whole status
    it was decided from, at that version, the write is a JSON Patch that sets each field whole
    (:func:`status_ops`): a merge patch would drop the nulls inside a value (a task's result
    ``{"decision": null}``) and merge an object into the one before instead of replacing it."""
    resource = Resource(GROUP, VERSION, plural)
    if old is None:
        return merge_patch(resource, namespace, name, guarded({"status": status}, uid, resource_version), "status")
    ops = status_ops(old, status)
    if resource_version:  # a precondition, as in a merge patch: 409 when the object is at another version
        ops.insert(0, {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version})
    try:
        return _patch(resource, namespace, name, ops, "application/json-patch+json", "status")
    except ApiException as e:
        # The operations meet the object as it is now before the precondition is checked: on an
        # object re-created or changed since, a field to remove or to add to is not there (422).
        # That is the 409 a merge patch would have had.
        if e.status == 422 and resource_version:
            now = get(resource, namespace, name)
            if now is None:
                return None
            if (now.get("metadata") or {}).get("resourceVersion") != resource_version:
                raise ApiException(status=409, reason=f"Conflict: {plural} {namespace}/{name} changed since "
                                                      f"resourceVersion {resource_version}") from e
        raise


def status_ops(old: dict[str, Any], patch: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch (RFC 6902) operations that make the status ``old`` what the merge patch
    ``patch`` of its top-level fields says, each field set whole; no status yet: all of it at once."""
    if not old:
        return [{"op": "add", "path": "/status", "value": {k: v for k, v in patch.items() if v is not None}}]
    return [{"op": "remove", "path": f"/status/{_pointer(k)}"} if v is None
            else {"op": "add", "path": f"/status/{_pointer(k)}", "value": v}
            for k, v in patch.items() if v is not None or k in old]


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def replace_status(plural: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """PUTs ``body``'s status (RBAC: ``update`` on ``<plural>/status``), only at the resourceVersion
    ``body`` carries: 409 when the object changed since it was read."""
    return cast(dict[str, Any], custom().replace_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural, name, body))


def get_custom(plural: str, namespace: str, name: str) -> dict[str, Any]:
    return cast(dict[str, Any], custom().get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name))


def create_custom(plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Creates a custom object (generateName allowed); returns it as created."""
    return cast(dict[str, Any], custom().create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body))


def watch_custom(plural: str, namespace: str, name: str, timeout: float) -> Iterator[dict[str, Any]]:
    """The object now, then each new version of it, until ``timeout`` seconds have passed.

    Re-lists when the server ends the watch or its resourceVersion expires (410 Gone)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        listed = cast(dict[str, Any], custom().list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, field_selector=f"metadata.name={name}"))
        yield from listed["items"]
        try:
            for event in kubernetes.watch.Watch().stream(
                    custom().list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
                    field_selector=f"metadata.name={name}", resource_version=listed["metadata"]["resourceVersion"],
                    timeout_seconds=max(1, int(left)),
                    _request_timeout=(CONNECT_TIMEOUT, max(1, int(left)) + READ_TIMEOUT)):
                if event["type"] in ("ADDED", "MODIFIED"):
                    yield cast(dict[str, Any], event["object"])
        except ApiException as e:
            if e.status != 410:
                raise


def patch_spec(plural: str, namespace: str, name: str, patch: dict[str, Any], uid: str | None = None,
               resource_version: str | None = None) -> None:
    """Merge-patches an object, only at ``resource_version`` (409) and only the one with ``uid``
    (422), when given (:func:`guarded`); 404 when it does not exist."""
    if merge_patch(Resource(GROUP, VERSION, plural), namespace, name, guarded(patch, uid, resource_version)) is None:
        raise ApiException(status=404, reason=f"{plural} {namespace}/{name} not found")


def list_custom(plural: str, namespace: str | None = None, label_selector: str = "") -> list[dict[str, Any]]:
    if namespace:
        found = custom().list_namespaced_custom_object(GROUP, VERSION, namespace, plural, label_selector=label_selector)
    else:
        found = custom().list_cluster_custom_object(GROUP, VERSION, plural, label_selector=label_selector)
    return cast(list[dict[str, Any]], cast(dict[str, Any], found)["items"])


def list_pods(namespace: str, label_selector: str) -> list[dict[str, Any]]:
    """Pods as the API server's watch cache has them (resourceVersion=0): no wait for etcd. What
    the callers look for (a finished or stuck attempt's pods) is older than the Job event that
    sent them, which came through the same cache."""
    return cast(list[dict[str, Any]], list_page(PODS, namespace, label_selector, limit=0, resource_version="0")["items"])


def get_configmap_data(namespace: str, name: str) -> dict[str, str] | None:
    found = get(CONFIGMAPS, namespace, name)
    return None if found is None else cast(dict[str, str], found.get("data") or {})


def read_log(namespace: str, pod: str, tail_lines: int, limit_bytes: int) -> bytes:
    """The last ``tail_lines`` lines of a pod's log, at most ``limit_bytes`` of them (their start).
    A pod on a node without a real kubelet (kwok) answers an error: one request, never retried."""
    query = {"tailLines": tail_lines, "limitBytes": limit_bytes}
    return cast(bytes, _request("GET", PODS.path(namespace, pod) + "/log", query).read())


LOG_STREAM_TIMEOUT = (CONNECT_TIMEOUT, 60.0)  # a kubelet silent this long mid-log is taken for gone
LOG_FOLLOW_TIMEOUT = (CONNECT_TIMEOUT, 86400.0)  # a running container may be quiet for long (TCP keepalive)
LOG_CHUNK = 1024 * 1024


def stream_log(namespace: str, pod: str, follow: bool = False) -> Iterator[bytes]:
    """A pod's log in chunks as they arrive, never all of it in memory: what the kubelet has of a
    finished container (its current log file: one rotated away while it ran is not in it), or,
    ``follow``ing a running one, everything from now until it ends (across the kubelet's rotations)."""
    response = _request("GET", PODS.path(namespace, pod) + "/log", {"follow": "true" if follow else None},
                        timeout=LOG_FOLLOW_TIMEOUT if follow else LOG_STREAM_TIMEOUT, accept="*/*")
    try:
        yield from response.response.stream(LOG_CHUNK, decode_content=True)
    finally:
        response.response.release_conn()


def list_by_fields(resource: Resource, namespace: str, field_selector: str, limit: int = 500) -> list[dict[str, Any]]:
    """At most ``limit`` objects that match a field selector (the Events of one object, say)."""
    response = _request("GET", resource.path(namespace), {"fieldSelector": field_selector, "limit": limit})
    return cast(list[dict[str, Any]], json.loads(response.read()).get("items") or [])


def post_event(obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """Records a core/v1 Event on an object, for ``kubectl describe``."""
    meta = obj["metadata"]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    event: Any = {
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid"),
                           "resourceVersion": meta.get("resourceVersion")},
        "type": type_, "reason": reason, "message": bounded(message),  # printable, as every echo
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
        "firstTimestamp": now.isoformat(), "lastTimestamp": now.isoformat(), "count": 1,
    }
    _request("POST", EVENTS.path(meta["namespace"]), body=event).read()


# Raw list and watch, for the controller's informers -----------------------------------------

@dataclass(frozen=True)
class Resource:
    """A namespaced API resource, for raw requests."""

    group: str  # "" for the core group
    version: str
    plural: str
    # Lists and watches answer only each object's metadata (PartialObjectMetadata, as client-go's
    # metadata informers ask): the API server leaves the rest out, a ConfigMap's data say.
    metadata_only: bool = False

    def accept(self, listing: bool) -> str:
        if not self.metadata_only:
            return "application/json"
        kind = "PartialObjectMetadataList" if listing else "PartialObjectMetadata"
        return f"application/json;as={kind};g=meta.k8s.io;v=v1,application/json"

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        where = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{where}/{self.plural}" + (f"/{name}" if name else "")


TASKS = Resource(GROUP, VERSION, "tasks")
TASKRUNS = Resource(GROUP, VERSION, "taskruns")
TASKQUEUES = Resource(GROUP, VERSION, "taskqueues")
WAITPOINTS = Resource(GROUP, VERSION, "waitpoints")
TASKEVENTS = Resource(GROUP, VERSION, "taskevents")
JOBS = Resource("batch", "v1", "jobs")
CONFIGMAPS = Resource("", "v1", "configmaps")
CONFIGMAP_METADATA = Resource("", "v1", "configmaps", metadata_only=True)
PODS = Resource("", "v1", "pods")
EVENTS = Resource("", "v1", "events")


class Gone(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def _request(method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
             timeout: tuple[float, float] | None = None, content_type: str = "application/json",
             accept: str = "application/json") -> Any:
    """A raw request; the response (unread, for streaming) when it is 2xx, else ApiException.
    The operator's requests take this path: the typed API's validation and model decoding cost
    more CPU than the request itself, and its lazily imported classes serialise threads."""
    client = api_client()
    headers = {"Accept": accept}
    if body is not None:
        headers["Content-Type"] = content_type
    _, url, headers, payload, _ = client.param_serialize(
        method, path, query_params=[(k, v) for k, v in (query or {}).items() if v not in (None, "")],
        header_params=headers, body=body, auth_settings=["BearerToken"])
    response = client.call_api(method, url, headers, payload, _request_timeout=timeout)
    if not 200 <= response.status < 300:
        error = ApiException(status=response.status, reason=response.reason)
        error.body = response.read().decode("utf-8", "replace")
        raise error
    return response


def list_page(resource: Resource, namespace: str | None, label_selector: str = "", limit: int = 500,
              continue_: str | None = None, resource_version: str | None = None) -> dict[str, Any]:
    """One page of a list (``items``, ``metadata.resourceVersion``, ``metadata.continue``)."""
    response = _request("GET", resource.path(namespace), {
        "labelSelector": label_selector, "limit": limit, "continue": continue_, "resourceVersion": resource_version},
        accept=resource.accept(listing=True))
    return cast(dict[str, Any], json.loads(response.read()))


def list_all(resource: Resource, namespace: str | None, label_selector: str = "", limit: int = 500,
             each: Callable[[dict[str, Any]], dict[str, Any]] = lambda item: item) -> tuple[list[dict[str, Any]], str]:
    """Every object of a list, page by page, each passed through ``each`` as its page arrives (a
    store's slimming: the pages' whole objects are not all held at once), and the list's
    resourceVersion, to watch from."""
    items: list[dict[str, Any]] = []
    continue_: str | None = None
    while True:
        page = list_page(resource, namespace, label_selector=label_selector, limit=limit, continue_=continue_)
        items.extend(each(item) for item in page.get("items") or [])
        meta = page.get("metadata") or {}
        continue_ = meta.get("continue")
        if not continue_:
            return items, str(meta.get("resourceVersion"))


# kube-apiserver sends a watch that allows bookmarks one about every minute, however quiet its
# objects. A watch silent for longer is taken for a stopped or partitioned server and reopened:
# above the bookmark period, with room for one late bookmark, so a quiet but healthy watch is not.
WATCH_IDLE_SECONDS = 150.0


def watch(resource: Resource, namespace: str | None, label_selector: str, resource_version: str,
          timeout_seconds: int, idle_seconds: float = WATCH_IDLE_SECONDS) -> Iterator[tuple[str, dict[str, Any]]]:
    """(type, object) of each event after ``resource_version``, bookmarks included, until the
    server ends the watch (after ``timeout_seconds``) or nothing arrives for ``idle_seconds``
    (a stopped or partitioned server). Raises :class:`Gone` when the version is too old, whether
    the server says so in an ERROR event or as the response's status."""
    try:
        response = _request("GET", resource.path(namespace), {
            "watch": "true", "labelSelector": label_selector, "resourceVersion": resource_version,
            "allowWatchBookmarks": "true", "timeoutSeconds": timeout_seconds}, timeout=(CONNECT_TIMEOUT, idle_seconds),
            accept=resource.accept(listing=False))
    except ApiException as e:
        if e.status == 410:
            raise Gone(e.reason or "resourceVersion too old") from e
        raise
    buffer = b""
    try:
        for chunk in _quiet_ends(response.response.stream(65536, decode_content=True)):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(obj.get("message", "resourceVersion too old"))
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                yield event["type"], obj
    finally:
        response.response.release_conn()


def _quiet_ends(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A watch that has been silent for its idle time ends as if the server had ended it: the
    caller resumes from the last version (a stopped server is then noticed by the next request)."""
    try:
        yield from chunks
    except urllib3.exceptions.ReadTimeoutError:
        return


def merge_patch(resource: Resource, namespace: str, name: str, patch: dict[str, Any],
                subresource: str = "") -> dict[str, Any] | None:
    """A JSON merge patch; the object as patched, or None when it does not exist."""
    return _patch(resource, namespace, name, patch, "application/merge-patch+json", subresource)


def _patch(resource: Resource, namespace: str, name: str, body: Any, content_type: str,
           subresource: str = "") -> dict[str, Any] | None:
    path = resource.path(namespace, name) + (f"/{subresource}" if subresource else "")
    try:
        return cast(dict[str, Any], json.loads(_request("PATCH", path, body=body, content_type=content_type).read()))
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def apply(resource: Resource, namespace: str, body: dict[str, Any], field_manager: str, force: bool = True,
          dry_run: bool = False) -> dict[str, Any]:
    """Server-side apply of ``body`` (its ``metadata.name`` names it) as ``field_manager``; the
    object as applied. ``force`` takes over fields another manager set (kubectl apply's
    --force-conflicts); ``dry_run``: the API server checks and answers, persists nothing."""
    query: dict[str, Any] = {"fieldManager": field_manager, "force": "true" if force else None,
                             "dryRun": "All" if dry_run else None}
    path = resource.path(namespace, body["metadata"]["name"])
    # JSON is YAML: the apply content type takes it as it is.
    return cast(dict[str, Any], json.loads(
        _request("PATCH", path, query, body=body, content_type="application/apply-patch+yaml").read()))


def get(resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
    """An object as JSON; None when it does not exist."""
    try:
        return cast(dict[str, Any], json.loads(_request("GET", resource.path(namespace, name)).read()))
    except ApiException as e:
        if e.status == 404:
            return None
        raise


RESOURCES = {"Job": JOBS, "ConfigMap": CONFIGMAPS, "TaskRun": TASKRUNS, "Task": TASKS, "Waitpoint": WAITPOINTS, "TaskEvent": TASKEVENTS,
             "ServiceAccount": Resource("", "v1", "serviceaccounts"),
             "Role": Resource("rbac.authorization.k8s.io", "v1", "roles"),
             "RoleBinding": Resource("rbac.authorization.k8s.io", "v1", "rolebindings"),
             "Secret": Resource("", "v1", "secrets")}


def create(obj: dict[str, Any]) -> dict[str, Any]:
    """Creates a namespaced object named by ``generateName`` (no name to take: no 409); the created
    object. The operator creates Secrets this way and never reads one."""
    return cast(dict[str, Any], json.loads(
        _request("POST", RESOURCES[obj["kind"]].path(obj["metadata"]["namespace"]), body=obj).read()))


def create_or_get(obj: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """Creates a namespaced object: (True, created), or (False, what holds the name) on 409,
    for the caller to check who owns it (None if it vanished meanwhile)."""
    meta = obj["metadata"]
    resource = RESOURCES[obj["kind"]]
    try:
        created = _request("POST", resource.path(meta["namespace"]), body=obj)
        return True, cast(dict[str, Any], json.loads(created.read()))
    except ApiException as e:
        if e.status != 409:
            raise
    return False, get(resource, meta["namespace"], meta["name"])


def delete_jobs(namespace: str, label_selector: str) -> None:
    """Deletes every Job that matches and their pods, each in one request. The pods are deleted
    at once rather than when the garbage collector gets to them; each gets its own grace period
    (the Task's stopGracePeriod, core.render.stop_grace_seconds), whoever deletes it."""
    options = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    _request("DELETE", JOBS.path(namespace), {"labelSelector": label_selector}, body=options)
    delete_pods(namespace, label_selector)


def delete_pods(namespace: str, label_selector: str) -> None:
    """Deletes every pod that matches, each with its own grace period."""
    _request("DELETE", PODS.path(namespace), {"labelSelector": label_selector},
             body={"kind": "DeleteOptions", "apiVersion": "v1"})


def delete(resource: Resource, namespace: str, name: str, uid: str | None = None) -> None:
    """Deletes an object, only if it still has ``uid`` when given; gone already is fine."""
    options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    if uid:
        options["preconditions"] = {"uid": uid}
    try:
        _request("DELETE", resource.path(namespace, name), body=options)
    except ApiException as e:
        if e.status not in (404, 409):  # 409: the precondition failed, someone else's object
            raise


REVIEW_TIMEOUT = (CONNECT_TIMEOUT, 5.0)  # a scrape waits on these: short


def review_token(token: str) -> dict[str, Any]:
    """The status of a TokenReview of ``token`` (authenticated, user, error)."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    done = _request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body=body, timeout=REVIEW_TIMEOUT)
    return cast(dict[str, Any], json.loads(done.read()).get("status") or {})


def _review(user: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"user": user.get("username", ""), "groups": user.get("groups") or [],
                            "uid": user.get("uid", ""), "extra": user.get("extra") or {}, **attributes}
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
    done = _request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=body, timeout=REVIEW_TIMEOUT)
    return cast(dict[str, Any], json.loads(done.read()).get("status") or {})


def review_access(user: dict[str, Any], verb: str, path: str) -> dict[str, Any]:
    """The status of a SubjectAccessReview: may ``user`` (a TokenReview's status.user) ``verb`` the
    non-resource URL ``path``? (allowed, denied, reason)"""
    return _review(user, {"nonResourceAttributes": {"path": path, "verb": verb}})


def review_run_access(user: dict[str, Any], verb: str, namespace: str, name: str) -> dict[str, Any]:
    """The status of a SubjectAccessReview: may ``user`` ``verb`` the TaskRun ``namespace/name``?"""
    return _review(user, {"resourceAttributes": {"group": GROUP, "resource": "taskruns", "verb": verb,
                                                 "namespace": namespace, "name": name}})
