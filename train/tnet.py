"""``glimpse train tnet``: TNet (Papadopoulos et al. 2021) on multi-scale banks.

Reads ``--banks`` (``train/``, ``val/``, ``test/`` multi-scale banks: ``glimpse
extract-features --scales``) and trains :class:`agents.tnet.TNet` on batches of images: top-k
cells per level (``--locations``, e.g. ``3,2``: 3 cells of level 1, then 2 of level 2 among
their children; T is the sum), TNet's loss (cross-entropy 0.7 / 0.3, REINFORCE 0.1 with a
moving-average baseline, per-feature REINFORCE). Each epoch: TensorBoard scalars (``OUT/tb``),
the val error of TNet's classifier and of the env's readout of the same cells,
``OUT/last.pt`` (and ``OUT/best.pt`` at the best val error), so ``--resume`` continues after
the last whole epoch. At the end ``OUT/results.json``: ``best.pt``'s test errors and each
episode's cost (pixels, full-resolution pixels, BagNet FLOPs).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.tnet import (
    BASELINE_START,
    FORMAT,
    Geometry,
    TNet,
    evaluate_tnet,
    level_features,
    tnet_loss,
    update_baseline,
)
from glimpse_gym.envs import MultiScaleEnv
from glimpse_gym.errors import CheckpointError, UsageError
from glimpse_gym.fileio import load_payload, save_payload
from glimpse_gym.multiscale import MultiScaleBank
from train.run import TrainOptions, prepare_out, setup, write_results


@dataclass
class TNetConfig(TrainOptions):
    """Options of ``glimpse train tnet``."""

    banks: str = "runs/banks/cluttered-mnist-100-ms"
    """folder with train/, val/ and test/ multi-scale banks (extract-features --scales)"""
    locations: str = "3,2"
    """cells opened per level below the first, comma-separated (T is their sum)"""
    epochs: int = 10
    """passes over the training split"""
    batch_size: int = 256
    """images per step"""
    lr: float = 1e-3
    """Adam learning rate"""
    hidden: int = 64
    """width of each level's location module"""
    eval_images: int = 5000
    """val images per evaluation (all of them when the split is smaller)"""
    out: str = "runs/tnet"
    """output folder: last.pt, best.pt, results.json, tb/"""


def multiscale_splits(banks: str | Path) -> dict[str, MultiScaleBank]:
    """The ``train``, ``val`` and ``test`` multi-scale banks in folder ``banks``."""
    return {split: MultiScaleBank.load(Path(banks).expanduser() / split)
            for split in ("train", "val", "test")}


def _locations(cfg: TNetConfig, bank: MultiScaleBank) -> tuple[int, ...]:
    try:
        locations = tuple(int(x) for x in cfg.locations.split(","))
    except ValueError:
        raise UsageError(f"--locations must be comma-separated integers, got "
                         f"{cfg.locations!r}") from None
    levels = len(bank.levels)
    if len(locations) != levels - 1 or min(locations) < 1:
        raise UsageError(f"--locations needs one count >= 1 for each of the bank's "
                         f"{levels - 1} levels below the first, got {cfg.locations!r}")
    if locations[0] > bank.levels[1].num_cells:
        raise UsageError(f"--locations: level 1 has {bank.levels[1].num_cells} cells, fewer "
                         f"than {locations[0]}")
    for level in range(2, levels):  # the fewest children k parents can have
        counts = np.sort(np.bincount(bank.levels[level].parent,
                                     minlength=bank.levels[level - 1].num_cells))
        fewest = int(counts[:locations[level - 2]].sum())
        if locations[level - 1] > fewest:
            raise UsageError(f"--locations: {locations[level - 2]} cells of level "
                             f"{level - 1} may have only {fewest} children at level {level}, "
                             f"fewer than {locations[level - 1]}")
    return locations


def episode_cost(bank: MultiScaleBank, locations: tuple[int, ...]) -> dict[str, int]:
    """Pixels, full-resolution pixels and FLOPs of one TNet episode (every chosen cell is
    new and may be opened, so the cost does not depend on the image)."""
    env = MultiScaleEnv(bank, glimpses=sum(locations))
    cost = {"pixels": env._reset_pixels, "full_resolution_pixels": 0,
            "flops": env._reset_flops}
    for level, k in enumerate(locations, 1):
        a = int(env.offsets[level - 1])  # any cell of the level: they cost the same
        cost["pixels"] += k * int(env._pixels[a])
        cost["full_resolution_pixels"] += k * int(env._full_pixels[a])
        cost["flops"] += k * int(env._flops[a])
    return cost


