"""A hostile task pod and the object store (issue 20), on the real node, on each backend: the
cluster's SeaweedFS, and the filesystem, whose presigned URLs the operator's grant server serves.

A run's pod holds one grant: a presigned PUT of its own attempt's result, mounted from the
attempt's grant Secret. With it (and without it) the pod of run A tries the blobs of run B (its
result and its archived log): A's signature on B's paths, A's own URL with another key (its own
log, payload, next attempt), altered paths and expiry, a copy from B's blob, listing the bucket,
plain unsigned requests, and its token on Secrets. Everything but its own PUT is refused, and B's
blobs are unchanged afterwards. A second pod replays A's URL after the run: it works until the
grant's expiry (the Task's maxDuration plus the operator's margin, short here) and never after.
And no pod holds the store's credentials: no AWS_* in its environment, no Secret it can read,
nothing of the key in its grant.

The grant server of the filesystem backend knows no S3: it routes only GET and PUT below
``/blobs/``, so a listing, a DELETE or a multipart POST finds no route (404, 405) where S3 says 403;
and a copy or ACL request is to it a plain PUT of the pod's own blob (its grant allows that one),
which copies nothing: the blob holds the PUT's empty body after.
"""

from __future__ import annotations

import base64
import json
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import STORAGE_ENV, StoreBackend, apply, get, kubectl, read_env_file
from tests.integration.test_large_results import EXAMPLES, task
from tests.integration.test_security import finished, taskrun

pytestmark = pytest.mark.cluster
MARGIN_SECONDS = 5  # the operator's grant margin here (KUBETASKS_STORAGE_GRANT_MARGIN_SECONDS): expiry comes soon
MAX_DURATION = 30  # the hostile Task's: its grant expires MAX_DURATION + MARGIN_SECONDS after it is made
STORE_OPERATOR_ENV = {"KUBETASKS_STORAGE_GRANT_MARGIN_SECONDS": str(MARGIN_SECONDS)}  # store_backend's operators'
# The filesystem's grant server has no route for these S3 requests (no listing, no DELETE, no POST).
FS_UNROUTED = {"own result, DELETE with its PUT grant", "own URL, a multipart upload", "list the bucket, unsigned",
               "list B's prefix, A's signature", "list the buckets"}
# To the filesystem's grant server these are PUTs of the pod's own blob with an empty body: its grant's.
FS_OWN_PUTS = {"own URL, a copy of B's result", "own URL, its ACL"}

# Runs in run A's pod; VICTIM_RESULT, VICTIM_LOG, VICTIM_UID, VICTIM_GRANT are filled in.
HOSTILE = textwrap.dedent('''
    import json, os, re, ssl, urllib.error, urllib.parse, urllib.request
    G = "/var/run/kubetasks-grant"
    put_url = open(G + "/result-put-url").read().strip()
    split = urllib.parse.urlsplit(put_url)
    endpoint = "%s://%s" % (split.scheme, split.netloc)
    own_path, query = split.path, split.query   # /<bucket>/<prefix>/runs/<ns>/<uid>/attempt-1/result
    bucket = own_path.split("/")[1]

    def s3(method, url, body=None, headers=None):
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return "%d" % response.status
        except urllib.error.HTTPError as e:
            code = re.search(r"<Code>([^<]*)</Code>", e.read().decode(errors="replace"))
            return "%d %s" % (e.code, code.group(1) if code else "")
        except Exception as e:
            return "error " + type(e).__name__

    def signed(path, q=query):
        return endpoint + path + "?" + q

    def later(q):  # a week longer: S3's X-Amz-Expires (seconds), the filesystem grant's expires (a time)
        q = re.sub(r"X-Amz-Expires=\\d+", "X-Amz-Expires=604800", q)
        return re.sub(r"(^|&)expires=(\\d+)", lambda m: "%sexpires=%d" % (m.group(1), int(m.group(2)) + 604800), q)

    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    token = open(sa + "/token").read().strip()
    tls = ssl.create_default_context(cafile=sa + "/ca.crt")
    api = "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])

    def kube(path):
        request = urllib.request.Request(api + path, headers={"Authorization": "Bearer " + token})
        try:
            with urllib.request.urlopen(request, context=tls, timeout=20) as response:
                return "%d" % response.status
        except urllib.error.HTTPError as e:
            return "%d" % e.code

    victim_result, victim_log = "/" + bucket + "/VICTIM_RESULT", "/" + bucket + "/VICTIM_LOG"
    own = own_path.rsplit("/", 2)[0]  # /<bucket>/<prefix>/runs/<ns>/<its uid>
    ns = os.environ["KUBETASKS_NAMESPACE"]
    checks = {
        "own result, PUT": s3("PUT", put_url, b"mine"),
        "own result, GET with its PUT grant": s3("GET", put_url),
        "own result, DELETE with its PUT grant": s3("DELETE", put_url),
        "B's result, GET with A's signature": s3("GET", signed(victim_result)),
        "B's result, PUT with A's signature": s3("PUT", signed(victim_result), b"forged"),
        "B's log, GET with A's signature": s3("GET", signed(victim_log)),
        "B's log, PUT with A's signature": s3("PUT", signed(victim_log), b"forged"),
        "B's result, GET unsigned": s3("GET", endpoint + victim_result),
        "B's result, PUT unsigned": s3("PUT", endpoint + victim_result, b"forged"),
        "own URL, its own log": s3("PUT", signed(own + "/attempt-1/log"), b"forged"),
        "own URL, its own payload": s3("PUT", signed(own + "/payload"), b"forged"),
        "own URL, its next attempt": s3("PUT", signed(own + "/attempt-2/result"), b"forged"),
        "own URL, .. to B's result": s3("PUT", signed(own_path + "/../../../VICTIM_UID/attempt-1/result"), b"forged"),
        "own URL, %2e%2e to B's result": s3("PUT", signed(own + "/attempt-1/result/%2e%2e/%2e%2e/%2e%2e/VICTIM_UID/attempt-1/result"), b"forged"),
        "own URL, a longer expiry": s3("PUT", signed(own_path, later(query)), b"late"),
        "own URL, a copy of B's result": s3("PUT", put_url, b"", {"x-amz-copy-source": victim_result}),
        "own URL, a multipart upload": s3("POST", put_url + "&uploads="),
        "own URL, its ACL": s3("PUT", put_url + "&acl=", b""),
        "list the bucket, unsigned": s3("GET", endpoint + "/" + bucket + "?list-type=2"),
        "list the bucket, A's signature": s3("GET", endpoint + "/" + bucket + "/?" + query),
        "list B's prefix, A's signature": s3("GET", endpoint + "/" + bucket + "?list-type=2&prefix=" + urllib.parse.quote("VICTIM_RESULT".rsplit("/", 2)[0]) + "&" + query),
        "list the buckets": s3("GET", endpoint + "/"),
        "every Secret (token)": kube("/api/v1/namespaces/%s/secrets" % ns),
        "B's grant Secret (token)": kube("/api/v1/namespaces/%s/secrets/VICTIM_GRANT" % ns),
    }
    store_env = sorted(k for k in os.environ if k.startswith(("AWS_", "GOOGLE_", "AZURE_")) or "SECRET" in k)
    files = sorted(n for n in os.listdir(G) if not n.startswith(".."))
    expires = open(G + "/expires").read().strip()
    print("RESULT:" + json.dumps({"checks": checks, "store env": store_env, "grant files": files,
                                  "put url": put_url, "expires": expires}))
''')

