"""Example tasks for kubetasks, used by the docs and the integration tests.

Each module declares one task (entry point ``kubetasks_examples.<module>:<function>``):

- hello:   returns a greeting                      {"name": "Ada"}
- flaky:   fails until attempt N, or aborts         {"succeed_on": 3} / {"abort": "why"}
- memory:  allocates payload["mb"] MiB              {"mb": 300, "hold": 1}
- steps:   three durable steps with side effects    {"counter": "<configmap>", "crash": true}
- sleeper: a durable sleep between two steps        {"seconds": 5}
- typed:   pydantic payload and result (async)      {"item": "book", "quantity": 2, "unitPriceCents": 1250}
- digest:  sha256 of payload["blob"], as received    {"blob": "..."}

``python -m kubetasks_examples.manifests IMAGE`` prints their Task manifests.
"""
