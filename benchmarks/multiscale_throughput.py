"""MultiScale-v0 stepping speed against the single-scale env on the same images, in one run.

Measures, in ``--rounds`` interleaved rounds of ``--seconds`` each (a figure is the median
over the rounds, with the range; a ratio is taken within each round, then its median):
- the multi-scale native vector env at ``--num-envs`` (default 4096) in its ``partial`` and
  ``glimpses`` modes, with ``copy=False`` (views) and ``copy=True`` (Gymnasium's default);
- the single-scale native vector env (``Glimpse-v0``) in its ``partial`` mode with
  ``copy=False`` on the multi-scale bank's finest level (the same images, BagNet and full-size
  grid), the reference;
- ``SyncVectorEnv`` of ``--sync-envs`` single multi-scale envs (``partial``).

Actions are drawn uniformly from all cells (a cell under a closed parent is a wasted glimpse,
which costs the env the same work). Without ``--bank`` the benchmark writes a multi-scale
bank of the embedded ``digits`` test split (scales 0.5 and 1) to a temporary folder.

    python benchmarks/multiscale_throughput.py [--bank runs/banks/cluttered-mnist-100-ms/test]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import SyncVectorEnv

from glimpse_gym.envs import GlimpseVectorEnv, MultiScaleEnv, MultiScaleVectorEnv
from glimpse_gym.multiscale import MultiScaleBank

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark's timer
from env_throughput import vector_rate  # noqa: E402


def digits_bank(folder: Path) -> Path:
    from train.extract_features import ExtractConfig, extract_features

    extract_features(ExtractConfig(split=["test"], scales="0.5,1", out=str(folder),
                                   progress=False))
    return folder / "test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", default=None,
                        help="multi-scale bank (default: the embedded digits, written to a "
                             "temporary folder)")
    parser.add_argument("--num-envs", type=int, default=4096, help="native vector env size")
    parser.add_argument("--sync-envs", type=int, default=64, help="SyncVectorEnv size")
    parser.add_argument("--glimpses", type=int, default=5, help="T")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--device", default="cpu", help="device of the native vector envs")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.bank) if args.bank else digits_bank(Path(tmp))
        run(args, MultiScaleBank.load(path))


def run(args: argparse.Namespace, bank: MultiScaleBank) -> None:
    s, n, m, t = args.seconds, args.num_envs, args.sync_envs, args.glimpses
    finest = bank.levels[-1].bank.path
    measures = {}
    reference = f"Glimpse-v0 native x{n}, partial, copy=False (finest level)"
    single = GlimpseVectorEnv(n, bank=finest, glimpses=t, observation="partial",
                              device=args.device)
    measures[reference] = lambda: vector_rate(single, s, copy=False)
    for mode in ("partial", "glimpses"):
        native = MultiScaleVectorEnv(n, bank, glimpses=t, observation=mode, device=args.device)
        for copy in (False, True):
            measures[f"MultiScale-v0 native x{n}, {mode}, copy={copy}"] = \
                lambda e=native, c=copy: vector_rate(e, s, copy=c)
    sync = SyncVectorEnv([lambda: MultiScaleEnv(bank, glimpses=t) for _ in range(m)],
                         copy=False)
    measures[f"SyncVectorEnv x{m} of MultiScale-v0, partial"] = lambda: vector_rate(sync, s)
    rounds: dict[str, list[float]] = {name: [] for name in measures}
    for r in range(args.rounds):
        for name, measure in measures.items():
            rounds[name].append(measure())
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    per_round = {name: np.array(v) for name, v in rounds.items()}
    main_row = f"MultiScale-v0 native x{n}, partial, copy=False"
    ratio = per_round[main_row] / per_round[reference]
    to_sync = per_round[main_row] / per_round[f"SyncVectorEnv x{m} of MultiScale-v0, partial"]
    grids = " / ".join(f"{lv.grid[0]}x{lv.grid[1]}" for lv in bank.levels)
    env = MultiScaleEnv(bank, glimpses=t)
    print(f"bank: {bank.path}; levels {grids} (scales "
          f"{', '.join(f'{lv.scale:g}' for lv in bank.levels)}), {env.num_actions} actions, "
          f"D={env.feature_dim}, T={t}; torch threads {torch.get_num_threads()}; "
          f"{args.rounds} interleaved rounds of {s:g} s per measurement")
    print(f"{'measurement':62s} {'median env-steps/s':>19s} {'range over rounds':>24s}")
    for name, values in per_round.items():
        print(f"{name:62s} {np.median(values):19,.0f} {values.min():11,.0f} - "
              f"{values.max():,.0f}")
    print(f"MultiScale-v0 partial / Glimpse-v0 partial (copy=False): {np.median(ratio):.2f}x "
          f"(rounds {ratio.min():.2f}x - {ratio.max():.2f}x); native / SyncVectorEnv: "
          f"{np.median(to_sync):.0f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "median": {k: float(np.median(v)) for k, v in per_round.items()},
            "rounds": {k: v.tolist() for k, v in per_round.items()},
            "ratio_to_single_scale": float(np.median(ratio)),
            "ratio_to_sync": float(np.median(to_sync)), "bank": str(bank.path),
            "num_envs": n, "glimpses": t, "num_rounds": args.rounds, "seconds": s}, indent=1))


if __name__ == "__main__":
    gym.logger.min_level = 40  # no passive-checker chatter
    main()