# Runs in run C's pod, after run A: A's leaked PUT URL, replayed until it stops working (a deadline).
REPLAY = textwrap.dedent('''
    import json, re, time, urllib.error, urllib.request
    from datetime import datetime, timezone
    url, deadline, tries = "PUT_URL", time.monotonic() + 150, []
    while time.monotonic() < deadline:
        request = urllib.request.Request(url, data=b"replayed", method="PUT")
        at = datetime.now(timezone.utc).isoformat()
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                tries.append([at, "%d" % response.status])
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            found = re.search(r"<Message>([^<]*)</Message>", body)
            tries.append([at, "%d %s" % (e.code, found.group(1) if found else body.strip()[:200])])
            break
        time.sleep(1)
    firsts = [t for t in tries if t[1] == "200"]
    print("RESULT:" + json.dumps({"first": firsts[:1], "last ok": firsts[-1:], "refused": tries[-1:], "tries": len(tries)}))
''')


def python_command(script: str) -> str:
    encoded = base64.b64encode(script.encode()).decode()
    return f"python -c \"import base64; exec(base64.b64decode('{encoded}').decode())\""


def result_of(status: dict[str, Any]) -> dict[str, Any]:
    text = status["result"]
    return json.loads(text[text.index("RESULT:") + len("RESULT:"):].splitlines()[0])


def grant_secrets(namespace: str, run_uid: str) -> list[dict[str, Any]]:
    found = json.loads(kubectl("get", "secrets", "-n", namespace, "-o", "json"))["items"]
    return [s for s in found if any(o.get("uid") == run_uid for o in s["metadata"].get("ownerReferences") or [])]


