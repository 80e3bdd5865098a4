"""The vector env on a bank larger than memory: steps from disk against steps from memory.

Writes a synthetic bank with ImageNet's geometry (224 px images, BagNet-33's 24x24 grid,
64-d int8 what-features channels-last, 1,000 classes through the head, no stored logits or
images) in parts of 10,000 images, by default with more bytes than this machine has memory,
through the package's own writer (:class:`glimpse_gym.bank_write.BankPlan` and
:func:`~glimpse_gym.bank_write.commit`). Then, in the same run, ``GlimpseVectorEnv`` in the
partial mode with 4096 envs:

- the reference: a 1,000-image bank of the same geometry held in memory (``in_memory=True``;
  its tables hold every cell's 64 features and 1,000 logits as float32, 2.5 GB);
- the big bank read from its files (``in_memory=False``), cold (its pages dropped from the
  page cache first, ``posix_fadvise(DONTNEED)``) and warm (the same episodes again at once);
- the small bank read from its files, cold and warm (the cost of the reading path itself).

Env-steps per second (N envs x steps / seconds, after a first untimed step), and each as a
ratio of the reference. The big bank is kept for later runs unless ``--remove``.

    python benchmarks/bank_scale.py --out runs/bench/bank_scale.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from glimpse_gym.bank import FeatureBank  # noqa: E402
from glimpse_gym.bank_write import BankPlan, commit  # noqa: E402
from glimpse_gym.envs import GlimpseVectorEnv  # noqa: E402
from glimpse_gym.envs.tables import available_memory  # noqa: E402
from glimpse_gym.fileio import file_sha256  # noqa: E402

GRID, D, K, PART = 24, 64, 1000, 10_000
PER_IMAGE = GRID * GRID * D + 8  # int8 features and an int64 label


class _Head:
    """What :func:`commit` asks of a model: its head."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.weight = torch.randn(K, D, generator=g) / math.sqrt(D)
        self.bias = torch.zeros(K)

    def head_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight, self.bias


def write_synthetic(out: Path, n: int) -> float:
    """Write the bank; return the seconds it took (hashes and meta.json included)."""
    t0 = time.perf_counter()
    shards = [PART] * (n // PART) + ([n % PART] if n % PART else [])
    meta = {"format": "glimpse-gym-bank/2" if len(shards) > 1 else "glimpse-gym-bank/1",
            "dataset": {"name": "synthetic-imagenet", "split": "train", "num_images": n,
                        "options": {}, "class_names": [str(c) for c in range(K)]},
            "model": {"arch": "synthetic", "arch_kwargs": {}, "hash": "0" * 16, "rf": 33,
                      "stride": 8, "feature_dim": D, "num_classes": K},
            "grid": [GRID, GRID], "image_shape": [3, 224, 224],
            "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3}}
    plan = BankPlan(out, n, {"features": ("int8", (D, GRID, GRID)), "labels": ("int64", ())},
                    shards, meta, scale=np.full(D, 0.05, np.float32), channels_last=True)
    if out.exists():
        shutil.rmtree(out)
    tmp = plan.open()
    rng = np.random.default_rng(0)
    parts = []
    for i, count in enumerate(shards):
        files = plan.files(i)
        feats = open_memmap(tmp / files["features"], mode="w+", dtype=np.int8,
                            shape=(count, *plan.stored_shape("features")))
        for s in range(0, count, 1000):
            block = feats[s:s + 1000]
            block[:] = rng.integers(-127, 128, block.shape, dtype=np.int8)
        feats.flush()
        del feats
        np.save(tmp / files["labels"], rng.integers(0, K, count))
        names = list(files.values())
        parts.append({"part": i, "images": count, "correct": 0, "cells_correct": 0,
                      "feature_min": -127 * 0.05, "feature_max": 127 * 0.05, "clipped": 0,
                      "checksums": {f: file_sha256(tmp / f) for f in names},
                      "sizes": {f: (tmp / f).stat().st_size for f in names}})
        print(f"\rwrote part {i + 1}/{len(shards)}", end="", flush=True)
    print()
    commit(plan, _Head(), tmp, parts, time.perf_counter() - t0)
    return time.perf_counter() - t0


def drop_cache(bank: Path) -> None:
    """Ask the kernel to drop the bank's pages from the page cache (clean pages go)."""
    for f in bank.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def steps_per_s(bank: Path, in_memory: bool, envs: int, steps: int, seed: int) -> float:
    env = GlimpseVectorEnv(num_envs=envs, bank=str(bank), observation="partial", glimpses=8,
                           in_memory=in_memory, copy=False)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, GRID * GRID, (steps + 1, envs))
    env.step(actions[0])
    t0 = time.perf_counter()
    for a in actions[1:]:
        env.step(a)
    return envs * steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="runs/bench/imagenet-bank", help="where the banks go")
    p.add_argument("--images", type=int, default=None,
                   help="images of the big bank (default: 1.1x this machine's memory)")
    p.add_argument("--envs", type=int, default=4096)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3, help="repeats of each measure (medians)")
    p.add_argument("--remove", action="store_true", help="remove the big bank at the end")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    args = p.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    n = args.images or math.ceil(1.1 * total / PER_IMAGE)
    root = Path(args.dir)
    big, small = root / "big", root / "small"
    results = {"memory_bytes": total, "free_bytes": available_memory(), "images": n}
    if not (big / "meta.json").exists() or FeatureBank.load(big).num_images != n:
        print(f"writing {n:,} images, {n * PER_IMAGE / 1e9:.1f} GB, to {big}")
        results["write_big_s"] = write_synthetic(big, n)
    if not (small / "meta.json").exists():
        write_synthetic(small, 1_000)
    opened = time.perf_counter()
    bank = FeatureBank.load(big)  # the first open hashes every file
    results["open_big_s"] = time.perf_counter() - opened
    results["bank_bytes"] = bank.storage()["total"]
    rows: dict[str, list[float]] = {}
    for r in range(args.rounds):
        rows.setdefault("memory (reference)", []).append(
            steps_per_s(small, True, args.envs, args.steps, seed=r))
        for name, path in (("disk, small bank", small), ("disk, big bank", big)):
            drop_cache(path)  # cold, then the same episodes again: warm
            for state in ("cold", "warm"):
                rows.setdefault(f"{name}, {state}", []).append(
                    steps_per_s(path, False, args.envs, args.steps, seed=r))
    rows = {k: float(np.median(v)) for k, v in rows.items()}
    ref = rows["memory (reference)"]
    results["steps_per_s"] = rows
    results["ratio_to_memory"] = {k: v / ref for k, v in rows.items()}
    print(f"bank of {n:,} images, {results['bank_bytes'] / 1e9:.1f} GB on disk; machine memory "
          f"{total / 1e9:.1f} GB; {args.envs} envs, partial mode, medians of {args.rounds}")
    for k, v in rows.items():
        print(f"  {k:28s} {v / 1e6:8.3f}M env-steps/s  {v / ref:6.3f}x the reference")
    if args.remove:
        shutil.rmtree(big)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
