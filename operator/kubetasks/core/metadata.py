"""Run metadata (``ctx.metadata``): what a task says about its progress, shown in status.metadata.

A task pod reaches only its own run, so it writes one document into its own checkpoint ConfigMap
(protocol.METADATA_KEY), and the operator copies it into the run's status:

    {"own": {key: value},                       # this run's metadata, as values
     "parent": {key: contribution},             # what it adds to its parent's (ctx.metadata.parent)
     "root": {key: contribution}}               # and to its chain's root's (ctx.metadata.root)

A contribution is one of ``{"set": v}``, ``{"inc": n}`` (increments summed) or ``{"append": [..]}``.
An ancestor's status.metadata is *recomputed* each time from its own document and its
descendants' current contributions (folded in child name order: set is the last by name,
increments add up, appends concatenate), never accumulated: reading a child twice, or after an
operator restart, cannot count it twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetasks.protocol import json_object

METADATA_LIMIT = 256 * 1024  # bytes of JSON: of the pod's document, and of a run's status.metadata
ANCESTORS = ("parent", "root")
OPS = ("set", "inc", "append")


class MetadataError(ValueError):
    """An operation the metadata cannot take (increment a string, append to a number)."""


def size_of(value: Any) -> int:
    """Bytes of ``value``'s compact JSON text, as the status and the ConfigMap hold it."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def storable(value: Any) -> Any:
    """``value`` as the API server keeps it in status, so that it reads back equal to what was
    written (else it would be written again every second): no null members in objects, at any
    depth (a merge patch's null removes a member; the server drops them inside lists too), and
    integers beyond 64 bits as the floats it makes of them. Null list items stay."""
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -2 ** 63 <= value < 2 ** 63:
        return float(value)
    return value


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new`` (``storable``: no null members):
    a member gone is set to null, an object changed is patched member by member."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        if k not in old or old[k] != v:
            patch[k] = merge_patch(old.get(k), v)
    return patch


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- operations (the SDK's, on its own document) -----------------------------------------------

def incremented(value: Any, n: int | float, key: str) -> int | float:
    """``value`` + ``n``; a key not set counts as 0."""
    if not _number(n):
        raise MetadataError(f"metadata {key!r}: increment by a number, not {n!r}")
    if value is None:
        return n
    if not _number(value):
        raise MetadataError(f"metadata {key!r} holds {type(value).__name__} {value!r}: it cannot be incremented")
    return value + n


def appended(value: Any, item: Any, key: str) -> list[Any]:
    """``value`` with ``item`` at its end; a key not set counts as an empty list."""
    if value is None:
        return [item]
    if not isinstance(value, list):
        raise MetadataError(f"metadata {key!r} holds {type(value).__name__} {value!r}: it cannot be appended to")
    return [*value, item]


def contribute(contribution: Mapping[str, Any] | None, op: str, value: Any, key: str) -> dict[str, Any]:
    """A run's contribution to an ancestor's ``key`` after one more ``op`` (set, inc, append):
    a set absorbs what follows it (set 5 then inc 2 is set 7); an increment and an append of the
    same key cannot be combined (the ancestor's value cannot be both)."""
    if op == "set":
        return {"set": value}
    old = dict(contribution or {})
    if "set" in old:
        combined = incremented(old["set"], value, key) if op == "inc" else appended(old["set"], value, key)
        return {"set": combined}
    if op == "inc":
        if "append" in old:
            raise MetadataError(f"metadata {key!r}: this run appends to it; it cannot also increment it")
        return {"inc": incremented(old.get("inc"), value, key)}
    if op == "append":
        if "inc" in old:
            raise MetadataError(f"metadata {key!r}: this run increments it; it cannot also append to it")
        return {"append": appended(old.get("append"), value, key)}
    raise MetadataError(f"unknown metadata operation {op!r}")


def contribution_value(contribution: Mapping[str, Any] | None) -> Any:
    """What a contribution holds (the value set, the sum of increments, the items appended)."""
    for op in OPS:
        if contribution and op in contribution:
            return contribution[op]
    return None


# -- the pod's document, as the operator reads it (untrusted) ----------------------------------

@dataclass(frozen=True)
class MetadataDoc:
    own: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, dict[str, Any]] = field(default_factory=dict)
    root: dict[str, dict[str, Any]] = field(default_factory=dict)

    def encode(self) -> str:
        body: dict[str, Any] = {"own": self.own}
        if self.parent:
            body["parent"] = self.parent
        if self.root:
            body["root"] = self.root
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def ancestors(self) -> dict[str, Any]:
        """status.ancestorMetadata: the contributions, for the operator to fold into the ancestors."""
        return {k: v for k, v in (("parent", self.parent), ("root", self.root)) if v}


def _contributions(value: Any) -> dict[str, dict[str, Any]]:
    """The well-formed contributions of a document's part; anything else is dropped."""
    if not isinstance(value, dict):
        return {}
    kept: dict[str, dict[str, Any]] = {}
    for key, c in value.items():
        if not isinstance(c, dict) or len(c) != 1:
            continue
        (op, v), = c.items()
        if (op == "set" and v is not None) or (op == "inc" and _number(v)) or (op == "append" and isinstance(v, list)):
            kept[str(key)] = {op: storable(v)}
    return kept


def parse_doc(text: str | None) -> MetadataDoc | None:
    """The document a pod wrote; None when there is none or it is not one (it is then ignored)."""
    body = json_object(text)
    if body is None:
        return None
    own = body.get("own")
    return MetadataDoc(own=storable(own) if isinstance(own, dict) else {}, parent=_contributions(body.get("parent")),
                       root=_contributions(body.get("root")))


# -- folding descendants into an ancestor ------------------------------------------------------

def apply(value: Any, contribution: Mapping[str, Any]) -> Any:
    """An ancestor's value of a key after one descendant's contribution. A value of the wrong
    kind (an increment onto a string) is replaced, not an error: the fold never fails."""
    if "set" in contribution:
        return contribution["set"]
    if "inc" in contribution:
        return (value if _number(value) else 0) + contribution["inc"]
    return [*(value if isinstance(value, list) else []), *contribution.get("append", [])]


def fold(own: Mapping[str, Any], contributions: Iterable[tuple[str, Mapping[str, Mapping[str, Any]]]]) -> dict[str, Any]:
    """An ancestor's metadata: its own document, then each ``(descendant name, {key: contribution})``
    in name order (stable: a descendant's parent part before its root part)."""
    doc = dict(own)
    for _, part in sorted(contributions, key=lambda c: c[0]):
        for key in sorted(part):
            doc[key] = apply(doc.get(key), part[key])
    return doc


def ancestor_parts(name: str, ancestor_metadata: Any, direct_child: bool, root: bool
                   ) -> list[tuple[str, Mapping[str, Mapping[str, Any]]]]:
    """The parts of one descendant's status.ancestorMetadata that apply to an ancestor: its
    ``parent`` part when the ancestor is its parent, its ``root`` part when it is its root."""
    if not isinstance(ancestor_metadata, dict):
        return []
    parts: list[tuple[str, Mapping[str, Mapping[str, Any]]]] = []
    for which, applies in (("parent", direct_child), ("root", root)):
        part = _contributions(ancestor_metadata.get(which))
        if applies and part:
            parts.append((name, part))
    return parts


def too_large_message(size: int) -> str:
    return (f"the run's metadata is {size} bytes; the limit is {METADATA_LIMIT} (256 KiB): status.metadata "
            "keeps its last value that fitted")
