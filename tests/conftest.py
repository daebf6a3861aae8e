"""Fixtures for tests against the real local cluster (hack/cluster/up.sh).

Tests marked ``cluster`` need it. Where no cluster is reachable they are skipped with a reason,
except in CI (``CI`` or ``KUBETASKS_REQUIRE_CLUSTER`` set), where a missing cluster is an error:
CI must never pass by skipping.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "examples" / "python"))


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines (hack/versions.env, the cluster's storage.env); comments skipped."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


VERSIONS = read_env_file(REPO / "hack/versions.env")
CACHE = Path(os.environ.get("KUBETASKS_CACHE", REPO / ".cache"))
CLUSTER_DIR = Path(os.environ.get("KUBETASKS_CLUSTER_DIR", REPO / ".cluster"))
KUBECONFIG = os.environ.get("KUBECONFIG") or str(CLUSTER_DIR / "kubeconfig")
KUBECTL = os.environ.get("KUBECTL") or str(CACHE / "bin" / f"kubernetes-{VERSIONS['K8S_VERSION']}" / "kubectl")
# The image the operator and the example tasks run in (hack/images/build.sh app).
TASK_IMAGE = os.environ.get("KUBETASKS_IMAGE", "localhost/kubetasks/kubetasks:dev")
REQUIRE_CLUSTER = bool(os.environ.get("CI") or os.environ.get("KUBETASKS_REQUIRE_CLUSTER"))
# The test session's operator instance (kubetasks.io/instance): its operator acts only on the Tasks
# and TaskRuns labelled with it, so an installed kubetasks (`make demo`) keeps serving its own
# objects beside the tests and never touches theirs. In os.environ for the SDK and CLI the tests run.
INSTANCE = os.environ.setdefault("KUBETASKS_INSTANCE_ID", f"tests-{uuid.uuid4().hex[:8]}")
if _worker := os.environ.get("PYTEST_XDIST_WORKER"):
    # Each pytest-xdist worker is a session of its own: its operator, its runs, its store prefix.
    INSTANCE = os.environ["KUBETASKS_INSTANCE_ID"] = f"{INSTANCE}-{_worker}"
INSTANCE_LABEL = "kubetasks.io/instance"


def kubectl_run(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBECTL, "--kubeconfig", KUBECONFIG, *args], input=input, capture_output=True,
                          text=True, timeout=timeout)


@contextmanager
def scoped_webhook(name: str, url: str, namespace: str, selector: dict[str, str],
                 rule: tuple[str, str, str] = ("kubetasks.io", "taskruns/status", "UPDATE"),
                 timeout: int = 5, kind: str = "ValidatingWebhookConfiguration",
                 failure_policy: str = "Ignore") -> Iterator[None]:
    """A validating (or ``kind`` mutating) webhook served by a test (at ``url``, with a certificate
    of the cluster's CA), for ``rule`` (API group, resource, operation) on the objects of
    ``namespace`` matching ``selector`` only, so no other session's objects go through it; failing
    open unless told; removed after."""
    group, resource, operation = rule
    ca = base64.b64encode((CLUSTER_DIR / "pki" / "ca.crt").read_bytes()).decode()
    kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": name, "labels": {"kubetasks.io/test": "true"}},
        "webhooks": [{
            "name": f"{name}.test.kubetasks.io",
            "clientConfig": {"url": url, "caBundle": ca},
            "rules": [{"apiGroups": [group], "apiVersions": ["*"], "operations": [operation],
                       "resources": [resource], "scope": "Namespaced"}],
            "objectSelector": {"matchLabels": selector},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "failurePolicy": failure_policy, "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": timeout,
        }],
    }))
    try:
        yield
    finally:
        kubectl("delete", kind.lower(), name, "--ignore-not-found", check=False)


def kubectl(*args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
    """Runs the cluster's kubectl; returns stdout, raising with stderr on failure."""
    done = kubectl_run(*args, input=input, timeout=timeout)
    if check and done.returncode:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


Manifest = str | dict[str, Any] | list[dict[str, Any]]


def labelled(manifest: Manifest, instance: str = INSTANCE) -> str:
    """The manifest as a stream of JSON documents, its Tasks and TaskRuns labelled with the operator ``instance`` that is to act on them."""
    docs = [d for d in yaml.safe_load_all(manifest) if d] if isinstance(manifest, str) else (
        manifest if isinstance(manifest, list) else [manifest])
    # Each document as JSON: kubectl reads YAML 1.1, where an unquoted key `n` or `y` is a boolean.
    return "\n".join(json.dumps(label(doc, instance)) for doc in docs)


def label(doc: Any, instance: str = INSTANCE) -> Any:
    """A copy of ``doc`` labelled with ``instance`` when it is a Task or TaskRun; other objects as they are."""
    if not isinstance(doc, dict) or not str(doc.get("apiVersion", "")).startswith("kubetasks.io/"):
        return doc
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    return {**doc, "metadata": {**meta, "labels": {**labels, INSTANCE_LABEL: instance}}}


def apply(manifest: Manifest, namespace: str, instance: str = INSTANCE) -> str:
    return kubectl("apply", "-n", namespace, "-f", "-", input=labelled(manifest, instance))


def create(manifest: Manifest, namespace: str, instance: str = INSTANCE) -> str:
    """kubectl create, not apply: apply copies the object into an annotation, capped at 256 KiB."""
    return kubectl("create", "-n", namespace, "-f", "-", input=labelled(manifest, instance))


def token_kubeconfig(path: Path, namespace: str, account: str) -> str:
    """A kubeconfig for the cluster with a ServiceAccount's token instead of the admin's identity."""
    token = kubectl("create", "token", account, "-n", namespace, "--duration=1h").strip()
    admin = yaml.safe_load(Path(KUBECONFIG).read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "sa",
              "clusters": [{"name": "c", "cluster": cluster}],
              "users": [{"name": account, "user": {"token": token}}],
              "contexts": [{"name": "sa", "context": {"cluster": "c", "user": account, "namespace": namespace}}]}
    path.write_text(yaml.safe_dump(config))
    return str(path)


def get(kind: str, name: str, namespace: str) -> dict[str, Any]:
    return json.loads(kubectl("get", kind, name, "-n", namespace, "-o", "json"))


def wait_until(what: str, check: Callable[[], Any], timeout: float = 120, interval: float = 0.5) -> Any:
    """Polls ``check`` until it returns something truthy; fails with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def holds_until(until: float, check: Callable[[], None], interval: float = 2.0) -> None:
    """Runs ``check`` (which asserts) at every look until the monotonic time ``until``: what must
    stay true over a span, where wait_until waits for what must become true."""
    while time.monotonic() < until:
        check()
        time.sleep(interval)


@pytest.fixture(scope="session")
def cluster() -> str:
    """The kubeconfig path of a reachable cluster."""
    problem = None
    if not Path(KUBECTL).exists():
        problem = f"kubectl not built at {KUBECTL}: run `make cluster-up`"
    elif not Path(KUBECONFIG).exists():
        problem = f"no kubeconfig at {KUBECONFIG}: run `make cluster-up`"
    else:
        done = subprocess.run([KUBECTL, "--kubeconfig", KUBECONFIG, "get", "--raw", "/readyz"],
                              capture_output=True, text=True, timeout=30)
        if done.returncode:
            problem = f"cluster not reachable: {done.stderr.strip()}"
    if problem:
        if REQUIRE_CLUSTER:
            pytest.fail(f"CI requires the local cluster: {problem}")
        pytest.skip(problem)
    os.environ["KUBECONFIG"] = KUBECONFIG
    return KUBECONFIG


@pytest.fixture(scope="session")
def crds(cluster: str) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for name in ("tasks.kubetasks.io", "taskruns.kubetasks.io"):
        kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture
def namespace(cluster: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for it to go)."""
    name = f"kt-{request.node.name[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, "kubetasks.io/test=true")
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, list[Any]]:
    """The operator's Prometheus metrics: family name -> samples."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


# Pod placement on the cluster's kwok nodes (tainted; they complete pods without running them).
KWOK_PLACEMENT = {"nodeSelector": {"type": "kwok"},
                  "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]}


def lease_holder(namespace: str, name: str) -> str | None:
    """The holderIdentity of a coordination.k8s.io Lease; None when it is gone or held by no one."""
    lease = kubectl("get", "lease", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(lease)["spec"].get("holderIdentity") if lease.startswith("{") else None


FINISHED_PHASES = {"Succeeded", "Failed", "Cancelled", "TimedOut", "Duplicate"}


def run_until_finished(namespace: str, name: str, task_ref: str, timeout: float = 180,
                       instance: str = INSTANCE) -> str:
    """Creates a TaskRun of ``task_ref`` and returns the phase it finishes in."""
    apply({"apiVersion": "kubetasks.io/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
           "spec": {"taskRef": task_ref}}, namespace, instance)

    def finished() -> str | None:
        phase = (get("taskrun", name, namespace).get("status") or {}).get("phase")
        return phase if phase in FINISHED_PHASES else None

    return wait_until(f"{name} finished", finished, timeout=timeout)


START_DEADLINE_SECONDS = 45  # the session operator's: a pod that cannot start fails its attempt this soon (longer than the fault suite's 30 s API server pause)


class OperatorProcess:
    """The operator as a separate process (``python -m kubetasks.controller``), so a test can
    kill it at any moment and start it again, as a crash and a pod restart would."""

    def __init__(self, log_path: Path, namespaces: str = "", metrics_port: int = 0,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.namespaces = namespaces
        self.metrics_port = metrics_port
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": KUBECONFIG, "PYTHONPATH": str(REPO / "operator"),
               # A port of its own: kopf reads port 0 as 80, where two operators would collide.
               "KUBETASKS_METRICS_PORT": str(self.metrics_port), "KUBETASKS_LIVENESS": f"http://127.0.0.1:{free_port()}/healthz",
               "KUBETASKS_NAMESPACES": self.namespaces, "KUBETASKS_INSTANCE_ID": INSTANCE,
               # On loopback the metrics need no token (test_metrics_access.py scrapes with tokens).
               "KUBETASKS_METRICS_BIND_ADDRESS": "127.0.0.1", **self.env}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "kubetasks.controller"], env=env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as in a crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()


# The local cluster's object store (SeaweedFS's S3, hack/cluster/storage.sh): how to reach it.
STORAGE_ENV = CLUSTER_DIR / "storage.env"
# The session operator sweeps its store often, so a test sees a run's blobs go within seconds.
SWEEP_SECONDS, SWEEP_GRACE_SECONDS = 2, 10


def cluster_store_env(prefix: str) -> dict[str, str]:
    """The cluster's object store below ``prefix``, as an operator's KUBETASKS_STORAGE_* and AWS_*
    variables; empty when the cluster has none (an older one), which CI never allows. Each operator
    instance needs a prefix of its own: its sweep deletes what none of its runs names."""
    if not STORAGE_ENV.exists():
        if REQUIRE_CLUSTER:
            pytest.fail(f"CI requires the local cluster's object store: no {STORAGE_ENV} (hack/cluster/storage.sh)")
        return {}
    env = read_env_file(STORAGE_ENV)
    env["KUBETASKS_STORAGE_URL"] = f"{env['KUBETASKS_STORAGE_URL'].rstrip('/')}/{prefix}"
    return env


@pytest.fixture(scope="session")
def storage_env(cluster: str) -> Iterator[dict[str, str]]:
    """The session operator's store: the cluster's bucket below the prefix ``INSTANCE``, emptied
    when the session ends."""
    env = cluster_store_env(INSTANCE)
    yield env
    from kubetasks.blobs import from_env

    store = from_env(env)  # None without one
    if store is not None:
        store.delete_prefix("")


@pytest.fixture(scope="session")
def operator(crds: None, storage_env: dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """One operator for the session, watching every namespace, acting only on the objects of the
    session's instance (``INSTANCE``): an installed kubetasks may run beside it. With the cluster's
    object store (``storage_env``)."""
    home = tmp_path_factory.mktemp("operator")
    key = home / "token-url.key"  # signed completion URLs of tokens (controller.token_completion)
    key.write_text(secrets.token_hex(32))
    token_port = free_port()
    proc = OperatorProcess(home / "operator.log", metrics_port=free_port(),
                           env={"KUBETASKS_START_DEADLINE_SECONDS": str(START_DEADLINE_SECONDS),
                                "KUBETASKS_TOKEN_URL_KEY_FILE": str(key), "KUBETASKS_TOKEN_URL_PORT": str(token_port),
                                "KUBETASKS_TOKEN_URL_BIND_ADDRESS": "127.0.0.1",
                                "KUBETASKS_TOKEN_URL_BASE": f"http://127.0.0.1:{token_port}",
                                "KUBETASKS_STORAGE_SWEEP_SECONDS": str(SWEEP_SECONDS),
                                "KUBETASKS_STORAGE_SWEEP_GRACE_SECONDS": str(SWEEP_GRACE_SECONDS), **storage_env})
    proc.start()
    yield proc
    proc.stop()
    print(f"operator log: {proc.log_path}")


@pytest.fixture(scope="session")
def blob_store(storage_env: dict[str, str]) -> Any:
    """A kubetasks.blobs.BlobStore on the session operator's store (the cluster's S3 server)."""
    from kubetasks.blobs import from_env

    store = from_env(storage_env)
    if store is None:
        pytest.skip(f"the cluster has no object store ({STORAGE_ENV}): restart it with hack/cluster/up.sh")
    return store


STORE_BACKENDS = ["s3", "filesystem"]


def node_ip() -> str:
    """The address task pods reach this host on: the cluster node's, where the S3 server listens
    too (the host of storage.env's endpoint; hack/cluster/lib.sh's node_ip), else the InternalIP of
    the node that is not kwok's."""
    if STORAGE_ENV.exists():
        host = urlsplit(read_env_file(STORAGE_ENV).get("KUBETASKS_STORAGE_ENDPOINT", "")).hostname
        if host:
            return host
    nodes = json.loads(kubectl("get", "nodes", "-l", "type!=kwok", "-o", "json"))["items"]
    addresses = [a["address"] for n in nodes for a in n["status"].get("addresses") or [] if a["type"] == "InternalIP"]
    if not addresses:
        pytest.fail("no node address task pods could reach the operator's grant server on")
    return str(addresses[0])


