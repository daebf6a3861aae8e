"""Rendering a run's attempt as a batch/v1 Job, and the per-run objects its pods use."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from typing import Any

from kubetasks.api.common import API_VERSION, Machine
from kubetasks.api.durations import parse_duration
from kubetasks.api.machines import resolve_machine
from kubetasks.api.task import Task, TaskSpec
from kubetasks.api.taskrun import TaskRun
from kubetasks.api.version import LockedSpec, TaskVersion
from kubetasks.core.backoff import effective_retry
from kubetasks.core.naming import (
    LABEL_ATTEMPT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_RUN, LABEL_RUN_UID, LABEL_TASK, MANAGER, checkpoint_name,
    fit_name, instance_of, job_name, label_value, payload_name, result_grant_name, run_identity_name,
)
from kubetasks.core.payload import payload_data
from kubetasks.core.trigger_policy import RUN_IDENTITY, TRIGGER_VERB
from kubetasks.core.version import job_annotations
from kubetasks import protocol

RUNTIME_COMMAND = protocol.RUNTIME_COMMAND
TASK_UID = 65532
PAYLOAD_VOLUME = "kubetasks-payload"
GRANT_VOLUME = "kubetasks-grant"
MAX_SUBDOMAIN = 253  # a Role's or RoleBinding's name


STOP_GRACE_SECONDS = 5  # an attempt's pods after SIGTERM, when the Task sets no stopGracePeriod


def stop_grace_seconds(spec: TaskSpec | LockedSpec | None) -> int:
    """Seconds an attempt's pods get between SIGTERM and SIGKILL (their terminationGracePeriodSeconds,
    which every delete of them gives: the operator's, the garbage collector's, an eviction's): the
    Task's stopGracePeriod, else STOP_GRACE_SECONDS."""
    if spec is None or not spec.stop_grace_period:
        return STOP_GRACE_SECONDS
    return max(1, int(parse_duration(spec.stop_grace_period).total_seconds()))


def owner_reference(run: TaskRun) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "TaskRun", "name": run.name, "uid": run.metadata["uid"],
            "controller": True, "blockOwnerDeletion": True}


def run_labels(run: TaskRun, task_id: str) -> dict[str, str]:
    labels = {LABEL_TASK: label_value(task_id), LABEL_RUN: label_value(run.name), LABEL_RUN_UID: uid(run),
              LABEL_MANAGED_BY: MANAGER}
    instance = instance_of({"metadata": run.metadata})
    if instance:
        labels[LABEL_INSTANCE] = instance  # the operator instance's informers see only its own Jobs
    return labels


def uid(run: TaskRun) -> str:
    return str(run.metadata.get("uid", ""))


def uses_sdk(task: Task) -> bool:
    """Whether the task runs in the kubetasks runtime (an ``entrypoint``), which talks to the API:
    checkpoints, triggering runs, payloads too large for their file. Plain commands need none of
    it: no identity objects, no service-account token."""
    return bool(task.spec.entrypoint)


def machine_for_attempt(run: TaskRun, task: Task, reasons_before: Iterable[str | None]) -> Machine | None:
    """The machine of an attempt, from the ends of the attempts before it (``reasons_before``,
    as status.attempts records them): once one was OOMKilled, every later attempt gets the retry
    policy's bigger machine, not only the next (a sleep or a wait between them changes nothing)."""
    retry = effective_retry(run, task)
    if retry.out_of_memory_machine and "OOMKilled" in reasons_before:
        return retry.out_of_memory_machine
    return run.spec.machine


def grant_volume(secret: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the pod's volume, the task container's mount) of an attempt's upload grant (core.grants)."""
    return ({"name": GRANT_VOLUME, "secret": {"secretName": secret, "defaultMode": 0o440}},
            {"name": GRANT_VOLUME, "mountPath": protocol.GRANT_DIR, "readOnly": True})


