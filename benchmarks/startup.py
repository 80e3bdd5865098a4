"""What ``gym.make("Glimpse-v0")`` costs in a fresh process: with an empty user cache (the
embedded default's bank is computed and written there) and with the cache of an earlier make
(the bank is opened). The reference, measured in the same run, is a fresh process that only
imports torch, which every use of the package pays first.

Each figure is the median over ``--rounds`` interleaved rounds (one fresh process per
measurement per round, so a slow spell of the machine hits every row of a round alike): the
whole process's wall time, the time of ``import glimpse_gym`` and of ``gym.make`` + ``reset``
inside it, and the process's peak resident memory.

    python benchmarks/startup.py --out runs/bench/startup.json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"import torch (reference)": [],
                                               "gym.make, empty cache": [],
                                               "gym.make, cached bank": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            cold, warm = f"{tmp}/cold{r}", f"{tmp}/warm"
            rows["import torch (reference)"].append(measure(REFERENCE, warm))
            rows["gym.make, empty cache"].append(measure(MAKE, cold))
            if r == 0:
                measure(MAKE, warm)  # fills the warm cache
            rows["gym.make, cached bank"].append(measure(MAKE, warm))
    results = {name: {key: statistics.median(m[key] for m in runs) for key in runs[0]}
               | {"rounds": len(runs)} for name, runs in rows.items()}
    reference = results["import torch (reference)"]["process_s"]
    print(f"{'fresh process':28s}{'process':>10s}{'x torch':>9s}{'import':>9s}"
          f"{'make+reset':>12s}{'peak MB':>9s}")
    for name, row in results.items():
        row["x_reference"] = row["process_s"] / reference
        print(f"{name:28s}{row['process_s']:9.2f}s{row['x_reference']:9.2f}"
              f"{row['import_s']:8.2f}s{row['work_s']:11.3f}s{row['peak_mb']:9.0f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
