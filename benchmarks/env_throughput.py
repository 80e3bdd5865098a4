"""Glimpse-v0 stepping speed: single env, native vector env, SyncVectorEnv, memory bandwidth.

Measures, in one run (so a noisy machine shows in every figure alike):
- the single env through ``gym.make`` (all of Gymnasium's wrappers) and unwrapped;
- the native vector env at ``--num-envs`` (default 4096) in each observation mode (``full``,
  ``partial`` and the compact ``glimpses``), with ``copy=False`` (views, as
  ``SyncVectorEnv(copy=False)``) and with Gymnasium's default copies (``copy=True``), and
  each mode's observation size in bytes per env;
- ``SyncVectorEnv`` of the single env (``--sync-envs`` of them; its cost per env-step does
  not depend on N) and the native env's ratio to it;
- for ``copy=True``, the bytes each env-step hands back as copies (observation and infos
  arrays of a mid-episode step) and the rate at which this machine's memory bandwidth
  alone would copy them (each byte read once and written once): that mode's ceiling with
  copies, whatever the step itself costs;
- for the ``full`` mode, the bytes a step must move (each episode reads its image's feature
  grid from the in-memory bank and writes it into the observation: ``H*W*D`` values read
  and written once per episode of ``T + 1`` steps, as an episode takes T glimpse steps plus
  the autoreset step) against this machine's memory bandwidth measured by a large tensor
  copy, i.e. that mode's physical limit.

Every env is built once; then ``--rounds`` rounds each measure every row for ``--seconds``
(and the bandwidth), interleaved, so that a slow spell of the machine hits all rows of a
round alike. A figure is the median over the rounds (with the range); a ratio is computed
within each round (e.g. native / SyncVectorEnv, or the full mode against the bandwidth read
seconds before it) and then its median taken.

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


def single_env_rate(env: gym.Env, seconds: float) -> float:
    n_cells = env.action_space.n
    actions = np.random.default_rng(0).integers(0, n_cells, 10_000).tolist()
    env.reset(seed=0)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for a in actions:
            _, _, terminated, _, _ = env.step(a)
            if terminated:
                env.reset()
        steps += len(actions)
    return steps / (time.perf_counter() - t0)


def vector_rate(envs, seconds: float, as_tensor: bool = False, copy: bool | None = None) -> float:
    n = envs.num_envs
    if copy is not None:  # the native env's copy flag, switched between measurements
        envs.copy = copy
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


def copied_bytes_per_env(envs: GlimpseVectorEnv) -> int:
    """Bytes of the arrays a mid-episode ``copy=True`` step hands back, per env."""
    envs.copy = True
    envs.reset(seed=0)
    obs, _, _, _, info = envs.step(np.zeros(envs.num_envs, dtype=np.int64))
    arrays = [*obs.values(), *(v for k, v in info.items() if not k.startswith("_"))]
    return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray) and a.dtype != object) \
        // envs.num_envs


def memory_bandwidth(seconds: float, src: torch.Tensor, dst: torch.Tensor) -> float:
    """Bytes per second of a large fp32 tensor copy (each byte read once and written once)."""
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
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds; each figure is the median over them")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="time per measurement per round")
    parser.add_argument("--device", default="cpu", help="device of the native vector env")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    kw = {"bank": args.bank, "glimpses": args.glimpses}
    s, n, m = args.seconds, args.num_envs, args.sync_envs
    measures = {}
    modes = ("glimpses", "partial", "full")
    obs_bytes, copy_bytes = {}, {}
    for mode in modes:
        wrapped = gym.make("Glimpse-v0", observation=mode, **kw)
        measures[f"single env, gym.make, {mode}"] = lambda e=wrapped: single_env_rate(e, s)
        measures[f"single env, unwrapped, {mode}"] = \
            lambda e=wrapped.unwrapped: single_env_rate(e, s)
        sync = SyncVectorEnv([lambda mode=mode: gym.make("Glimpse-v0", observation=mode, **kw)
                              for _ in range(m)], copy=False)
        measures[f"SyncVectorEnv x{m}, {mode}"] = lambda e=sync: vector_rate(e, s)
        native = GlimpseVectorEnv(n, observation=mode, device=args.device, **kw)
        obs_bytes[mode] = sum(int(np.prod(space.shape)) * np.dtype(space.dtype).itemsize
                              for space in native.single_observation_space.values())
        copy_bytes[mode] = copied_bytes_per_env(native)
        for copy in (False, True):
            measures[f"native vector x{n}, {mode}, copy={copy}"] = \
                lambda e=native, c=copy: vector_rate(e, s, copy=c)
    src = torch.rand(64 * 2**20)  # 256 MiB, well past the caches
    dst = torch.empty_like(src)
    measures["memory bandwidth"] = lambda: memory_bandwidth(s, src, dst)
    rounds: dict[str, list[float]] = {name: [] for name in measures}
    for r in range(args.rounds):
        for name, measure in measures.items():
            rounds[name].append(measure())
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    envs = GlimpseVectorEnv(1, **kw)
    h, w, d = envs.feature_shape
    # full mode, per env-step: an episode is T + 1 steps (NextStep autoreset); it reads its
    # D*H*W features from the in-memory bank and writes them as fp32 into the observation
    bank_bytes = envs._bank.element_size()
    bytes_per_step = d * h * w * (bank_bytes + 4) / (args.glimpses + 1)
    per_round = {name: np.array(values) for name, values in rounds.items()}
    ratios = {f"{mode}, copy={copy}": per_round[f"native vector x{n}, {mode}, copy={copy}"]
              / per_round[f"SyncVectorEnv x{m}, {mode}"] for mode in modes
              for copy in (False, True)}
    bandwidth = per_round.pop("memory bandwidth")
    limit = bandwidth / bytes_per_step
    below = limit / per_round[f"native vector x{n}, full, copy=False"]
    print(f"bank: {args.bank or 'embedded digits'}; grid {h}x{w}, D={d}, T={args.glimpses}; "
          f"torch threads {torch.get_num_threads()}; {args.rounds} interleaved rounds of "
          f"{s:g} s per measurement")
    print(f"{'measurement':44s} {'median env-steps/s':>19s} {'range over rounds':>24s}")
    for name, values in per_round.items():
        print(f"{name:44s} {np.median(values):19,.0f} {values.min():11,.0f} - {values.max():,.0f}")
    for key, v in ratios.items():
        print(f"native / SyncVectorEnv, {key}: {np.median(v):.0f}x "
              f"(rounds {v.min():.0f}x - {v.max():.0f}x)")
    print("observation bytes per env: " + ", ".join(f"{k} {v:,}" for k, v in obs_bytes.items()))
    copy_limits = {mode: bandwidth / (2 * b) for mode, b in copy_bytes.items()}
    for mode, b in copy_bytes.items():
        lim = copy_limits[mode]
        print(f"copy=True, {mode}: {b:,} B copied per env-step (observation and infos); "
              f"the bandwidth alone copies {np.median(lim):,.0f} env-steps/s (rounds "
              f"{lim.min():,.0f} - {lim.max():,.0f})")
    print(f"memory bandwidth (copy): {np.median(bandwidth) / 1e9:.1f} GB/s (rounds "
          f"{bandwidth.min() / 1e9:.1f} - {bandwidth.max() / 1e9:.1f}); full mode moves "
          f"{bytes_per_step:.0f} B per env-step -> limit {np.median(limit):,.0f} env-steps/s")
    print(f"full mode, measured vs its limit in the same round: {np.median(below):.2f}x below "
          f"(rounds {below.min():.2f}x - {below.max():.2f}x)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "median": {name: float(np.median(v)) for name, v in per_round.items()},
            "rounds": {name: v.tolist() for name, v in per_round.items()},
            "ratio_native_to_sync": {k: float(np.median(v)) for k, v in ratios.items()},
            "ratio_native_to_sync_rounds": {k: v.tolist() for k, v in ratios.items()},
            "bandwidth_bytes_per_s_rounds": bandwidth.tolist(),
            "full_bytes_per_env_step": bytes_per_step,
            "observation_bytes_per_env": obs_bytes,
            "copied_bytes_per_env_step": copy_bytes,
            "copy_limit_env_steps_per_s": {m: float(np.median(v)) for m, v in
                                           copy_limits.items()},
            "full_below_limit": float(np.median(below)),
            "full_below_limit_rounds": below.tolist(),
            "bank": args.bank, "num_envs": n, "sync_envs": m, "num_rounds": args.rounds,
            "seconds": s}, indent=1))


if __name__ == "__main__":
    main()