def render_job(run: TaskRun, task: Task, attempt: int, machine: Machine | None = None,
               qualified: bool = False, grant: str | None = None, version: TaskVersion | None = None,
               retries_left: int | None = None, trace_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Job of one attempt. backoffLimit 0: kubetasks owns retries, so every attempt is visible.
    ``qualified``: named with the run's UID, when another object holds the plain name. ``grant``:
    the Secret of the attempt's upload grant (core.grants), mounted at protocol.GRANT_DIR.
    ``task``: the version the run is locked to (core.version.locked_task), which ``version``
    names in an annotation. ``trace_env``: TRACEPARENT and the OTLP endpoint (core.tracing.job_env),
    before the Task's own env, which may override them."""
    spec = task.spec
    size = resolve_machine(machine, task.spec.machine)
    labels = {**run_labels(run, task.task_id), LABEL_ATTEMPT: str(attempt)}
    env: list[dict[str, Any]] = [
        {"name": protocol.ENV_RUN, "value": run.name},
        {"name": protocol.ENV_RUN_UID, "value": str(run.metadata.get("uid", ""))},
        {"name": protocol.ENV_NAMESPACE, "value": run.namespace},
        {"name": protocol.ENV_TASK, "value": task.task_id},
        {"name": protocol.ENV_ATTEMPT, "value": str(attempt)},
        # The payload is a file, not a variable: exec refuses a variable over 128 KiB, and anyone
        # who may read Jobs would read it.
        {"name": protocol.ENV_PAYLOAD_FILE, "value": protocol.PAYLOAD_FILE},
    ]
    if LABEL_INSTANCE in labels:
        env.append({"name": protocol.ENV_INSTANCE, "value": labels[LABEL_INSTANCE]})
    if uses_sdk(task):
        env.append({"name": protocol.ENV_CHECKPOINTS, "value": checkpoint_name(run.name, uid(run))})
    if run.spec.replay_of is not None:  # ctx.is_replay
        env.append({"name": protocol.ENV_REPLAY_OF, "value": run.spec.replay_of.name})
    if spec.entrypoint:
        env.append({"name": protocol.ENV_ENTRYPOINT, "value": spec.entrypoint})
    if retries_left is not None:  # whether this attempt is the last: the SDK's on_failure hooks
        env.append({"name": protocol.ENV_RETRIES_LEFT, "value": str(retries_left)})
    env += [{"name": k, "value": v} for k, v in (trace_env or {}).items()]
    env += [e.to_api() for e in spec.env]
    container: dict[str, Any] = {
        "name": "task",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "env": env,
        "resources": {"requests": {"cpu": size.cpu, "memory": size.memory},
                      "limits": {"cpu": size.cpu, "memory": size.memory}},
        # Plain commands that fail without a message still explain themselves: the log tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                         {"name": PAYLOAD_VOLUME, "mountPath": protocol.PAYLOAD_DIR, "readOnly": True}],
    }
    if spec.command:
        container["command"] = spec.command
    elif spec.entrypoint or not spec.args:
        container["command"] = RUNTIME_COMMAND
    if spec.args:
        container["args"] = spec.args
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "enableServiceLinks": False,
                # The task is not PID 1, which the kernel spares every signal it has no handler
                # for: a SIGTERM (cancel, maxDuration, eviction) stops it at once, not 30 s later
                # at the SIGKILL, while its pod holds its CPU and its run waits for the pod to go.
                "shareProcessNamespace": True,
                "securityContext": {"runAsUser": TASK_UID, "runAsGroup": TASK_UID, "fsGroup": TASK_UID,
                                    "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
                "volumes": [
                    {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                    # Only the payload's key. Optional: a payload too large for the ConfigMap leaves
                    # no file, and the runtime reads the TaskRun instead of the pod waiting for a key
                    # that never comes.
                    {"name": PAYLOAD_VOLUME, "configMap": {
                        "name": payload_name(run.name, uid(run)), "optional": True,
                        "items": [{"key": protocol.PAYLOAD_KEY, "path": protocol.PAYLOAD_KEY}]}},
                ],
            },
        },
    }
    pod_spec = job_spec["template"]["spec"]
    if grant:
        volume, mount = grant_volume(grant)
        pod_spec["volumes"].append(volume)
        container["volumeMounts"].append(mount)
    if spec.service_account_name or uses_sdk(task):
        pod_spec["serviceAccountName"] = spec.service_account_name or run_identity_name(run.name, uid(run))
    else:
        pod_spec["automountServiceAccountToken"] = False  # a plain command never needs the API
    if spec.node_selector:
        pod_spec["nodeSelector"] = spec.node_selector
    if spec.tolerations:
        pod_spec["tolerations"] = [t.to_api() for t in spec.tolerations]
    # The pod's own, so that whoever deletes it (the operator on a cancel, the garbage collector
    # after its Job, which may come first) gives it the same time: the deletes set none.
    pod_spec["terminationGracePeriodSeconds"] = stop_grace_seconds(spec)
    if spec.max_duration:
        job_spec["activeDeadlineSeconds"] = max(1, int(parse_duration(spec.max_duration).total_seconds()))
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    metadata: dict[str, Any] = {"name": job_name(run.name, attempt, uid(run) if qualified else None),
                                "namespace": run.namespace, "labels": labels, "ownerReferences": [owner_reference(run)]}
    if version is not None:
        metadata["annotations"] = job_annotations(version)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def run_account(run: TaskRun, task: Task) -> str | None:
    """The ServiceAccount that holds the run's Role: its own (``<run>-<uid8>-run``) for an SDK task,
    the Task's ``serviceAccountName`` only when the Task opts in (``bindRunRole``), else None: a
    plain command needs no API, and an account the user named may be shared by other pods, which
    must not gain the run's rights unasked."""
    if not uses_sdk(task):
        return None
    if task.spec.service_account_name:
        return task.spec.service_account_name if task.spec.bind_run_role else None
    return run_identity_name(run.name, uid(run))


