"""``glimpse train multiscale-saccader``: the Saccader on multi-scale banks.

Reads ``--banks`` (``train/``, ``val/``, ``test/`` multi-scale banks: ``glimpse
extract-features --scales``) and trains :class:`agents.multiscale_saccader.MultiScaleSaccader`
with the Saccader's steps 2 and 3 on the fixed banks: ``--location-epochs`` of the greedy
across-scales teacher (``--location-glimpses`` glimpses), then ``--policy-epochs`` of
REINFORCE on the env's readout after T = ``--glimpses`` sampled glimpses (Adam from
``--policy-lr``, cosine decay).
Each epoch: TensorBoard scalars (``OUT/tb``), the val error of the argmax cells read by the
env's readout, ``OUT/last.pt`` (and ``OUT/best.pt`` at the best val error, of either step), so
``--resume`` continues after the last whole epoch. At the end ``OUT/results.json``:
``best.pt`` played through ``MultiScale-v0`` on the test split, its error and each episode's
mean cost (pixels, full-resolution pixels, BagNet FLOPs) at every T up to ``--glimpses``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.multiscale_eval import run_multiscale, summarise_multiscale
from agents.multiscale_saccader import (
    FORMAT,
    MultiScaleSaccader,
    MultiScaleSaccaderPolicy,
    location_loss,
    policy_loss,
    readout_correct,
)
from agents.tnet import Geometry, level_features
from glimpse_gym.errors import CheckpointError, UsageError
from glimpse_gym.fileio import load_payload, save_payload
from glimpse_gym.multiscale import MultiScaleBank
from train.run import SaccaderOptions, TrainOptions, prepare_out, setup, write_results
from train.tnet import multiscale_splits


@dataclass
class MultiScaleSaccaderConfig(TrainOptions, SaccaderOptions):
    """Options of ``glimpse train multiscale-saccader``."""

    banks: str = "runs/banks/cluttered-mnist-100-ms"
    """folder with train/, val/ and test/ multi-scale banks (extract-features --scales)"""
    glimpses: int = 8
    """T of step 3 (the policy stage) and of the test"""
    location_epochs: int = 3
    """epochs of step 2"""
    policy_epochs: int = 3
    """epochs of step 3"""
    policy_lr: float = 1e-4
    """Adam learning rate of step 3, decayed to 0 on a cosine (--lr is step 2's)"""
    eval_images: int = 5000
    """val images per evaluation (all of them when the split is smaller)"""
    out: str = "runs/multiscale-saccader"
    """output folder: last.pt, best.pt, results.json, tb/"""


def level_logits(bank: MultiScaleBank, index: np.ndarray,
                 device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Every level's BagNet logits of images ``index`` as ``[B, cells, K]`` float32."""
    return [torch.from_numpy(np.asarray(level.bank.logits[index], dtype=np.float32))
            .flatten(2).transpose(1, 2).contiguous().to(device) for level in bank.levels]


def batch(bank: MultiScaleBank, index: np.ndarray, device: torch.device
          ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``index``: features per level, the prior (level 0's mean logits), every action
    cell's logits ``[B, A, K]``, the finest level's logits and the labels."""
    logits = level_logits(bank, index, device)
    labels = torch.from_numpy(np.asarray(bank.labels[index], dtype=np.int64)).to(device)
    return (level_features(bank, index, device), logits[0].mean(1), torch.cat(logits[1:], 1),
            logits[-1], labels)


@torch.no_grad()
def val_error(net: MultiScaleSaccader, bank: MultiScaleBank, glimpses: int, limit: int,
              device: torch.device, batch_size: int = 1024) -> float:
    """Error of the env's readout of the argmax cells on the first ``limit`` images."""
    net.eval()
    n, right = min(limit, bank.num_images), 0
    for start in range(0, n, batch_size):
        levels, prior, actions, _, labels = batch(bank, np.arange(start, min(n, start +
                                                                            batch_size)), device)
        cells = net.rollout(levels, glimpses, sample=False).cells
        right += int(readout_correct(prior, actions, cells, labels).sum())
    net.train()
    return 1 - right / n


def _optimizer(net: MultiScaleSaccader, cfg: MultiScaleSaccaderConfig, stage: str,
               steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Any]:
    lr = cfg.policy_lr if stage == "policy" else cfg.lr
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.policy_epochs * steps_per_epoch)
             if stage == "policy" else None)
    return opt, sched


def train_multiscale_saccader(cfg: MultiScaleSaccaderConfig) -> dict[str, Any]:
    """Train the Saccader across scales on ``--banks``; return ``OUT/results.json``'s dict."""
    start = time.perf_counter()
    device = setup(cfg.device, cfg.threads)
    torch.manual_seed(cfg.seed)
    banks = multiscale_splits(cfg.banks)
    train = banks["train"]
    if len(train.levels) < 2:
        raise UsageError(f"--banks {cfg.banks}: a multi-scale bank needs at least two levels")
    geometry = Geometry.of(train)
    net = MultiScaleSaccader(geometry, cfg.where_channels, cfg.mixed_channels).to(device)
    if not 1 <= cfg.glimpses <= net.num_actions:
        raise UsageError(f"--glimpses must be in [1, {net.num_actions}], got {cfg.glimpses}")
    out = prepare_out(cfg.out, checkpoints=("last.pt",), resume=cfg.resume,
                      overwrite=cfg.overwrite)
    model = train.model_hash
    n = train.num_images
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    plan = ([("locations", e) for e in range(cfg.location_epochs)]
            + [("policy", e) for e in range(cfg.policy_epochs)])
    done, history, best = 0, [], float("inf")
    opt, sched = _optimizer(net, cfg, plan[0][0] if plan else "policy", steps_per_epoch)
    if cfg.resume:
        ckpt = load_payload(out / "last.pt", FORMAT, "multi-scale Saccader", device)
        if ckpt["geometry"] != geometry.describe() or ckpt["bank"] != model \
                or ckpt["net"] != net.describe() or ckpt["plan"] != [list(p) for p in plan]:
            raise CheckpointError(
                f"--resume: {out / 'last.pt'} was trained with {ckpt['geometry']}, "
                f"{ckpt['net']}, epochs {ckpt['plan']} on banks of BagNet {ckpt['bank']}; "
                f"this run has {geometry.describe()}, {net.describe()}, epochs "
                f"{[list(p) for p in plan]}, BagNet {model}")
        net.load_state_dict(ckpt["state_dict"])
        done, history, best = ckpt["done"], ckpt["history"], ckpt["best_val_error"]
        if done < len(plan):
            opt, sched = _optimizer(net, cfg, plan[done][0], steps_per_epoch)
            if plan[done][1] > 0:  # the middle of a stage: its optimizer goes on
                opt.load_state_dict(ckpt["optimizer"])
                if sched is not None:
                    sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        print(f"resuming after epoch {done} of {len(plan)}")
    writer = SummaryWriter(str(out / "tb"))
    for i in range(done, len(plan)):
        stage, epoch = plan[i]
        if i > done and plan[i - 1][0] != stage:  # a new stage: a new optimizer
            opt, sched = _optimizer(net, cfg, stage, steps_per_epoch)
        order = np.random.default_rng([cfg.seed, i]).permutation(n)
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        epochs = cfg.location_epochs if stage == "locations" else cfg.policy_epochs
        bar = tqdm(range(0, n, cfg.batch_size), desc=f"{stage} epoch {epoch + 1}/{epochs}",
                   disable=not cfg.progress, leave=False)
        for s in bar:
            index = np.sort(order[s:s + cfg.batch_size])
            levels, prior, actions, finest, labels = batch(train, index, device)
            if stage == "locations":
                loss = location_loss(net, levels, actions, finest, cfg.location_glimpses)
                stats = {"loss": loss.item()}
            else:
                loss, stats = policy_loss(net, levels, prior, actions, labels, cfg.glimpses,
                                          cfg.l2)
                stats["loss"] = loss.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step = i * steps_per_epoch + s // cfg.batch_size + 1
            for key, value in stats.items():
                writer.add_scalar(f"{stage}/{key}", value, step)
                sums[key] = sums.get(key, 0.0) + value * len(index)
            bar.set_postfix(loss=f"{stats['loss']:.3f}")
        val = val_error(net, banks["val"], cfg.glimpses, cfg.eval_images, device)
        row = {"stage": stage, "epoch": epoch + 1, **{k: v / n for k, v in sums.items()},
               "val_error": val, "images_per_s": n / (time.perf_counter() - t0)}
        history.append(row)
        writer.add_scalar(f"{stage}/val_error", val, (i + 1) * steps_per_epoch)
        print(f"{stage} epoch {epoch + 1}/{epochs}: val error at T={cfg.glimpses} {val:.2%} | "
              f"{row['images_per_s']:.0f} images/s")
        payload = {"format": FORMAT, "state_dict": net.state_dict(), "net": net.describe(),
                   "optimizer": opt.state_dict(),
                   "scheduler": None if sched is None else sched.state_dict(),
                   "done": i + 1, "plan": [list(p) for p in plan], "history": history,
                   "geometry": geometry.describe(), "bank": model, "config": asdict(cfg),
                   "rng": torch.get_rng_state(), "best_val_error": best}
        if val < best:
            best = payload["best_val_error"] = val
            save_payload(payload, out / "best.pt")
        save_payload(payload, out / "last.pt")
    writer.close()
    if (out / "best.pt").is_file():  # the test figures are best.pt's (best val error)
        net.load_state_dict(load_payload(out / "best.pt", FORMAT, "multi-scale Saccader",
                                         device)["state_dict"])
    test = summarise_multiscale(run_multiscale(MultiScaleSaccaderPolicy(net), banks["test"],
                                               cfg.glimpses, device=str(device)))
    t = cfg.glimpses
    results = {"config": asdict(cfg), "glimpses": t, "test_error": test["error"][t],
               "test": test, "test_images": banks["test"].num_images, "history": history,
               "seconds": time.perf_counter() - start}
    print(f"test error {test['error'][t]:.2%} at T = {t} through MultiScale-v0; mean "
          f"full-resolution pixels per episode {test['full_resolution_pixels'][t]:.0f}")
    write_results(out, results, ["last.pt", "best.pt", "tb"])
    return results


__all__ = ["MultiScaleSaccaderConfig", "level_logits", "train_multiscale_saccader"]
