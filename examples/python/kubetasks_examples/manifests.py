"""Prints the Task manifests of the examples: ``python -m kubetasks_examples.manifests IMAGE``."""

from __future__ import annotations

import sys

import yaml

from kubetasks_examples import flaky, hello, memory, sleeper, steps, typed

TASKS = [hello.hello, flaky.flaky, memory.memory, steps.steps, sleeper.sleeper, typed.typed]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} IMAGE", file=sys.stderr)
        return 2
    print(yaml.safe_dump_all([t.to_task_manifest(argv[1]) for t in TASKS], sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
