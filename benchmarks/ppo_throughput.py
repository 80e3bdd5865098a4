"""End-to-end PPO / MaskablePPO env-steps per second on Glimpse-v0 (rollouts and updates).

Measured in one run against a reference: the same PPO on SB3's ``DummyVecEnv`` of single
``GlimpseEnv`` instances (what a user gets without the native vector env).

    python benchmarks/ppo_throughput.py [--bank runs/banks/cluttered-mnist/train]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

import glimpse_gym  # noqa: F401  (registers Glimpse-v0)
from glimpse_gym.sb3 import SB3VecEnv
from train.ppo import PPOConfig, _policy_kwargs, buffer_class


def rate(algo: type, venv, steps: int, grid: tuple[int, int], args) -> float:
    cfg = PPOConfig(extractor=args.extractor)
    model = algo("MultiInputPolicy", venv, n_steps=args.n_steps, batch_size=args.batch_size,
                 n_epochs=args.n_epochs, gamma=1.0, seed=0, device="cpu",
                 policy_kwargs=_policy_kwargs(cfg, grid),
                 rollout_buffer_class=buffer_class(algo is MaskablePPO))
    model.learn(args.n_steps * venv.num_envs)  # warm-up: one rollout and update
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return (model.num_timesteps - args.n_steps * venv.num_envs) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", default=None, help="feature bank (default: embedded digits)")
    d = PPOConfig()  # the defaults of `glimpse train ppo`
    parser.add_argument("--num-envs", type=int, default=d.num_envs)
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per measurement")
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
    rows = {
        "PPO, native vector env": rate(PPO, native, args.steps, grid, args),
        "MaskablePPO, native vector env": rate(MaskablePPO, native, args.steps, grid, args),
        "PPO, DummyVecEnv of single envs (reference)": rate(PPO, dummy, args.steps // 4, grid,
                                                            args),
    }
    ref = rows["PPO, DummyVecEnv of single envs (reference)"]
    print(f"bank: {args.bank or 'embedded digits'}; {args.num_envs} envs, n_steps "
          f"{args.n_steps}, batch {args.batch_size}, {args.n_epochs} epochs, "
          f"{args.extractor} extractor")
    print(f"{'measurement':46s} {'env-steps/s':>12s} {'x reference':>12s}")
    for name, value in rows.items():
        print(f"{name:46s} {value:12,.0f} {value / ref:12.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