def run_rules(run: TaskRun, task: Task) -> list[dict[str, Any]]:
    """What a run's pods may do: read their own TaskRun (a payload too large for its file), read and
    write their own checkpoints, create tokens (Waitpoints), and create TaskRuns only when the Task
    allows triggering. RBAC
    cannot limit ``create`` by taskRef: the operator refuses a child of a Task not in the parent's
    ``allowTrigger`` (core.trigger_policy), and an admission policy in the chart makes a run's pods
    name their own run as ``parentRun``."""
    rules: list[dict[str, Any]] = [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [checkpoint_name(run.name, uid(run))],
         "verbs": ["get", "update", "patch"]},
        {"apiGroups": ["kubetasks.io"], "resources": ["taskruns"], "resourceNames": [run.name], "verbs": ["get"]},
        # its tokens (ctx.step.wait_for_token): made by its pods, never read or completed by them;
        # RBAC cannot limit create by name, and the operator waits only on a token of this run's
        # name and uid (core.waits.ours), so one made for another run is nobody's.
        {"apiGroups": ["kubetasks.io"], "resources": ["waitpoints"], "verbs": ["create"]},
    ]
    if task.spec.allow_trigger:
        rules.append({"apiGroups": ["kubetasks.io"], "resources": ["taskruns"], "verbs": ["create"]})
        # Whoever holds this Role triggers as this run (core.trigger_policy.TRIGGER_VERB): the
        # admission policy holds them to naming it as parentRun, whatever their account.
        rules.append({"apiGroups": ["kubetasks.io"], "resources": ["taskruns"], "verbs": [TRIGGER_VERB],
                      "resourceNames": [run.name, RUN_IDENTITY]})
    return rules


def render_run_identity(run: TaskRun, task: Task, checkpoints: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The objects that give a run's pods the least access that works (see :func:`run_rules`), all
    owned by the TaskRun, so they go when it goes. A Task with its own serviceAccountName gets the
    Role bound to that account only with ``bindRunRole``; otherwise no Role at all. ``checkpoints``:
    the records its checkpoint ConfigMap starts with (a replay's, core.replay)."""
    name, ns = run_identity_name(run.name, uid(run)), run.namespace
    meta = {"namespace": ns, "labels": run_labels(run, task.task_id), "ownerReferences": [owner_reference(run)]}
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": checkpoint_name(run.name, uid(run)), **meta},
                 "data": dict(checkpoints or {})}
    if not uses_sdk(task):  # a plain command: no checkpoints, no API access
        return []
    account = run_account(run, task)
    if account is None:  # the user's own account, not opted in: it keeps exactly the rights it has
        return [configmap]
    objects: list[dict[str, Any]] = [configmap, *role_and_binding(name, meta, run_rules(run, task), account)]
    if not task.spec.service_account_name:
        objects.insert(0, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, **meta}})
    return objects


