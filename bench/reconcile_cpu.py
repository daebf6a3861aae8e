"""The run reconciler's own CPU per run, on the fake API (tests/unit/fakeapi.py): no cluster, no
network, so two commits can be compared on a busy machine, where the side-by-side bench's
wall-clock figures move with whatever else runs.

N runs of one Task: each reconciled once (its Job and status), its Job finished, then reconciled
twice (its outcome, then nothing to do). Prints CPU ms per run (process time, the fake API and
asyncio's per-call loop included: compare commits, not against the cluster's figures), and with
``--profile`` the kubetasks functions with the most cumulative time.

Usage: python bench/reconcile_cpu.py [N] [--repeat 3] [--profile]   (from the repo root)
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]
from tests.unit.test_reconcile_runs import NS, World, task, taskrun  # noqa: E402


def one_pass(n: int, profile: cProfile.Profile | None) -> float:
    names = [f"r{i}" for i in range(n)]
    w = World(task(nodeSelector={"type": "kwok"}), *[taskrun(name) for name in names])
    started = time.process_time()
    if profile:
        profile.enable()
    for name in names:
        w.reconcile(name)
    for name in names:
        w.api.finish_job(NS, f"{name}-1")
    w.api.deliver(w.op.cache)
    for _ in range(2):
        for name in names:
            w.reconcile(name)
    if profile:
        profile.disable()
    spent = time.process_time() - started
    phases = {w.status(name).get("phase") for name in names}
    assert phases == {"Succeeded"}, phases
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=300, help="runs (default 300)")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the fastest is printed (default 3)")
    parser.add_argument("--profile", action="store_true", help="also the kubetasks functions by cumulative time")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    best = min(one_pass(args.n, profile) for _ in range(args.repeat))
    print(f"run reconciler CPU per run, fake API: {1000 * best / args.n:.2f} ms "
          f"(best of {args.repeat} passes of {args.n} runs, 3 reconciles each)")
    if profile:
        stats = pstats.Stats(profile)
        stats.sort_stats("cumulative").print_stats(r"kubetasks/(core|controller)/", 25)


if __name__ == "__main__":
    main()
