"""Glimpse-v0 stepping speed: single env, native vector env, SyncVectorEnv, memory bandwidth.

Measures, in one run (so a noisy machine shows in every figure alike):
- the single env through ``gym.make`` (all of Gymnasium's wrappers) and unwrapped;
- the native vector env at ``--num-envs`` (default 4096) in each observation mode, with
  ``copy=False`` (views, as ``SyncVectorEnv(copy=False)``) and with the default copies;
- ``SyncVectorEnv`` of the single env (``--sync-envs`` of them; its cost per env-step does
  not depend on N) and the native env's ratio to it;
- for the ``full`` mode, the bytes a step must move (each episode reads its image's feature
  grid from the in-memory bank and writes it into the observation: ``H*W*D`` values read
  and written once per episode of ``T + 1`` steps, as an episode takes T glimpse steps plus
  the autoreset step) against this machine's memory bandwidth measured by a large tensor
  copy, i.e. that mode's physical limit.

    python benchmarks/env_throughput.py [--bank runs/banks/cluttered-mnist/train] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import SyncVectorEnv

import glimpse_gym  # noqa: F401  (registers Glimpse-v0)
from glimpse_gym.envs import GlimpseVectorEnv


def single_env_rate(seconds: float, make_kwargs: dict, unwrapped: bool) -> float:
    env = gym.make("Glimpse-v0", **make_kwargs)
    if unwrapped:
        env = env.unwrapped
    n_cells = env.action_space.n
    actions = np.random.default_rng(0).integers(0, n_cells, 100_000).tolist()
    env.reset(seed=0)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for a in actions[:10_000]:
            _, _, terminated, _, _ = env.step(a)
            if terminated:
                env.reset()
        steps += 10_000
    return steps / (time.perf_counter() - t0)


def vector_rate(envs, seconds: float, as_tensor: bool = False) -> float:
    n = envs.num_envs
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, envs.single_action_space.n, (n,), generator=g) for _ in range(64)]
    if not as_tensor:
        batches = [b.numpy() for b in batches]
    envs.reset(seed=0)
    for b in batches[:3]:
        envs.step(b)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < 3:
        envs.step(batches[steps % len(batches)])
        steps += 1
    return steps * n / (time.perf_counter() - t0)


def memory_bandwidth(seconds: float) -> float:
    """Bytes per second of a large fp32 tensor copy (each byte read once and written once)."""
    src = torch.rand(64 * 2**20)  # 256 MiB
    dst = torch.empty_like(src)
    dst.copy_(src)
    copies, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or copies < 3:
        dst.copy_(src)
        copies += 1
    return copies * 2 * src.numel() * 4 / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", default=None, help="feature bank (default: embedded digits)")
    parser.add_argument("--num-envs", type=int, default=4096, help="native vector env size")
    parser.add_argument("--sync-envs", type=int, default=64, help="SyncVectorEnv size")
    parser.add_argument("--glimpses", type=int, default=6, help="T")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--device", default="cpu", help="device of the native vector env")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    kw = {"bank": args.bank, "glimpses": args.glimpses}
    s = args.seconds
    rows: dict[str, float] = {}
    for mode in ("partial", "full"):
        rows[f"single env, gym.make, {mode}"] = single_env_rate(s, {**kw, "observation": mode},
                                                                unwrapped=False)
        rows[f"single env, unwrapped, {mode}"] = single_env_rate(s, {**kw, "observation": mode},
                                                                 unwrapped=True)
        sync = SyncVectorEnv([lambda mode=mode: gym.make("Glimpse-v0", observation=mode, **kw)
                              for _ in range(args.sync_envs)], copy=False)
        rows[f"SyncVectorEnv x{args.sync_envs}, {mode}"] = vector_rate(sync, s)
        for copy in (False, True):
            envs = GlimpseVectorEnv(args.num_envs, observation=mode, copy=copy,
                                    device=args.device, **kw)
            label = f"native vector x{args.num_envs}, {mode}, copy={copy}"
            rows[label] = vector_rate(envs, s)
            envs.close()
            del envs  # free its in-memory bank before the next one is built
        sync.close()
        del sync
    bandwidth = memory_bandwidth(s)
    envs = GlimpseVectorEnv(1, **kw)
    h, w, d = envs.feature_shape
    # full mode, per env-step: an episode is T + 1 steps (NextStep autoreset); it reads its
    # D*H*W features from the in-memory bank and writes them as fp32 into the observation
    bank_bytes = envs._bank.element_size()
    bytes_per_step = d * h * w * (bank_bytes + 4) / (args.glimpses + 1)
    limit = bandwidth / bytes_per_step
    print(f"bank: {args.bank or 'embedded digits'}; grid {h}x{w}, D={d}, T={args.glimpses}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'measurement':44s} {'env-steps/s':>14s}")
    for name, rate in rows.items():
        print(f"{name:44s} {rate:14,.0f}")
    n, m = args.num_envs, args.sync_envs
    ratios = {mode: rows[f"native vector x{n}, {mode}, copy=False"]
              / rows[f"SyncVectorEnv x{m}, {mode}"] for mode in ("partial", "full")}
    print(f"native / SyncVectorEnv: partial {ratios['partial']:.0f}x, full {ratios['full']:.0f}x")
    full = rows[f"native vector x{n}, full, copy=False"]
    print(f"memory bandwidth (copy): {bandwidth / 1e9:.1f} GB/s; full mode moves "
          f"{bytes_per_step:.0f} B per env-step -> limit {limit:,.0f} env-steps/s; "
          f"measured {full:,.0f} = {limit / full:.2f}x below the limit")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "rows": rows, "ratio_native_to_sync": ratios, "bandwidth_bytes_per_s": bandwidth,
            "full_bytes_per_env_step": bytes_per_step, "full_limit_env_steps_per_s": limit,
            "bank": args.bank, "num_envs": n, "sync_envs": m}, indent=1))


if __name__ == "__main__":
    main()
