"""An in-memory API server for reconciler tests, in the manner of controller-runtime's fake
client: objects get UIDs and resourceVersions, a taken name is a 409, status is patched as a
subresource, a patch's ``metadata.resourceVersion`` is a precondition (409 when the object is at
another) and its ``metadata.uid`` is checked where the API server checks it (see ``_check``), and a
Job deletion takes its pods with it. It offers the functions the
reconcilers call on :mod:`kubetasks.kube`.

Watch events are queued, not applied: a test decides when the operator's stores see them
(``deliver``), so it can put a write and its event as far apart as a slow watch would.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from datetime import datetime, timezone
from typing import Any

from kubetasks import kube
from kubetasks.controller.cache import Cache
from kubetasks.core.logs import is_kept_log
from kubetasks.protocol import METADATA_LABEL

Body = dict[str, Any]
WATCHED = {"Task": "tasks", "TaskQueue": "queues", "TaskRun": "runs", "Job": "jobs", "ConfigMap": "logs",
           "Waitpoint": "waitpoints", "TaskEvent": "events"}
# What the operator's informers select of a kind (a label selector), when not all of it.
SELECTED = {"ConfigMap": is_kept_log}
# Kinds that a second informer watches too, with its selector: checkpoints with ctx.metadata.
ALSO_WATCHED = {"ConfigMap": ("checkpoints", lambda o: METADATA_LABEL in (o["metadata"].get("labels") or {}))}


def _stores(kind: str, obj: Body) -> list[str]:
    """The cache's stores that see ``obj`` (their informers' selectors)."""
    stores = [WATCHED[kind]] if kind in WATCHED and SELECTED.get(kind, bool)(obj) else []
    if kind in ALSO_WATCHED and ALSO_WATCHED[kind][1](obj):
        stores.append(ALSO_WATCHED[kind][0])
    return stores
PLURALS = {"tasks": "Task", "taskqueues": "TaskQueue", "taskruns": "TaskRun", "jobs": "Job", "configmaps": "ConfigMap",
           "serviceaccounts": "ServiceAccount", "roles": "Role", "rolebindings": "RoleBinding",
           "waitpoints": "Waitpoint", "taskevents": "TaskEvent"}


class FakeApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Body] = {}
        self.pending: list[tuple[str, str, Body]] = []  # (kind, type, object) not yet delivered
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.events: list[tuple[str, str, str, str]] = []  # (object name, type, reason, message)
        self.made: list[tuple[str, str]] = []  # (kind, name) of every object the reconcilers created
        self.pods: dict[str, list[Body]] = {}  # by Job name: what the kubelet reports
        self.object_events: list[Body] = []  # core/v1 Events of the cluster's controllers and kubelet
        self.logs: dict[str, bytes | Exception] = {}  # by pod name: its log, or what reading it raises
        self._rv = itertools.count(100)
        self.conflicts = 0  # writes refused because a precondition failed

    # What the reconcilers call ---------------------------------------------------------------
    def create(self, obj: Body) -> Body:
        """A create by generateName (kube.create): a fresh name each time."""
        obj = copy.deepcopy(obj)
        obj["metadata"]["name"] = obj["metadata"].pop("generateName", "") + uuid.uuid4().hex[:5]
        created, _ = self.create_or_get(obj)
        assert created
        return copy.deepcopy(self.objects[(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])])

    def create_or_get(self, obj: Body) -> tuple[bool, Body | None]:
        self.calls.append(("create", (obj["kind"], obj["metadata"]["name"])))
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key in self.objects:
            return False, copy.deepcopy(self.objects[key])
        self.made.append((obj["kind"], obj["metadata"]["name"]))
        return True, self.add(copy.deepcopy(obj))

    def get(self, resource: kube.Resource, namespace: str, name: str) -> Body | None:
        self.calls.append(("get", (resource.plural, name)))
        found = self.objects.get((PLURALS[resource.plural], namespace, name))
        return copy.deepcopy(found) if found else None

    def patch_status(self, plural: str, namespace: str, name: str, patch: Body, uid: str | None = None,
                     resource_version: str | None = None, old: Body | None = None) -> Body | None:
        self.calls.append(("patch_status", (name,)))
        obj = self.objects.get((PLURALS[plural], namespace, name))
        if obj is None:
            return None
        self._check(obj, uid, resource_version, status=True)
        if old is None:
            _merge(obj.setdefault("status", {}), patch)
        else:  # a JSON Patch of whole fields (kube.status_ops), as the API server applies it
            for op in kube.status_ops(old, patch):
                field = op["path"].removeprefix("/status").lstrip("/")
                if op["op"] == "add" and not field:
                    obj["status"] = copy.deepcopy(op["value"])
                elif "status" not in obj or (op["op"] == "remove" and field not in obj["status"]):
                    raise kube.ApiException(status=422, reason=f"{op['path']} does not exist")
                elif op["op"] == "remove":
                    del obj["status"][field]
                else:
                    obj["status"][field] = copy.deepcopy(op["value"])
        return self._modified(obj)

    def patch_spec(self, plural: str, namespace: str, name: str, patch: Body, uid: str | None = None,
                   resource_version: str | None = None) -> None:
        self.calls.append(("patch_spec", (name,)))
        obj = self.objects.get((PLURALS[plural], namespace, name))
        if obj is None:
            raise kube.ApiException(status=404, reason="NotFound")
        self._check(obj, uid, resource_version, status=False)
        _merge(obj, patch)
        self._modified(obj)

    def delete_jobs(self, namespace: str, label_selector: str) -> None:
        self.calls.append(("delete_jobs", (label_selector,)))
        k, v = label_selector.split("=")
        for key, obj in list(self.objects.items()):
            if key[0] == "Job" and key[1] == namespace and (obj["metadata"].get("labels") or {}).get(k) == v:
                self.remove(key)

    def delete_pods(self, namespace: str, label_selector: str) -> None:
        self.calls.append(("delete_pods", (label_selector,)))

    def delete(self, resource: kube.Resource, namespace: str, name: str, uid: str | None = None) -> None:
        self.calls.append(("delete", (resource.plural, name)))
        key = (PLURALS[resource.plural], namespace, name)
        if key in self.objects and (uid is None or self.objects[key]["metadata"]["uid"] == uid):
            self.remove(key)

    def list_pods(self, namespace: str, label_selector: str) -> list[Body]:
        self.calls.append(("list_pods", (label_selector,)))
        return copy.deepcopy(self.pods.get(label_selector.removeprefix("job-name="), []))

    def list_all(self, resource: kube.Resource, namespace: str | None, label_selector: str = "") -> tuple[list[Body], str]:
        """Objects of a kind whose labels match an equality selector (``k=v``, ``!k``, comma-joined)."""
        self.calls.append(("list_all", (resource.plural, label_selector)))

        def matches(labels: dict[str, str]) -> bool:
            for term in filter(None, label_selector.split(",")):
                key, _, value = term.partition("=")
                if (key.startswith("!") and key[1:] in labels) or (not key.startswith("!") and labels.get(key) != value):
                    return False
            return True
        found = [copy.deepcopy(o) for k, o in self.objects.items() if k[0] == PLURALS[resource.plural]
                 and namespace in (None, k[1]) and matches(o["metadata"].get("labels") or {})]
        return found, str(next(self._rv))

    def list_by_fields(self, resource: kube.Resource, namespace: str, field_selector: str) -> list[Body]:
        """Events by ``involvedObject.uid=...``, from ``object_events`` (what the cluster's
        controllers and kubelet said; the operator's own are in ``events``)."""
        self.calls.append(("list_by_fields", (resource.plural, field_selector)))
        uid = field_selector.removeprefix("involvedObject.uid=")
        return copy.deepcopy([e for e in self.object_events if e["involvedObject"].get("uid") == uid])

    def read_log(self, namespace: str, pod: str, tail_lines: int, limit_bytes: int) -> bytes:
        """The last ``tail_lines`` lines, at most ``limit_bytes`` of them, as the kubelet answers."""
        self.calls.append(("read_log", (pod, tail_lines, limit_bytes)))
        found = self.logs.get(pod)
        if found is None:
            raise kube.ApiException(status=404, reason="NotFound")
        if isinstance(found, Exception):
            raise found
        lines = found.splitlines(keepends=True)
        return b"".join(lines[len(lines) - tail_lines:] if tail_lines < len(lines) else lines)[:limit_bytes]

    def merge_patch(self, resource: kube.Resource, namespace: str, name: str, patch: Body) -> Body | None:
        self.calls.append(("merge_patch", (resource.plural, name, patch)))
        obj = self.objects.get((PLURALS[resource.plural], namespace, name))
        if obj is None:
            return None
        _merge(obj, copy.deepcopy(patch))
        return copy.deepcopy(self._modified(obj))

    def stream_log(self, namespace: str, pod: str, follow: bool = False) -> Any:
        """The whole log, in chunks, as the kubelet streams it (a list: one answer per request)."""
        self.calls.append(("stream_log", (pod, follow)))
        found = self.logs.get(pod)
        if isinstance(found, list):
            found = found.pop(0) if len(found) > 1 else found[0]
        if found is None:
            raise kube.ApiException(status=404, reason="NotFound")
        if isinstance(found, Exception):
            raise found
        return iter([found[i:i + 7] for i in range(0, len(found), 7)])

    def get_configmap_data(self, namespace: str, name: str) -> dict[str, str] | None:
        self.calls.append(("get_configmap", (name,)))
        found = self.objects.get(("ConfigMap", namespace, name))
        return dict(found.get("data") or {}) if found else None

    def post_event(self, body: Body, type_: str, reason: str, message: str) -> None:
        self.events.append((body["metadata"]["name"], type_, reason, message))

    # What a test (a user, kubelet, the garbage collector) does ----------------------------------
    def add(self, obj: Body) -> Body:
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", datetime.now(timezone.utc).isoformat())
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("generation", 1)
        self.objects[(obj["kind"], meta["namespace"], meta["name"])] = obj
        self._queue(obj["kind"], "ADDED", obj)
        return copy.deepcopy(obj)

    def update(self, kind: str, namespace: str, name: str, **changes: Any) -> Body:
        """Merges ``changes`` (spec=..., status=..., metadata=...) into an object."""
        obj = self.objects[(kind, namespace, name)]
        for part, value in changes.items():
            obj.setdefault(part, {}).update(copy.deepcopy(value))
        return self._modified(obj)

    def remove(self, key: tuple[str, str, str]) -> None:
        obj = self.objects.pop(key)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self._queue(key[0], "DELETED", obj)

    def finish_job(self, namespace: str, name: str, ok: bool = True) -> None:
        now = datetime.now(timezone.utc).isoformat()
        condition = {"type": "Complete" if ok else "Failed", "status": "True", "lastTransitionTime": now}
        self.update("Job", namespace, name, status={"conditions": [condition], "startTime": now,
                                                    **({"completionTime": now} if ok else {})})

    def jobs(self, namespace: str = "ns") -> list[Body]:
        return [o for k, o in self.objects.items() if k[0] == "Job" and k[1] == namespace]

    def deliver(self, cache: Cache) -> None:
        """The watch catches up: every queued event reaches the stores, in order."""
        pending, self.pending = self.pending, []
        for kind, type_, obj in pending:
            for name in _stores(kind, obj):
                store = getattr(cache, name)
                store.event(type_, store.slim(obj))

    def relist(self, cache: Cache) -> None:
        """A relist (410 Gone, resync): the stores become what the server holds now."""
        self.pending = []
        for kind, store in [*WATCHED.items(), *((k, v[0]) for k, v in ALSO_WATCHED.items())]:
            target = getattr(cache, store)
            target.replace([target.slim(copy.deepcopy(o)) for k, o in self.objects.items()
                            if k[0] == kind and store in _stores(kind, o)])

    def created(self, kind: str = "Job") -> list[str]:
        return [name for k, name in self.made if k == kind]

    def _check(self, obj: Body, uid: str | None, resource_version: str | None, status: bool) -> None:
        """A merge patch's metadata, as kube-apiserver 1.31 treats it (checked on the cluster): a
        resourceVersion that is not the object's is a 409 Conflict; then a uid that is not its own
        is a 422 (metadata.uid is immutable), except on the status subresource, which keeps the
        stored object's metadata whatever the patch says."""
        meta = obj["metadata"]
        if resource_version and resource_version != meta["resourceVersion"]:
            self.conflicts += 1
            raise kube.ApiException(status=409, reason="Conflict")
        if uid and uid != meta["uid"] and not status:
            raise kube.ApiException(status=422, reason="Invalid")

    def _modified(self, obj: Body) -> Body:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self._queue(obj["kind"], "MODIFIED", obj)
        return copy.deepcopy(obj)

    def _queue(self, kind: str, type_: str, obj: Body) -> None:
        if _stores(kind, obj):
            self.pending.append((kind, type_, copy.deepcopy(obj)))


def _merge(target: Body, patch: Body) -> None:
    """A JSON merge patch (RFC 7386) applied in place: null removes a key, objects merge."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict):  # into what is there, or into {}: the nulls inside go either way
            if not isinstance(target.get(k), dict):
                target[k] = {}
            _merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)