def train_tnet(cfg: TNetConfig) -> dict[str, Any]:
    """Train TNet on ``--banks``; return the results written to ``OUT/results.json``."""
    start = time.perf_counter()
    device = setup(cfg.device, cfg.threads)
    torch.manual_seed(cfg.seed)
    banks = multiscale_splits(cfg.banks)
    locations = _locations(cfg, banks["train"])
    out = prepare_out(cfg.out, checkpoints=("last.pt",), resume=cfg.resume,
                      overwrite=cfg.overwrite)
    geometry = Geometry.of(banks["train"])
    net = TNet(geometry, locations, hidden=cfg.hidden).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    baseline, first_epoch, history, best = BASELINE_START, 0, [], float("inf")
    if cfg.resume:
        ckpt = load_payload(out / "last.pt", FORMAT, "TNet", device)
        model = banks["train"].model_hash
        if (ckpt["geometry"] != geometry.describe() or tuple(ckpt["locations"]) != locations
                or ckpt["hidden"] != cfg.hidden or ckpt["bank"] != model):
            raise CheckpointError(
                f"--resume: {out / 'last.pt'} was trained with {ckpt['geometry']}, locations "
                f"{ckpt['locations']}, --hidden {ckpt['hidden']} on banks of BagNet "
                f"{ckpt['bank']}; this run has {geometry.describe()}, locations "
                f"{list(locations)}, --hidden {cfg.hidden}, BagNet {model}")
        net.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        baseline, first_epoch = ckpt["baseline"], ckpt["epoch"]
        history, best = ckpt["history"], ckpt["best_val_error"]
    writer = SummaryWriter(str(out / "tb"))
    train = banks["train"]
    n = train.num_images
    labels = torch.from_numpy(np.array(train.labels))
    step = first_epoch * -(-n // cfg.batch_size)
    for epoch in range(first_epoch, cfg.epochs):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        bar = tqdm(range(0, n, cfg.batch_size), desc=f"tnet epoch {epoch + 1}/{cfg.epochs}",
                   disable=not cfg.progress, leave=False)
        for s in bar:
            index = order[s:s + cfg.batch_size]
            result = net(level_features(train, index, device))
            loss, stats = tnet_loss(result, labels[index].to(device), baseline)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            baseline = update_baseline(baseline, stats["reward"])
            step += 1
            for key, value in stats.items():
                writer.add_scalar(f"train/{key}", value, step)
                sums[key] = sums.get(key, 0.0) + value * len(index)
            bar.set_postfix(reward=f"{stats['reward']:.3f}")
        val = evaluate_tnet(net, banks["val"], max_images=cfg.eval_images, device=device)
        row = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()},
               "val_error": val["error"], "val_readout_error": val["readout_error"],
               "images_per_s": n / (time.perf_counter() - t0)}
        history.append(row)
        writer.add_scalar("val/error", val["error"], step)
        writer.add_scalar("val/readout_error", val["readout_error"], step)
        print(f"epoch {epoch + 1}/{cfg.epochs}: train reward {row['reward']:.4f} | val error "
              f"{val['error']:.2%} (readout {val['readout_error']:.2%}) | "
              f"{row['images_per_s']:.0f} images/s")
        payload = {"format": FORMAT, "state_dict": net.state_dict(),
                   "optimizer": opt.state_dict(), "baseline": baseline, "epoch": epoch + 1,
                   "history": history, "locations": list(locations),
                   "geometry": geometry.describe(), "hidden": cfg.hidden,
                   "bank": train.model_hash, "config": asdict(cfg),
                   "best_val_error": min(best, val["error"])}
        if val["error"] < best:
            best = val["error"]
            save_payload(payload, out / "best.pt")
        save_payload(payload, out / "last.pt")
    writer.close()
    if (out / "best.pt").is_file():  # the test figures are best.pt's (best val error)
        net.load_state_dict(load_payload(out / "best.pt", FORMAT, "TNet", device)["state_dict"])
    test = evaluate_tnet(net, banks["test"], device=device)
    results = {"config": asdict(cfg), "locations": list(locations), "glimpses": sum(locations),
               "test_error": test["error"], "test_readout_error": test["readout_error"],
               "test_images": test["num_images"],
               "cost_per_episode": episode_cost(banks["test"], locations), "history": history,
               "seconds": time.perf_counter() - start}
    print(f"test error {test['error']:.2%} (the env's readout of the same cells "
          f"{test['readout_error']:.2%}) with T = {sum(locations)} (--locations "
          f"{cfg.locations}); cost per episode {results['cost_per_episode']}")
    write_results(out, results, ["last.pt", "best.pt", "tb"])
    return results


__all__ = ["TNetConfig", "episode_cost", "multiscale_splits", "train_tnet"]