def test_a_task_pod_reaches_only_its_own_result_and_its_grant_expires(namespace, store_backend: StoreBackend):
    """On store_backend's operators (a store of their own each), with a short grant margin."""
    from kubetasks.api.storage import BlobRef
    from kubetasks.blobs import GRANT_KEY_FILE

    instance, store, on_s3 = store_backend.instance, store_backend.store, store_backend.backend == "s3"
    # What precedes a blob's path in its URL's path: the bucket (the prefix is in the path); the
    # store itself on the filesystem (below its grant server's /blobs/).
    bucket_url = (read_env_file(STORAGE_ENV)["KUBETASKS_STORAGE_URL"].rstrip("/") if on_s3 else store_backend.url) + "/"
    hostile = task("hostile", "subprocess:getoutput", maxDuration=f"{MAX_DURATION}s")
    replayer = task("replay", "subprocess:getoutput", maxDuration="4m")  # outlives the hostile grant
    apply([task("big", f"{EXAMPLES}:big"), hostile, replayer, taskrun("victim", "big", {"bytes": 100_000})], namespace,
          instance)
    victim = finished(namespace, "victim", timeout=240)
    assert victim["phase"] == "Succeeded", victim
    result_ref, log_ref = victim["resultRef"], victim["attempts"][0].get("log")
    assert result_ref["uri"].startswith(store.config.url + "/"), result_ref  # in the store, not a ConfigMap
    assert log_ref and log_ref["uri"].startswith(store.config.url + "/"), victim
    victim_uid = get("taskrun", "victim", namespace)["metadata"]["uid"]
    victim_grant = grant_secrets(namespace, victim_uid)
    assert len(victim_grant) == 1, victim_grant

    script = (HOSTILE.replace("VICTIM_RESULT", result_ref["uri"][len(bucket_url):])
              .replace("VICTIM_LOG", log_ref["uri"][len(bucket_url):]).replace("VICTIM_UID", victim_uid)
              .replace("VICTIM_GRANT", victim_grant[0]["metadata"]["name"]))
    apply(taskrun("attacker", "hostile", python_command(script)), namespace, instance)
    attacker_uid = get("taskrun", "attacker", namespace)["metadata"]["uid"]
    status = finished(namespace, "attacker", timeout=240)
    assert status["phase"] == "Succeeded", status
    seen = result_of(status)
    checks = seen["checks"]
    print(json.dumps(seen, indent=1))
    assert checks.pop("own result, PUT") == "200", checks  # its grant works, for its one blob and verb
    if on_s3:
        refused = {name: code for name, code in checks.items() if code.split()[0] not in ("400", "403")}
        assert checks["list the bucket, unsigned"] == "403 AccessDenied", checks
    else:
        assert {name: checks.pop(name).split()[0] for name in sorted(FS_OWN_PUTS)} == dict.fromkeys(FS_OWN_PUTS, "200")
        refused = {name: code for name, code in checks.items()
                   if code.split()[0] not in (("404", "405") if name in FS_UNROUTED else ("400", "403"))}
        # Its own blob holds the last of those PUTs' empty body: nothing of B's was copied into it.
        import obstore

        own = f"runs/{namespace}/{attacker_uid}/attempt-1/result"
        assert bytes(obstore.get(store.store, own).bytes()) == b"", own
    assert not refused, refused
    # B's blobs are the ones B wrote.
    for ref in (result_ref, log_ref):
        assert store.get(BlobRef.model_validate(ref))

    # No store credentials in the pod: its environment, its grant (read as the admin), its Job.
    assert seen["store env"] == [], seen
    assert {"expires", "result-put-url", "result-uri", "threshold"} <= set(seen["grant files"]), seen
    if on_s3:
        secrets = [read_env_file(STORAGE_ENV)["AWS_SECRET_ACCESS_KEY"]]
    else:  # the grant server's signing key, in the store's directory
        key = (Path(urlsplit(store_backend.url).path) / GRANT_KEY_FILE).read_bytes()
        secrets = [key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode().rstrip("=")]
    grant = grant_secrets(namespace, attacker_uid)
    assert len(grant) == 1 and not any(secret in json.dumps(grant) for secret in secrets), grant
    jobs = kubectl("get", "jobs,pods", "-n", namespace, "-l", f"kubetasks.io/run-uid={attacker_uid}", "-o", "json")
    assert not any(secret in jobs for secret in secrets) and "AWS_" not in jobs and "kubetasks-store" not in jobs

    # Its grant, replayed by another pod after the run, works until it expires and never after.
    expires = datetime.fromisoformat(seen["expires"].replace("Z", "+00:00"))
    created = datetime.fromisoformat(get("taskrun", "attacker", namespace)["metadata"]["creationTimestamp"]
                                     .replace("Z", "+00:00"))
    lifetime = (expires - created).total_seconds()  # maxDuration + margin, from its attempt's start
    assert MAX_DURATION + MARGIN_SECONDS <= lifetime < MAX_DURATION + MARGIN_SECONDS + 60, (created, expires)
    apply(taskrun("replayer", "replay", python_command(REPLAY.replace("PUT_URL", seen["put url"]))), namespace,
          instance)
    replayed = finished(namespace, "replayer", timeout=240)
    assert replayed["phase"] == "Succeeded", replayed
    replay = result_of(replayed)
    print(f"grant expires {expires.isoformat()}: {json.dumps(replay)}")
    refused_at, refusal = replay["refused"][0]
    assert refusal == ("403 Request has expired" if on_s3 else "403 refused: the grant has expired"), replay
    # Refused for its expiry, not before (X-Amz-Date counts whole seconds, signed just before the Secret's time).
    assert (datetime.fromisoformat(refused_at) - expires).total_seconds() > -2, replay
    assert replay["last ok"] and datetime.fromisoformat(replay["last ok"][0][0]) < expires, replay
