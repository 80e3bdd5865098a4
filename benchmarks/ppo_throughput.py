"""End-to-end PPO / MaskablePPO env-steps per second on Glimpse-v0 (rollouts and updates).

Measured in one run against a reference: the same PPO on SB3's ``DummyVecEnv`` of single
``GlimpseEnv`` instances (what a user gets without the native vector env). The three models
are built (and warmed up) once, then trained in ``--rounds`` interleaved rounds; each figure
is the median over the rounds.

    python benchmarks/ppo_throughput.py [--bank runs/banks/cluttered-mnist/train]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

import glimpse_gym  # noqa: F401  (registers Glimpse-v0)
from glimpse_gym.sb3 import SB3VecEnv
from train.ppo import PPOConfig, buffer_class, policy_kwargs


def build(algo: type, venv, grid: tuple[int, int], args) -> Any:
    """A model as ``glimpse train ppo`` makes it, warmed up by one rollout and update."""
    cfg = PPOConfig(extractor=args.extractor)
    model = algo("MultiInputPolicy", venv, n_steps=args.n_steps, batch_size=args.batch_size,
                 n_epochs=args.n_epochs, gamma=1.0, seed=0, device="cpu",
                 policy_kwargs=policy_kwargs(cfg, grid),
                 rollout_buffer_class=buffer_class(algo is MaskablePPO))
    model.learn(args.n_steps * venv.num_envs)
    return model


def rate(model: Any, steps: int) -> float:
    """Env-steps per second of ``model.learn`` (rollouts and updates) over ``steps`` steps."""
    start, t0 = model.num_timesteps, time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return (model.num_timesteps - start) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", default=None, help="feature bank (default: embedded digits)")
    d = PPOConfig()  # the defaults of `glimpse train ppo`
    parser.add_argument("--num-envs", type=int, default=d.num_envs)
    parser.add_argument("--steps", type=int, default=120_000,
                        help="env steps per measurement, split over the rounds")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--n-steps", type=int, default=d.n_steps)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--n-epochs", type=int, default=d.n_epochs)
    parser.add_argument("--extractor", default="cell", help="cell or grid (see train/ppo.py)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    native = VecMonitor(SB3VecEnv(num_envs=args.num_envs, bank=args.bank))
    grid = tuple(native.get_attr("feature_shape")[0][:2])
    dummy = VecMonitor(DummyVecEnv([lambda: gym.make("Glimpse-v0", bank=args.bank)
                                    for _ in range(args.num_envs)]))
    ref_name = "PPO, DummyVecEnv of single envs (reference)"
    models = {  # the reference is slower: a quarter of the steps
        "PPO, native vector env": (build(PPO, native, grid, args), args.steps),
        "MaskablePPO, native vector env": (build(MaskablePPO, native, grid, args), args.steps),
        ref_name: (build(PPO, dummy, grid, args), args.steps // 4),
    }
    rounds: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.rounds):  # interleaved: a slow spell hits every row of a round
        for name, (model, steps) in models.items():
            rounds[name].append(rate(model, max(steps // args.rounds, 1)))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    per_round = {name: np.array(v) for name, v in rounds.items()}
    rows = {name: float(np.median(v)) for name, v in per_round.items()}
    print(f"bank: {args.bank or 'embedded digits'}; {args.num_envs} envs, n_steps "
          f"{args.n_steps}, batch {args.batch_size}, {args.n_epochs} epochs, "
          f"{args.extractor} extractor; median of {args.rounds} interleaved rounds")
    print(f"{'measurement':46s} {'env-steps/s':>12s} {'range over rounds':>22s} "
          f"{'x reference':>12s}")
    for name, v in per_round.items():
        ratio = np.median(v / per_round[ref_name])
        print(f"{name:46s} {np.median(v):12,.0f} {v.min():10,.0f} - {v.max():<9,.0f} "
              f"{ratio:12.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "rows": rows, "rounds": {k: v.tolist() for k, v in per_round.items()},
            "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
