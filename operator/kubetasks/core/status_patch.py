"""The status patch that turns one status into another: what the operator writes after a decision,
and ``kubetasks dev``, which decides its runs' status with the same state machine (core.plan)."""

from __future__ import annotations

from typing import Any

from kubetasks.core.metadata import merge_patch

# Free-form objects (core.metadata): in a merge patch, patched member by member, or a member gone would stay.
MERGED_FIELDS = ("metadata", "ancestorMetadata")


def status_patch(old: dict[str, Any], new: dict[str, Any], whole: bool = False) -> dict[str, Any]:
    """The status fields that changed from ``old`` to ``new``; fields that disappeared are null.
    ``whole``: each changed field as it is now, to be set whole (kube.patch_status with ``old``);
    else a merge patch, whose free-form objects are patched member by member."""
    patch = {k: v if whole or k not in MERGED_FIELDS else merge_patch(old.get(k), v)
             for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch
