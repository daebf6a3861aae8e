"""The pods of a finished attempt, for its exit code and its log: from the pod informer
(``cache.job_pods``) once it shows them ended, else one list from the API server's watch cache
(the Job's event can come before its pods' last change, which arrives on another watch)."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

from kubetasks.controller.cache import Body, Cache
from kubetasks.core.children import pods_ended


async def finished_job_pods(cache: Cache, api: ModuleType | Any, namespace: str, job: str) -> list[Body]:
    pods = cache.pods_of_job(namespace, job)
    if pods_ended(pods):
        return list(pods)
    return list(await asyncio.to_thread(api.list_pods, namespace, f"job-name={job}"))
