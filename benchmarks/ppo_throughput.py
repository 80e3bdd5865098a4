"""End-to-end PPO / MaskablePPO env-steps per second on Glimpse-v0 (rollouts and updates).

Measured in one run against a reference: the same PPO on SB3's ``DummyVecEnv`` of single
``GlimpseEnv`` instances (what a user gets without the native vector env). PPO and
MaskablePPO run on the native vector env in each observation mode of ``--observations``
(``full``: the grids; ``index``: by reference, the extractor reads the grids from the bank;
``glimpses``: the compact sequence with the sequence extractor), and the bytes of
observations the rollout buffer holds per rollout are reported for each. The models are built
(and warmed up) once, then trained in ``--rounds`` interleaved rounds; each figure is the
median over the rounds.

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
from train.ppo import PPOConfig, buffer_class, policy_kwargs, resolve_extractor


def build(algo: type, venv, source: Any, observation: str, args) -> Any:
    """A model as ``glimpse train ppo`` makes it, warmed up by one rollout and update."""
    extractor = args.extractor if observation != "glimpses" else "auto"
    cfg = resolve_extractor(PPOConfig(extractor=extractor, observation=observation,
                                      banks=str(Path(args.bank).parent) if args.bank else None))
    model = algo("MultiInputPolicy", venv, n_steps=args.n_steps, batch_size=args.batch_size,
                 n_epochs=args.n_epochs, gamma=1.0, seed=0, device="cpu",
                 policy_kwargs=policy_kwargs(cfg, source),
                 rollout_buffer_class=buffer_class(algo is MaskablePPO))
    model.learn(args.n_steps * venv.num_envs)
    return model


def build_saccader(source: Any, observation: str, args, env_minibatches: bool = False) -> Any:
    """MaskablePPO with the Saccader as its policy (64 channels), warmed up; with
    ``env_minibatches`` each minibatch holds whole envs (the where network runs once per
    episode of the minibatch)."""
    from agents.sb3_saccader import MaskableSaccaderPolicy

    venv = VecMonitor(SB3VecEnv(num_envs=256, bank=args.bank, observation=observation))
    extra = {"bank": {"bank": args.bank} if args.bank else {"bank": None, "split": "train"}} \
        if observation == "index" else {}
    model = MaskablePPO(MaskableSaccaderPolicy, venv, n_steps=12, batch_size=768, n_epochs=1,
                        gamma=1.0, seed=0, device="cpu",
                        policy_kwargs={"num_classes": source.num_classes,
                                       "grid": source.grid, **extra},
                        rollout_buffer_class=buffer_class(True),
                        rollout_buffer_kwargs={"env_minibatches": env_minibatches})
    model.learn(12 * 256)
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
    parser.add_argument("--extractor", default="cell",
                        help="cell or grid for the full and index modes (see train/ppo.py)")
    parser.add_argument("--observations", default="full,index,glimpses",
                        help="observation modes to train in, comma-separated")
    parser.add_argument("--saccader", action="store_true",
                        help="also the Saccader as an SB3 policy (MaskablePPO, 256 envs, "
                             "batch 768) on the full and the index observation, and by "
                             "index with env_minibatches")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.bank and Path(args.bank).name != "train":
        parser.error("--bank must be a train split's bank (BANKS/train): the by-reference "
                     "mode names the banks folder")
    modes = [m for m in args.observations.split(",") if m]
    dummy = VecMonitor(DummyVecEnv([lambda: gym.make("Glimpse-v0", bank=args.bank)
                                    for _ in range(args.num_envs)]))
    source = dummy.envs[0].unwrapped.source
    ref_name = "PPO, DummyVecEnv of single envs, full (reference)"
    models = {}
    buffer_bytes = {}
    for mode in modes:
        native = VecMonitor(SB3VecEnv(num_envs=args.num_envs, bank=args.bank,
                                      observation=mode))
        for algo in (PPO, MaskablePPO):
            model = build(algo, native, source, mode, args)
            models[f"{algo.__name__}, native vector env, {mode}"] = (model, args.steps)
        buffer_bytes[mode] = sum(a.nbytes for a in model.rollout_buffer.observations.values())
    models[ref_name] = (build(PPO, dummy, source, "full", args), args.steps // 4)  # slower
    if args.saccader:  # a much bigger network: two rollouts of 256 envs x 12 steps a round
        saccader_steps = 2 * 12 * 256 * args.rounds
        for mode, grouped in (("full", False), ("index", False), ("index", True)):
            name = f"MaskablePPO + Saccader, 256 envs, {mode}" + (
                ", env minibatches" if grouped else "")
            models[name] = (build_saccader(source, mode, args, grouped), saccader_steps)
    rounds: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.rounds):  # interleaved: a slow spell hits every row of a round
        for name, (model, steps) in models.items():
            rounds[name].append(rate(model, max(steps // args.rounds, 1)))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    per_round = {name: np.array(v) for name, v in rounds.items()}
    rows = {name: float(np.median(v)) for name, v in per_round.items()}
    print(f"bank: {args.bank or 'embedded digits'}; {args.num_envs} envs, n_steps "
          f"{args.n_steps}, batch {args.batch_size}, {args.n_epochs} epochs, "
          f"{args.extractor} extractor (sequence for glimpses); median of {args.rounds} "
          "interleaved rounds")
    print(f"{'measurement':62s} {'env-steps/s':>12s} {'range over rounds':>22s} "
          f"{'x reference':>12s}")
    for name, v in per_round.items():
        ratio = np.median(v / per_round[ref_name])
        print(f"{name:62s} {np.median(v):12,.0f} {v.min():10,.0f} - {v.max():<9,.0f} "
              f"{ratio:12.2f}")
    saccader_full = "MaskablePPO + Saccader, 256 envs, full"
    for name in per_round:
        if name.startswith("MaskablePPO + Saccader") and name != saccader_full:
            ratio = np.median(per_round[name] / per_round[saccader_full])
            print(f"{name} / Saccader on full: {ratio:.2f}x")
    for mode, size in buffer_bytes.items():
        print(f"rollout buffer observations per rollout, {mode}: {size / 2**20:,.1f} MiB")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "rows": rows, "rounds": {k: v.tolist() for k, v in per_round.items()},
            "buffer_observation_bytes": buffer_bytes,
            "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
