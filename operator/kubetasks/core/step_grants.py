"""Step outputs in the object store: the grants an attempt gets, and which step refs are believed.

A step output whose JSON is above the store's threshold (or does not fit the checkpoint ConfigMap)
is PUT to the store by the task pod, and its checkpoint record holds a ref (``resultRef``: uri,
size, sha256) instead of the value (protocol.Checkpoint). The pod holds no store credentials, and
step keys are not known before the code runs, so each attempt's grant Secret (core.grants) also
carries:

- **Upload slots**: ``slots`` presigned PUTs of ``runs/<ns>/<uid>/steps/attempt-<n>-<i>``
  (i = 0..slots-1, chart value ``storage.stepSlots``), taken in order by the runtime. Exact paths,
  not a presigned POST policy on the run's prefix: obstore signs only single-object URLs (a POST
  policy needs botocore and credentials handling of its own), and a prefix policy would let a pod
  overwrite anything of its run (its result, another attempt's log or step outputs); a slot is
  one object of this attempt only, and slots of different attempts never collide.
- **Downloads**: a presigned GET of each blob named by a step record in the run's checkpoint
  ConfigMap when the attempt starts. The records are written by the run's pods, so nothing in
  them is trusted: a ref is signed only when it names a step slot of this very run in the
  operator's store (never another run's blob, nor another bucket); any other is listed as refused
  with why, so the pod fails saying so rather than returning a wrong value.

A replay (core.replay) starts from copies of its original's records: the operator copies each
reused blob into the replay's own prefix as ``steps/replayed-<digest>`` (no pod has a slot of
that name, so none can overwrite it) and the copied record names it, so a replay's pod reaches
its own run's blobs only, like any other.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kubetasks.api.storage import BlobRef, step_path
from kubetasks.protocol import parse_checkpoints

SLOTS_ENV = "KUBETASKS_STORAGE_STEP_SLOTS"
SLOTS_VALUE = "storage.stepSlots"  # the chart value that sets SLOTS_ENV
DEFAULT_SLOTS = 8  # each presigned URL is ~0.7 KiB in the grant Secret, kept in etcd for every SDK attempt
MAX_SLOTS = 256  # a presigned URL is ~0.5-1 KiB; a Secret holds 1 MiB, with the downloads too
PUTS_KEY = "step-puts"  # JSON [{"uri", "url"}, ...]: the attempt's upload slots, in order
GETS_KEY = "step-gets"  # JSON {uri: {"url"} | {"refused": why}}: the step blobs it may read


def slots_from_env(env: Mapping[str, str]) -> int:
    """The number of upload slots per attempt (0: step outputs stay in the ConfigMap)."""
    text = (env.get(SLOTS_ENV) or "").strip()
    try:
        return max(0, min(int(text), MAX_SLOTS)) if text else DEFAULT_SLOTS
    except ValueError:
        return DEFAULT_SLOTS


def slot_name(attempt: int, index: int) -> str:
    return f"attempt-{attempt}-{index}"


def slot_path(namespace: str, run_uid: str, attempt: int, index: int) -> str:
    return step_path(namespace, run_uid, slot_name(attempt, index))


def slot_paths(namespace: str, run_uid: str, attempt: int, slots: int) -> list[str]:
    return [slot_path(namespace, run_uid, attempt, i) for i in range(slots)]


REPLAYED = "replayed-"


def replayed_path(namespace: str, run_uid: str, source_uri: str) -> str:
    """Where a replay keeps its copy of its original's step blob ``source_uri``: named by a digest
    of it, so copies of distinct blobs (a replay of a replay has both kinds) never collide."""
    return step_path(namespace, run_uid, REPLAYED + hashlib.sha256(source_uri.encode()).hexdigest()[:16])


@dataclass(frozen=True)
class StepRef:
    """A step record's ref as judged: the path to sign, or why not."""

    uri: str
    path: str | None = None
    refusal: str | None = None


def step_refs(data: Mapping[str, str] | None) -> dict[str, Any]:
    """Step key -> the raw ``resultRef`` of every record in the checkpoint ConfigMap that has one."""
    return {key: record.result_ref for key, record in parse_checkpoints(data).items()
            if record.result_ref is not None}


def judge_step_ref(raw: Any, namespace: str, run_uid: str, store_url: str) -> StepRef:
    """The store path ``raw`` names when it is a step slot of this run in this store."""
    try:
        ref = BlobRef.model_validate(raw)
    except ValidationError:
        uri = raw.get("uri") if isinstance(raw, dict) else None
        return StepRef(uri=uri[:300] if isinstance(uri, str) else "?", refusal="the record's resultRef is not a ref (uri, size, sha256)")
    base = store_url.rstrip("/") + "/"
    prefix = step_path(namespace, run_uid, "")
    own = re.compile(re.escape(prefix) + r"(attempt-[1-9][0-9]{0,5}-(0|[1-9][0-9]{0,3})|" + REPLAYED + "[0-9a-f]{16})")
    if ref.uri.startswith(base) and own.fullmatch(ref.uri[len(base):]):
        return StepRef(uri=ref.uri, path=ref.uri[len(base):])
    shown = ref.uri if len(ref.uri) <= 200 else ref.uri[:197] + "..."
    return StepRef(uri=ref.uri[:2048], refusal=(
        f"{shown!r} is not a step output of this run ({base}{prefix}attempt-<n>-<i> or {REPLAYED}<digest>): "
        "refused, not read"))


def render_step_grant(puts: list[tuple[str, str]], gets: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The grant Secret's step keys (stringData): upload slots (uri, url) and downloads by uri."""
    return {PUTS_KEY: json.dumps([{"uri": uri, "url": url} for uri, url in puts], separators=(",", ":")),
            GETS_KEY: json.dumps(dict(gets), separators=(",", ":"), sort_keys=True)}


def parse_puts(text: str) -> list[tuple[str, str]]:
    """The upload slots of a grant's PUTS_KEY; [] for anything else (an older operator's grant)."""
    try:
        body = json.loads(text)
    except ValueError:
        return []
    if not isinstance(body, list):
        return []
    return [(str(s["uri"]), str(s["url"])) for s in body
            if isinstance(s, dict) and isinstance(s.get("uri"), str) and isinstance(s.get("url"), str)]


def parse_gets(text: str) -> dict[str, dict[str, str]]:
    """The downloads of a grant's GETS_KEY, by uri; {} for anything else."""
    try:
        body = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    return {str(uri): {k: str(v) for k, v in entry.items() if k in ("url", "refused")}
            for uri, entry in body.items() if isinstance(entry, dict)}
