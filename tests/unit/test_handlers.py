"""The kopf handlers that feed the cache must run on the event loop, never in kopf's threads."""

import inspect

from kubetasks.controller import operator


def test_event_handlers_are_coroutines_so_the_cache_and_queues_stay_single_threaded():
    # A sync handler runs in kopf's thread pool: it would mutate the cache while reconcilers
    # iterate it, and put keys on an asyncio.Queue from another thread (workers not woken).
    for handler in (operator.task_event, operator.run_event, operator.job_event):
        assert inspect.iscoroutinefunction(handler), handler.__name__
