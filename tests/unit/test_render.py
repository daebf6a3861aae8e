import json

from kubetasks import protocol
from kubetasks.api import Task, TaskRun
from kubetasks.core.render import (
    STOP_GRACE_SECONDS, access_to_drop, stop_grace_seconds, machine_for_attempt, render_job, render_parent_access, render_payload, render_run_identity,
)


def objects(task_spec=None, run_spec=None):
    t = Task.model_validate({"metadata": {"name": "resize"},
                             "spec": {"image": "reg/img:1", **(task_spec or {"entrypoint": "app:resize"})}})
    r = TaskRun.model_validate({"metadata": {"name": "resize-abc", "namespace": "ns", "uid": "u-1"},
                                "spec": {"taskRef": "resize", "payload": {"w": 2}, **(run_spec or {})}})
    return t, r


def test_job_has_deterministic_name_owner_labels_and_no_job_level_retries():
    t, r = objects()
    job = render_job(r, t, 2)
    assert job["metadata"]["name"] == "resize-abc-2"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert job["metadata"]["labels"]["kubetasks.io/attempt"] == "2"
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "kubetasks.runtime"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBETASKS_ATTEMPT"] == "2"


def test_the_payload_is_a_file_from_the_runs_configmap_never_an_env_var():
    for task_spec in ({}, {"command": ["sh", "-c", "cat $KUBETASKS_PAYLOAD_FILE"]}):
        t, r = objects(task_spec, {"payload": {"secret": "s3cr3t"}})
        pod = render_job(r, t, 1)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert "s3cr3t" not in json.dumps(pod)
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert "KUBETASKS_PAYLOAD" not in env
        assert env["KUBETASKS_PAYLOAD_FILE"] == "/var/run/kubetasks/payload.json"
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/var/run/kubetasks")
        assert mount["readOnly"] is True and "subPath" not in mount  # subPath mounts never see updates
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        configmap = render_payload(r, t)
        assert configmap is not None and configmap["immutable"] is True
        # Only the payload's key is projected: the checkpoints stay out of the pod's filesystem.
        assert volume["configMap"] == {"name": configmap["metadata"]["name"], "optional": True,
                                       "items": [{"key": "payload.json", "path": "payload.json"}]}
        assert json.loads(configmap["data"]["payload.json"]) == {"secret": "s3cr3t"}


def test_the_configmap_holds_payloads_up_to_the_limit_and_no_larger():
    def configmap_data(payload):
        t, r = objects(run_spec={"payload": payload})
        return render_payload(r, t)["data"]

    at_limit = "x" * (protocol.PAYLOAD_FILE_LIMIT - 2)  # the quotes make it the limit exactly
    assert len(configmap_data(at_limit)["payload.json"].encode()) == protocol.PAYLOAD_FILE_LIMIT
    assert configmap_data(at_limit + "x") == {}  # no file: the runtime reads the TaskRun
    assert configmap_data(None) == {"payload.json": "null"}


def test_machine_preset_and_overrides_become_requests_and_limits():
    t, r = objects({"machine": {"preset": "medium-1x"}}, {"machine": {"memory": "3Gi"}})
    res = render_job(r, t, 1, r.spec.machine)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["requests"] == res["limits"] == {"cpu": "1", "memory": "3Gi"}
    t, r = objects()
    res = render_job(r, t, 1)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"] == {"cpu": "500m", "memory": "512Mi"}  # small-1x by default


def test_max_duration_and_ttl():
    t, r = objects({"maxDuration": "1m30s", "ttlSecondsAfterFinished": 60})
    spec = render_job(r, t, 1)["spec"]
    assert spec["activeDeadlineSeconds"] == 90 and spec["ttlSecondsAfterFinished"] == 60


