"""Reports what the task received: the sha256 and length of ``payload["blob"]``, so a caller can
check that a payload of any size arrived intact (the integration tests send 1 MiB)."""

from __future__ import annotations

import hashlib
from typing import Any

from kubetasks.runtime import Context, task


@task(id="digest", machine="micro")
def digest(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    blob = str(payload["blob"]).encode()
    return {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