def render_payload(run: TaskRun, task: Task) -> dict[str, Any] | None:
    """The ConfigMap of the run's payload file, owned by the run; None for a plain command without
    a payload. Immutable: neither a task (whose own account might write ConfigMaps) nor anyone
    else rewrites the payload a later attempt reads; the run's checkpoints live apart."""
    if not uses_sdk(task) and run.spec.payload is None:
        return None
    meta = {"name": payload_name(run.name, uid(run)), "namespace": run.namespace,
            "labels": run_labels(run, task.task_id), "ownerReferences": [owner_reference(run)]}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "immutable": True,
            # A payload in the store has no file: the runtime reads it through its grant (controller.payloads).
            "data": {} if run.spec.payload_ref is not None else payload_data(run.spec.payload)}


def parent_access_name(child: TaskRun) -> str:
    return child_access_name(child.name, uid(child))


def child_access_name(child: str, child_uid: str) -> str:
    """The Role (and RoleBinding) that lets a parent run's pods read the child run ``child``."""
    return fit_name(child, f"-{child_uid[:8]}-parent", MAX_SUBDOMAIN)


def render_parent_access(child: TaskRun, parent: TaskRun, parent_task: Task) -> list[dict[str, Any]]:
    """A Role and RoleBinding that let the parent run's pods ``get`` this one child run (to wait for
    it) and the ConfigMaps its result may be in or granted by, owned by the child. Rendered once the operator has allowed the child
    (core.trigger_policy); nothing when the parent's pods have no kubetasks account."""
    account = run_account(parent, parent_task)
    if account is None:
        return []
    meta = {"namespace": child.namespace, "labels": run_labels(child, child.spec.task_ref),
            "ownerReferences": [owner_reference(child)]}
    rules = [{"apiGroups": ["kubetasks.io"], "resources": ["taskruns"], "resourceNames": [child.name], "verbs": ["get"]},
             # its result: kept in its checkpoint ConfigMap, or a presigned GET of its blob (core.grants)
             {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
              "resourceNames": [checkpoint_name(child.name, uid(child)), result_grant_name(child.name, uid(child))]}]
    return role_and_binding(parent_access_name(child), meta, rules, account)


def role_and_binding(name: str, meta: dict[str, Any], rules: list[dict[str, Any]], account: str) -> list[dict[str, Any]]:
    """A Role with ``rules`` and its RoleBinding to the ServiceAccount ``account`` of the same namespace."""
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name, **meta}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name, **meta},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": meta["namespace"]}]},
    ]


def access_to_drop(run: TaskRun, task: Task | None, children: list[tuple[str, str]], parent_done: bool,
                   ) -> list[tuple[str, str, str]]:
    """(kind, name, owner uid) of the access objects a finished run leaves that nothing needs any
    more: its own ServiceAccount, Role and RoleBinding (its pods are done; none when its Task
    binds no Role), the Roles that let its pods read its ``children`` (name, uid), and, once its
    parent is finished or gone (``parent_done``), the one that let its parent read it. Each is
    deleted only if that owner still owns it: an object of that name made by another is left."""
    objects: list[tuple[str, str, str]] = []
    if task is None or run_account(run, task) is not None:
        name = run_identity_name(run.name, uid(run))
        objects += [("RoleBinding", name, uid(run)), ("Role", name, uid(run))]
        if task is None or not task.spec.service_account_name:
            objects.append(("ServiceAccount", name, uid(run)))
        for child_name, child_uid in children:
            access = child_access_name(child_name, child_uid)
            objects += [("RoleBinding", access, child_uid), ("Role", access, child_uid)]
    if run.spec.parent_run and parent_done:
        access = parent_access_name(run)
        objects += [("RoleBinding", access, uid(run)), ("Role", access, uid(run))]
    return objects