def test_node_selector_and_tolerations_place_the_pods():
    t, r = objects({"nodeSelector": {"pool": "batch"},
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]})
    pod = render_job(r, t, 1)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["tolerations"] == [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
    t, r = objects()
    assert "nodeSelector" not in render_job(r, t, 1)["spec"]["template"]["spec"]


def test_pods_run_as_non_root_with_a_read_only_root():
    t, r = objects()
    pod = render_job(r, t, 1)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"] == {"drop": ["ALL"]}


def test_the_task_is_not_pid_1_so_a_sigterm_stops_it():
    # PID 1 ignores the signals it has no handler for: a plain `python -c` would outlive its
    # cancel or its maxDuration by the 30 s grace period.
    for spec in ({"entrypoint": "app:resize"}, {"command": ["python3", "-c", "import time; time.sleep(300)"]}):
        t, r = objects(spec)
        assert render_job(r, t, 1)["spec"]["template"]["spec"]["shareProcessNamespace"] is True


def test_a_stop_grace_period_is_the_pods_and_the_cancels():
    t, r = objects({"entrypoint": "app:resize", "stopGracePeriod": "1m30s"})
    assert render_job(r, t, 1)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 90
    assert stop_grace_seconds(t.spec) == 90
    t, r = objects()  # unset: short, for the pod as for a cancel (the garbage collector's delete gives the pod's)
    assert render_job(r, t, 1)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 5
    assert stop_grace_seconds(t.spec) == stop_grace_seconds(None) == STOP_GRACE_SECONDS == 5


def test_commands_and_plain_images():
    t, r = objects({"command": ["sh", "-c", "exit 3"]})
    assert render_job(r, t, 1)["spec"]["template"]["spec"]["containers"][0]["command"] == ["sh", "-c", "exit 3"]


def test_oom_retries_can_move_to_a_bigger_machine():
    t, r = objects({"retry": {"outOfMemoryMachine": {"preset": "large-1x"}}})
    assert machine_for_attempt(r, t, ["OOMKilled"]).preset == "large-1x"
    assert machine_for_attempt(r, t, ["Error"]) is None and machine_for_attempt(r, t, []) is None
    # Every attempt after an OOMKilled one, not only the next: one that failed otherwise, slept or waited
    # on the bigger machine does not send the following one back to the small machine.
    assert machine_for_attempt(r, t, ["OOMKilled", "Error"]).preset == "large-1x"
    assert machine_for_attempt(r, t, ["Error", "OOMKilled", "Sleeping", "Waiting"]).preset == "large-1x"


def test_a_plain_command_gets_no_identity_and_no_token_only_its_payload_file():
    t, r = objects({"command": ["true"]}, {"payload": None})
    assert render_run_identity(r, t) == [] and render_payload(r, t) is None
    pod = render_job(r, t, 1)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert "KUBETASKS_CHECKPOINTS" not in {e["name"] for e in pod["containers"][0]["env"]}
    t, r = objects({"command": ["cat", "/var/run/kubetasks/payload.json"]})
    assert render_run_identity(r, t) == [] and render_payload(r, t)["data"] == {"payload.json": '{"w":2}'}
    t, r = objects({"command": ["true"], "serviceAccountName": "builder"})
    pod = render_job(r, t, 1)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "builder" and "automountServiceAccountToken" not in pod


def test_run_identity_grants_only_its_own_checkpoints_and_its_own_run():
    t, r = objects()
    kinds = {o["kind"]: o for o in render_run_identity(r, t)}
    assert set(kinds) == {"ServiceAccount", "ConfigMap", "Role", "RoleBinding"}
    configmaps, taskruns, tokens = kinds["Role"]["rules"]  # no create of runs: this Task allows no triggering
    assert configmaps == {"apiGroups": [""], "resources": ["configmaps"],
                          "resourceNames": [kinds["ConfigMap"]["metadata"]["name"]], "verbs": ["get", "update", "patch"]}
    assert taskruns == {"apiGroups": ["kubetasks.io"], "resources": ["taskruns"], "resourceNames": ["resize-abc"],
                        "verbs": ["get"]}
    # its tokens: made by its pods, never read or completed by them (no get, no status)
    assert tokens == {"apiGroups": ["kubetasks.io"], "resources": ["waitpoints"], "verbs": ["create"]}
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "u-1" for o in kinds.values())
    assert kinds["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": kinds["ServiceAccount"]["metadata"]["name"],
                                                 "namespace": "ns"}]
    assert kinds["ServiceAccount"]["metadata"]["name"] == "resize-abc-u-1-run"
    pod = render_job(r, t, 1)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "resize-abc-u-1-run"


def rules_of(objects_):
    return next(o for o in objects_ if o["kind"] == "Role")["rules"]


def test_create_on_taskruns_only_when_the_task_allows_triggering():
    t, r = objects({"entrypoint": "app:resize", "allowTrigger": ["thumbnail"]})
    creates = [rule for rule in rules_of(render_run_identity(r, t)) if "create" in rule["verbs"]]
    assert creates == [{"apiGroups": ["kubetasks.io"], "resources": ["waitpoints"], "verbs": ["create"]},
                       {"apiGroups": ["kubetasks.io"], "resources": ["taskruns"], "verbs": ["create"]}]
    everything = [rule for rule in rules_of(render_run_identity(r, t)) if "resourceNames" not in rule]
    assert everything == creates  # the only rules not limited to named objects: RBAC has none for create
    t, r = objects({"entrypoint": "app:resize"})
    assert [rule["resources"] for rule in rules_of(render_run_identity(r, t)) if "create" in rule["verbs"]] == [
        ["waitpoints"]]