def store_operator_env(backend: str, instance: str, directory: Path) -> dict[str, str]:
    """An operator's store, as its environment: on "s3" the cluster's S3 server below the prefix
    ``instance`` (skipped without one, an error in CI); on "filesystem" the directory ``directory``,
    whose grants (presigned URLs, kubetasks.controller.grant_server) the operator serves on a free
    port of the node's address, where task pods reach it."""
    if backend == "s3":
        env = cluster_store_env(instance)
        if not env:
            pytest.skip(f"no object store: {STORAGE_ENV} is missing (hack/cluster starts SeaweedFS)")
        return env
    assert backend == "filesystem", backend
    host = node_ip()
    with socket.create_server((host, 0)) as s:
        port = s.getsockname()[1]
    return {"KUBETASKS_STORAGE_URL": f"file://{directory}", "KUBETASKS_STORAGE_GRANT_PORT": str(port),
            "KUBETASKS_STORAGE_GRANT_URL": f"http://{host}:{port}",
            # On the node's address only, as the S3 server's port: pods and this host reach it there.
            "KUBETASKS_STORAGE_GRANT_BIND_ADDRESS": host}


@dataclass
class StoreBackend:
    """An operator instance of its own (``proc``), with a store of its own on one backend, and a
    BlobStore on that same store for the test's own reads and writes behind the operator's back."""

    backend: str  # "s3" or "filesystem"
    proc: OperatorProcess
    instance: str
    store: Any  # kubetasks.blobs.BlobStore
    env: dict[str, str]  # the operator's KUBETASKS_STORAGE_* (and AWS_*)

    @property
    def url(self) -> str:
        """The store's URL: every blob's uri begins with it and a slash."""
        return str(self.store.config.url)

    @property
    def operator_url(self) -> str:
        return f"http://127.0.0.1:{self.proc.metrics_port}"

    def path_of(self, uri: str) -> str:
        assert uri.startswith(self.url + "/"), (uri, self.url)
        return uri[len(self.url) + 1:]

    def delete(self, uri: str) -> None:
        """Deletes a blob behind the operator's back."""
        import obstore

        obstore.delete(self.store.store, self.path_of(uri))


