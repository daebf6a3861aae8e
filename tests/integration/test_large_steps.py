"""Step outputs past the checkpoint ConfigMap, through the object store (issue 20): each test runs on
the local cluster's SeaweedFS and on the filesystem backend (whose presigned URLs the operator
serves itself), with an operator per backend for the module (tests.conftest's ``store_backend``).

- A durable pipeline passes 5 MB between three steps and crashes (the process exits) after the
  second in its first attempt; attempt 2 gets both outputs from the store and runs only the third
  step (each step's output says which attempt ran it). The checkpoint ConfigMap holds refs.
- A 20 MB step output is returned intact on replay (in the attempt after a durable sleep).
- A record rewritten to name another run's blob is refused (the operator grants no read of it),
  and a blob deleted behind the operator's back fails the attempt with a clear reason.

And the operator's grants against the real store: a slot takes one PUT, the next attempt's GET reads it
back, a GET URL serves no other path, and a record naming another run's blob gets no grant.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from kubetasks.api.storage import BlobRef
from kubetasks.core.naming import checkpoint_name
from kubetasks.core.step_grants import DEFAULT_SLOTS, GETS_KEY, PUTS_KEY, parse_gets, parse_puts, slot_path
from kubetasks.protocol import Checkpoint, configmap_key
from tests.conftest import StoreBackend, apply, get, kubectl, wait_until
from tests.integration.test_large_results import expected, finished, task, taskrun

pytestmark = pytest.mark.cluster
EXAMPLES = "kubetasks_examples.big_steps"
RETRIED = {"retry": {"maxAttempts": 2, "minDelay": "1s"}}


def records(namespace: str, name: str) -> dict[str, dict[str, Any]]:
    run = get("taskrun", name, namespace)
    cm = get("configmap", checkpoint_name(name, run["metadata"]["uid"]), namespace)
    return {key: json.loads(text) for key, text in (cm.get("data") or {}).items() if key.startswith("step.")}


def kept(namespace: str, name: str) -> dict[str, Any]:
    """The record of step ``big`` once it is written (the run then sleeps)."""
    def found() -> dict[str, Any] | None:
        return records(namespace, name).get(configmap_key("big"), {}).get("resultRef") and \
            records(namespace, name)[configmap_key("big")]
    return wait_until(f"{name}'s step big kept by reference", found, timeout=180, interval=1)


def test_a_durable_pipeline_passes_5_mb_between_steps_and_its_second_attempt_reads_them(
        namespace, store_backend: StoreBackend):
    instance = store_backend.instance
    size = 5_000_000
    apply([task("pipeline", f"{EXAMPLES}:pipeline", **RETRIED), taskrun("p", "pipeline", {"bytes": size})],
          namespace, instance)
    status = finished(namespace, "p", timeout=400)
    assert status["phase"] == "Succeeded", status
    assert [a.get("reason") for a in status["attempts"]][:1] != ["Succeeded"] and len(status["attempts"]) == 2
    result = status.get("result")
    assert result["ran_in"] == {"one": 1, "two": 1, "three": 2}, result  # steps 1 and 2 not run again
    want = expected(size)
    assert result["one"] == want and result["two"]["size"] == want["size"]
    uid = get("taskrun", "p", namespace)["metadata"]["uid"]
    url = store_backend.url
    held = records(namespace, "p")
    for step, index in (("one", 0), ("two", 1)):
        ref = held[configmap_key(step)]["resultRef"]
        assert ref["uri"] == f"{url}/{slot_path(namespace, uid, 1, index)}" and ref["size"] > size, ref
        assert "result" not in held[configmap_key(step)]
    assert held[configmap_key("three")]["result"]["attempt"] == 2  # small: kept inline
    cm_bytes = sum(len(json.dumps(r)) for r in held.values())
    print(f"\ncheckpoint records of the 5 MB pipeline: {cm_bytes} bytes in etcd")
    assert cm_bytes < 4096


def test_a_20_mb_step_output_is_returned_intact_on_replay(namespace, store_backend: StoreBackend):
    instance = store_backend.instance
    size = 20_000_000
    apply([task("paused", f"{EXAMPLES}:kept_then_paused", **RETRIED),
           taskrun("p20", "paused", {"bytes": size, "pause": 1})], namespace, instance)
    status = finished(namespace, "p20", timeout=400)
    assert status["phase"] == "Succeeded", status
    assert status["result"] == {"made_in": 1, "read_in": 2, "data": expected(size)}, status["result"]


# On S3 only (saves ~31 s of CI): the refusal of a forged record is the operator's, the same for
# either backend, and a blob gone from the filesystem backend is unit-tested (test_result_refs).
@pytest.mark.parametrize("store_backend", ["s3"], indirect=True)
def test_a_forged_record_and_a_deleted_blob_fail_the_attempt_saying_why(namespace, store_backend: StoreBackend):
    instance = store_backend.instance
    apply([task("paused", f"{EXAMPLES}:kept_then_paused", **RETRIED),
           taskrun("victim", "paused", {"bytes": 200_000, "pause": 1}),
           taskrun("forger", "paused", {"bytes": 200_000, "pause": 20}),
           taskrun("robbed", "paused", {"bytes": 200_000, "pause": 20})], namespace, instance)
    assert finished(namespace, "victim")["phase"] == "Succeeded"
    theirs = records(namespace, "victim")[configmap_key("big")]["resultRef"]

    forged = kept(namespace, "forger")
    forged["resultRef"] = theirs  # what a pod of the run (it may patch its ConfigMap) could write
    cm = checkpoint_name("forger", get("taskrun", "forger", namespace)["metadata"]["uid"])
    kubectl("patch", "configmap", cm, "-n", namespace, "--type=merge",
            "-p", json.dumps({"data": {configmap_key("big"): json.dumps(forged)}}))

    ref = kept(namespace, "robbed")["resultRef"]
    store_backend.delete(ref["uri"])

    status = finished(namespace, "forger", timeout=240)
    assert status["phase"] == "Failed" and status["error"]["type"] == "StepOutputUnavailable", status
    message = status["error"]["message"]
    assert "refused to grant its output" in message and theirs["uri"] in message, message
    assert "is not a step output of this run" in message

    status = finished(namespace, "robbed", timeout=240)
    assert status["phase"] == "Failed" and status["error"]["type"] == "StepOutputUnavailable", status
    assert f"{ref['uri']} is missing" in status["error"]["message"], status["error"]


def grants(namespace: str) -> dict[int, dict[str, str]]:
    """The step keys of each attempt's grant Secret, by attempt (read as the cluster's admin)."""
    import base64
    import re

    found: dict[int, dict[str, str]] = {}
    for secret in json.loads(kubectl("get", "secrets", "-n", namespace, "-o", "json"))["items"]:
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        puts = parse_puts(data.get(PUTS_KEY, ""))
        if puts:
            found[int(re.findall(r"attempt-(\d+)-0$", puts[0][0])[0])] = data
    return found


def test_the_operators_step_grants_work_against_the_real_store(namespace, store_backend: StoreBackend):
    """The operator's half alone (any task image): attempt 1's slots take a PUT in the store;
    attempt 2's grant reads it back and refuses a record naming another run's blob."""
    instance = store_backend.instance
    url = store_backend.url
    # {} has no "bytes": attempt 1 fails (retryably), attempt 2 starts 30 s later
    apply([task("big", "kubetasks_examples.big:big", retry={"maxAttempts": 2, "minDelay": "30s"}),
           taskrun("g", "big", {})], namespace, instance)
    first = wait_until("attempt 1's grant", lambda: grants(namespace).get(1), timeout=120, interval=1)
    puts = parse_puts(first[PUTS_KEY])
    uid = get("taskrun", "g", namespace)["metadata"]["uid"]
    assert [uri for uri, _ in puts] == [f"{url}/{slot_path(namespace, uid, 1, i)}" for i in range(len(puts))]
    assert len(puts) == DEFAULT_SLOTS
    body = json.dumps("s" * 300_000).encode()
    request = urllib.request.Request(puts[0][1], data=body, method="PUT")
    urllib.request.urlopen(request, timeout=60).read()  # noqa: S310 (the operator's presigned URL)
    own = BlobRef.of(puts[0][0], body).to_api()
    theirs = BlobRef.of(f"{url}/{slot_path(namespace, 'another-run-uid', 1, 0)}", b'"x"').to_api()
    cm = checkpoint_name("g", uid)
    records = {configmap_key(key): Checkpoint(key=key, result_ref=ref, attempt=1).encode()
               for key, ref in (("own", own), ("theirs", theirs))}
    kubectl("patch", "configmap", cm, "-n", namespace, "--type=merge", "-p", json.dumps({"data": records}))

    second = wait_until("attempt 2's grant", lambda: grants(namespace).get(2), timeout=120, interval=1)
    gets = parse_gets(second[GETS_KEY])
    assert set(gets) == {own["uri"], theirs["uri"]}
    assert "is not a step output of this run" in gets[theirs["uri"]]["refused"]
    read = urllib.request.urlopen(gets[own["uri"]]["url"], timeout=60).read()  # noqa: S310
    assert BlobRef.of(own["uri"], read) == BlobRef.model_validate(own)
    try:  # a GET URL is that one blob's: another path with its signature is refused
        urllib.request.urlopen(gets[own["uri"]]["url"].replace("attempt-1-0", "attempt-1-1"), timeout=60)
        raise AssertionError("a presigned GET served another path")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e