def test_a_named_service_account_gets_the_run_role_only_when_the_task_opts_in():
    t, r = objects({"entrypoint": "app:resize", "serviceAccountName": "default", "allowTrigger": ["x"]})
    assert [o["kind"] for o in render_run_identity(r, t)] == ["ConfigMap"]  # no Role, no binding
    pod = render_job(r, t, 1)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "default"
    t, r = objects({"entrypoint": "app:resize", "serviceAccountName": "worker", "bindRunRole": True})
    kinds = {o["kind"]: o for o in render_run_identity(r, t)}
    assert set(kinds) == {"ConfigMap", "Role", "RoleBinding"}  # the account is the user's: not created
    assert kinds["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "worker", "namespace": "ns"}]


def test_a_parent_may_read_its_allowed_child_and_nothing_else():
    parent_task, parent = objects({"entrypoint": "app:resize", "allowTrigger": ["thumb"]})
    child = TaskRun.model_validate({"metadata": {"name": "thumb-x1", "namespace": "ns", "uid": "c-2"},
                                    "spec": {"taskRef": "thumb", "parentRun": "resize-abc"}})
    role, binding = render_parent_access(child, parent, parent_task)
    assert role["rules"] == [{"apiGroups": ["kubetasks.io"], "resources": ["taskruns"], "resourceNames": ["thumb-x1"],
                              "verbs": ["get"]},
                             {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],  # its result
                              "resourceNames": ["thumb-x1-c-2-steps", "thumb-x1-c-2-result"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "resize-abc-u-1-run", "namespace": "ns"}]
    assert role["metadata"]["name"] == binding["metadata"]["name"] == "thumb-x1-c-2-parent"
    assert {o["metadata"]["ownerReferences"][0]["uid"] for o in (role, binding)} == {"c-2"}  # the child's
    # A parent whose pods run as the user's own account, not opted in, gets nothing granted.
    named_task, _ = objects({"entrypoint": "app:resize", "serviceAccountName": "worker", "allowTrigger": ["thumb"]})
    assert render_parent_access(child, parent, named_task) == []
    long_child = TaskRun.model_validate({"metadata": {"name": "t" * 253, "namespace": "ns", "uid": "c-3"},
                                         "spec": {"taskRef": "thumb", "parentRun": "resize-abc"}})
    assert all(len(o["metadata"]["name"]) <= 253 for o in render_parent_access(long_child, parent, parent_task))


def test_a_triggering_runs_role_marks_its_holder_as_that_run_for_the_admission_policy():
    t, r = objects({"entrypoint": "app:resize", "allowTrigger": ["thumbnail"]})
    marks = [rule for rule in rules_of(render_run_identity(r, t)) if "trigger" in rule["verbs"]]
    assert marks == [{"apiGroups": ["kubetasks.io"], "resources": ["taskruns"], "verbs": ["trigger"],
                      "resourceNames": ["resize-abc", "Any-Run"]}]
    t, r = objects({"entrypoint": "app:resize"})  # no triggering: no create, no mark
    assert not [rule for rule in rules_of(render_run_identity(r, t)) if "trigger" in rule["verbs"]]


def test_a_finished_run_drops_its_identity_its_childrens_access_and_its_own_once_its_parent_is_done():
    t, r = objects({"entrypoint": "app:resize", "allowTrigger": ["thumb"]})
    own = [("RoleBinding", "resize-abc-u-1-run", "u-1"), ("Role", "resize-abc-u-1-run", "u-1"),
           ("ServiceAccount", "resize-abc-u-1-run", "u-1")]
    assert access_to_drop(r, t, [], parent_done=False) == own
    assert access_to_drop(r, t, [("c1", "c-1234567")], parent_done=False) == own + [
        ("RoleBinding", "c1-c-123456-parent", "c-1234567"), ("Role", "c1-c-123456-parent", "c-1234567")]
    child = TaskRun.model_validate({"metadata": {"name": "thumb-x1", "namespace": "ns", "uid": "c-2"},
                                    "spec": {"taskRef": "thumb", "parentRun": "resize-abc"}})
    plain = Task.model_validate({"metadata": {"name": "thumb"}, "spec": {"image": "reg/img:1", "command": ["true"]}})
    assert access_to_drop(child, plain, [], parent_done=False) == []  # a plain command has none
    assert access_to_drop(child, plain, [], parent_done=True) == [("RoleBinding", "thumb-x1-c-2-parent", "c-2"),
                                                                  ("Role", "thumb-x1-c-2-parent", "c-2")]
    t, r = objects({"entrypoint": "app:resize", "serviceAccountName": "worker", "bindRunRole": True})
    assert access_to_drop(r, t, [], parent_done=False) == own[:2]  # the user's account is the user's
    t, r = objects({"entrypoint": "app:resize", "serviceAccountName": "worker"})
    assert access_to_drop(r, t, [], parent_done=False) == []  # nothing was bound


def test_the_payload_has_an_immutable_configmap_of_its_own_that_the_runs_pods_may_not_write():
    t, r = objects()
    payload = render_payload(r, t)
    identity = render_run_identity(r, t)
    checkpoints = next(o for o in identity if o["kind"] == "ConfigMap")
    assert payload["immutable"] is True and "immutable" not in checkpoints
    assert payload["metadata"]["name"] == "resize-abc-u-1-payload" != checkpoints["metadata"]["name"]
    assert checkpoints["data"] == {}  # the checkpoints' ConfigMap, which the pods write, holds no payload
    assert payload["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    writable = {n for rule in rules_of(identity) if rule["resources"] == ["configmaps"] for n in rule["resourceNames"]}
    assert writable == {checkpoints["metadata"]["name"]}
    volume = next(v for v in render_job(r, t, 1)["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == payload["metadata"]["name"]