@contextmanager
def store_operator(backend: str, tmp: Path, instance: str | None = None, namespaces: str = "",
                   env: dict[str, str] | None = None) -> Iterator[StoreBackend]:
    """An operator of its own instance on ``backend`` (see store_operator_env), stopped after and
    its store emptied."""
    from kubetasks.blobs import from_env

    instance = instance or f"{INSTANCE}-{backend[:2]}-{uuid.uuid4().hex[:6]}"
    stored = store_operator_env(backend, instance, tmp / "store")
    proc = OperatorProcess(tmp / f"operator-{instance}.log", namespaces=namespaces, metrics_port=free_port(),
                           env={**stored, "KUBETASKS_INSTANCE_ID": instance, **(env or {})})
    # The test's own BlobStore: never a grant key of its own making (the operator makes the store's).
    store = from_env({k: v for k, v in stored.items() if not k.startswith("KUBETASKS_STORAGE_GRANT_")})
    assert store is not None
    proc.start()
    try:
        yield StoreBackend(backend, proc, instance, store, stored)
    finally:
        proc.stop()
        print(f"operator log ({backend}): {proc.log_path}")
        store.delete_prefix("")  # the runs' blobs below its prefix (the directory, on the filesystem)


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def store_backend(crds: None, tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[StoreBackend]:
    """One operator per backend for the module (every namespace, the module's instance only),
    each with a store of its own: the tests that take it run on S3 and on the filesystem alike.
    A module may give the operator more environment in ``STORE_OPERATOR_ENV``."""
    env = dict(getattr(request.module, "STORE_OPERATOR_ENV", {}))
    with store_operator(request.param, tmp_path_factory.mktemp(f"store-{request.param}"), env=env) as backend:
        yield backend


@pytest.fixture
def fs_blob_store(tmp_path: Path) -> Any:
    """A kubetasks.blobs.BlobStore on the filesystem backend, in a fresh directory."""
    from kubetasks.blobs import BlobStore, StorageConfig

    return BlobStore(StorageConfig(url=f"file://{tmp_path}/store"))


# Faults in the cluster's own components (started by hack/cluster/up.sh, one pid file each).
def component_pid(name: str) -> int:
    return int((CLUSTER_DIR / "pids" / f"{name}.pid").read_text())


@contextmanager
def paused(name: str) -> Iterator[None]:
    """SIGSTOPs a cluster component (e.g. kube-apiserver) for the duration of the block: its
    connections stay open and answer nothing, as a hung or partitioned server's would."""
    pid = component_pid(name)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextmanager
def store_stopped() -> Iterator[None]:
    """The cluster's object store (SeaweedFS) down for the block: stopped as a crash would stop
    it (SIGKILL), started again after (hack/cluster/storage.sh, with its data)."""
    pid = component_pid("seaweedfs")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        yield
    finally:
        subprocess.run([str(REPO / "hack/cluster/storage.sh")], check=True, capture_output=True, timeout=120,
                       env={**os.environ, "KUBETASKS_CLUSTER_DIR": str(CLUSTER_DIR), "KUBETASKS_CACHE": str(CACHE)})


def restart_component(*names: str) -> None:
    """Stops cluster components and starts them again (hack/cluster/restart.sh); returns when the
    cluster is ready. Restarting kube-apiserver ends every watch: clients resume or relist (410)."""
    subprocess.run([str(REPO / "hack/cluster/restart.sh"), *names], check=True, capture_output=True, timeout=300,
                   env={**os.environ, "KUBETASKS_CLUSTER_DIR": str(CLUSTER_DIR)})


# Counting the Jobs ever created, through a watch: a final list misses every Job that was
# deleted (TTL, cancel, GC) or re-created under the same name since.
import threading  # noqa: E402  (kept with the helpers that use it)
from typing import NamedTuple  # noqa: E402


def kube_api() -> Any:
    """A client of the official ``kubernetes`` library for the test cluster (its own connection pool)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=KUBECONFIG)


class SeenJob(NamedTuple):
    name: str
    uid: str
    owner: str | None  # uid of the controlling owner (the TaskRun) when first seen
    attempt: str | None  # the kubetasks.io/attempt label


class JobWatch:
    """Every batch/v1 Job created in ``namespace`` while the block runs.

    A background thread lists the namespace's Jobs, then watches from the list's
    resourceVersion and records the first sight of every uid (ADDED, or any later event of a
    Job whose ADDED it missed). When the watch cannot resume (410 Gone, say after kube-apiserver
    restarted) it lists again and merges by uid, as an informer's relist does. Jobs that existed
    before the block are not counted. ``created()`` merges one more list first, so a Job the
    watch has not delivered yet is counted too.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.relists = 0
        self.errors: list[str] = []
        self._seen: dict[str, SeenJob] = {}  # by uid, in the order first seen
        self._before: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listed = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(target=self._run, name=f"jobwatch-{namespace}", daemon=True)

    def __enter__(self) -> JobWatch:
        self._batch = self._new_batch_api()
        self._thread.start()
        if not self._listed.wait(60):
            raise AssertionError(f"JobWatch could not list the Jobs of {self.namespace}: {self.errors[-3:]}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()  # wakes the thread blocked on the stream
            except Exception:
                pass
        self._thread.join(timeout=10)

    @staticmethod
    def _new_batch_api() -> Any:
        from kubernetes import client

        return client.BatchV1Api(kube_api())

    def _merge(self, job: dict[str, Any], initial: bool = False) -> None:
        meta = job.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        with self._lock:
            if initial:
                self._before.add(uid)
            if uid in self._seen or uid in self._before:
                return
            owner = next((o.get("uid") for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
            self._seen[uid] = SeenJob(meta.get("name", ""), uid, owner,
                                      (meta.get("labels") or {}).get("kubetasks.io/attempt"))

    def _call(self, api: Any, **kwargs: Any) -> Any:
        """The list (or, with ``watch=True``, the watch) request; a subclass may watch another kind."""
        return api.list_namespaced_job(self.namespace, **kwargs)

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        """Called for every watch event (not bookmarks) as it arrives; a subclass may record them."""

    def _list(self, batch: Any, initial: bool = False) -> str:
        resp = self._call(batch, _preload_content=False, _request_timeout=30)
        found = json.loads(resp.data)
        for job in found.get("items") or []:
            self._merge(job, initial)
        return str(found["metadata"]["resourceVersion"])

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch.watch import iter_resp_lines

        batch = self._new_batch_api()
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list(batch, initial=not self._listed.is_set())
                    if self._listed.is_set():
                        self.relists += 1
                    self._listed.set()
                self._resp = self._call(
                    batch, watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=30,
                    _preload_content=False, _request_timeout=(5, 45))
                for line in iter_resp_lines(self._resp):
                    if not line:
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:  # too old to resume: list again
                            rv = None
                            break
                        raise AssertionError(f"watch error: {obj}")
                    if event.get("type") != "BOOKMARK":
                        self._event(event["type"], obj)
                        self._merge(obj)
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
            except ApiException as e:
                if e.status == 410:
                    rv = None
                elif not self._stop.is_set():
                    self.errors.append(f"{e.status}: {e.reason}")
                    time.sleep(0.5)
            except Exception as e:  # a broken or timed-out connection: resume from rv
                if not self._stop.is_set():
                    self.errors.append(repr(e)[:200])
                    time.sleep(0.5)
            finally:
                self._resp = None

    def count(self) -> int:
        """Jobs seen so far (no extra request): for progress checks."""
        with self._lock:
            return len(self._seen)

    def seen(self, sync: bool = True) -> list[SeenJob]:
        """Every Job created since the block began, in the order first seen."""
        if sync:
            self._list(self._batch)
        with self._lock:
            return list(self._seen.values())

    def created(self, sync: bool = True) -> list[tuple[str, str]]:
        """(name, uid) of every Job created since the block began."""
        return [(j.name, j.uid) for j in self.seen(sync)]

    def owned_by(self, uid: str) -> list[SeenJob]:
        return [j for j in self.seen() if j.owner == uid]
