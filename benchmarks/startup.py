"""What ``gym.make("Glimpse-v0")`` costs in a fresh process: with an empty user cache (the
embedded default's bank is computed and written there) and with the cache the make before
filled (the bank is opened). The reference, measured in the same run, is a fresh process that only
imports torch, which every use of the package pays first.

Each figure is the median over ``--rounds`` interleaved rounds (one fresh process per
measurement per round, so a slow spell of the machine hits every row of a round alike): the
whole process's wall time, the time of ``import glimpse_gym`` and of ``gym.make`` + ``reset``
inside it, and the process's peak resident memory.

    python benchmarks/startup.py --out runs/bench/startup.json

With ``--task NAME --root DIR`` it measures a standard task's id instead (``gym.make(
"Glimpse-ClutteredMNIST-v0", root=DIR, split=...)``): the first make of each split writes the
split's bank with the shipped BagNet, which takes minutes, so ``--rounds`` defaults to 1 there.

    python benchmarks/startup.py --task cluttered-mnist --root ../shared/data \
        --out runs/bench/startup-cluttered-mnist.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, time
t0 = time.perf_counter()
{imports}
t1 = time.perf_counter()
{work}
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "work_s": t2 - t1,
                   "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
REFERENCE = CHILD.format(imports="import torch", work="pass")
MAKE = CHILD.format(imports="import gymnasium as gym, glimpse_gym, glimpse_gym.envs",
                    work="env = gym.make('Glimpse-v0'); env.reset(seed=0)")


def measure(code: str, cache: str) -> dict[str, float]:
    """Run ``code`` in a fresh interpreter with ``cache`` as the user cache."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={**os.environ, "GLIMPSE_GYM_CACHE": cache})
    return {"process_s": time.perf_counter() - start, **json.loads(out.stdout.splitlines()[-1])}


def task_make(task: str, root: str, split: str) -> str:
    """The child code that makes a task's id on ``split``."""
    from glimpse_gym.tasks import TASKS

    env_id = TASKS[task].env_id
    return CHILD.format(imports="import gymnasium as gym, glimpse_gym, glimpse_gym.envs",
                        work=f"env = gym.make({env_id!r}, root={root!r}, split={split!r}); "
                             "env.reset(seed=0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds (default: 5; 1 with --task)")
    parser.add_argument("--task", default=None,
                        help="measure this standard task's id (glimpse_gym.tasks) instead")
    parser.add_argument("--root", default="../shared/data",
                        help="with --task: the folder holding the task's dataset")
    parser.add_argument("--splits", default="test,val,train",
                        help="with --task: the splits to make, comma-separated")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.task else 5)
    makes = ({"": MAKE} if not args.task else
             {f" ({s})": task_make(args.task, str(Path(args.root).resolve()), s)
              for s in args.splits.split(",")})
    rows: dict[str, list[dict[str, float]]] = {"import torch (reference)": []}
    for suffix in makes:
        rows[f"gym.make{suffix}, empty cache"] = []
        rows[f"gym.make{suffix}, cached bank"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            rows["import torch (reference)"].append(measure(REFERENCE, f"{tmp}/warm"))
            for suffix, code in makes.items():
                cache = f"{tmp}/cache{r}{suffix}"
                rows[f"gym.make{suffix}, empty cache"].append(measure(code, cache))
                # the same cache again: the bank the make before wrote is opened
                rows[f"gym.make{suffix}, cached bank"].append(measure(code, cache))
    results = {name: {key: statistics.median(m[key] for m in runs) for key in runs[0]}
               | {"rounds": len(runs)} for name, runs in rows.items()}
    reference = results["import torch (reference)"]["process_s"]
    print(f"{'fresh process':40s}{'process':>10s}{'x torch':>9s}{'import':>9s}"
          f"{'make+reset':>12s}{'peak MB':>9s}")
    for name, row in results.items():
        row["x_reference"] = row["process_s"] / reference
        print(f"{name:40s}{row['process_s']:9.2f}s{row['x_reference']:9.2f}"
              f"{row['import_s']:8.2f}s{row['work_s']:11.3f}s{row['peak_mb']:9.0f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
