"""The paper's step 3: the Saccader and its BagNet trained together on images.

Elsayed et al. (2019) train the whole model in step 3, BagNet included. ``glimpse train
saccader`` trains the policy and its classifier on a fixed bank (``--stage policy``), which is
cheap; ``--stage finetune`` then continues from ``OUT/policy.pt`` with the same loss
(REINFORCE + per-glimpse cross-entropy + L2), now with the gradient flowing into the BagNet
that computes the what-features from the images stored in the banks. BatchNorm keeps its
statistics. Afterwards the fine-tuned BagNet writes new banks, so every evaluation runs on
them as usual. Everything goes to ``OUT/finetuned/``: ``bagnet.pt``, ``banks/``,
``policy.pt`` and, last, ``results.json`` (the test errors, also in ``OUT/results.json``
under ``"finetuned"``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from glimpse_gym.bagnet import load_bagnet, preprocess
from glimpse_gym.bagnet.checkpoint import save_checkpoint
from glimpse_gym.bank_write import write_bank
from glimpse_gym.datasets import TensorImageDataset
from glimpse_gym.envs.source import GlimpseSource, load_source
from glimpse_gym.errors import CheckpointError, UsageError
from glimpse_gym.fileio import write_json
from glimpse_gym.pretrained import resolve_checkpoint

if TYPE_CHECKING:
    from agents.saccader import Saccader
    from train.saccader import SaccaderConfig


def _images(source: GlimpseSource, what: str) -> np.ndarray:
    if source.images is None:
        raise UsageError(f"--stage finetune trains on the images the banks hold; the {what} "
                         "bank has none (write the banks without --no-store-images)")
    return source.images


def _what(model: Any, images: np.ndarray, idx: np.ndarray, norm: dict[str, Any],
          device: torch.device) -> torch.Tensor:
    x = preprocess(torch.from_numpy(np.ascontiguousarray(images[np.sort(idx)])),
                   norm["mean"], norm["std"], device)
    return model(x).features


def _freeze_batchnorm(model: torch.nn.Module) -> None:
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def finetune(cfg: SaccaderConfig, net: Saccader, sources: dict[str, GlimpseSource],
             out: Path, device: torch.device, writer: SummaryWriter) -> dict[str, Any]:
    """Train ``net`` and the banks' BagNet together; write ``OUT/finetuned/``; return the
    history, the new banks' path and the test errors."""
    from train.saccader import _checkpoint, final_errors, policy_loss

    if not cfg.bagnet_checkpoint:
        raise UsageError("--stage finetune needs --bagnet-checkpoint, the BagNet the banks "
                         "were written with")
    model, ckpt = load_bagnet(resolve_checkpoint(cfg.bagnet_checkpoint), device)
    train = sources["train"]
    if ckpt["model_hash"] != train.description.get("model_hash"):
        raise CheckpointError(f"--bagnet-checkpoint {cfg.bagnet_checkpoint} (BagNet "
                              f"{ckpt['model_hash']}) is not the BagNet of the banks (BagNet "
                              f"{train.description.get('model_hash')})")
    images, labels = _images(train, "train"), torch.from_numpy(np.array(train.labels))
    norm = ckpt["normalization"]
    params = [{"params": model.parameters()}, {"params": net.parameters()}]
    opt = torch.optim.Adam(params, lr=cfg.finetune_lr)
    steps_per_epoch = math.ceil(len(labels) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.finetune_epochs * steps_per_epoch)
    rng = np.random.default_rng(cfg.seed + 2)
    history, step = [], 0
    for epoch in range(cfg.finetune_epochs):
        _freeze_batchnorm(model)
        t0, seen, sums = time.perf_counter(), 0, {}
        order = rng.permutation(len(labels))
        bar = tqdm(range(0, len(order), cfg.batch_size), total=steps_per_epoch,
                   desc=f"finetune epoch {epoch + 1}/{cfg.finetune_epochs}",
                   disable=not cfg.progress, dynamic_ncols=True)
        for start in bar:
            idx = np.sort(order[start:start + cfg.batch_size])
            what = _what(model, images, idx, norm, device)
            loss, stats = policy_loss(net, what, labels[idx].to(device), cfg.glimpses, cfg.l2,
                                      cfg.classification_weight, detach=False)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            seen += len(idx)
            for k, v in {**stats, "loss": loss.item()}.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx)
                writer.add_scalar(f"finetune/{k}", v, step)
            bar.set_postfix(reward=f"{stats['reward']:.3f}")
        row = {"epoch": epoch + 1, **{k: v / seen for k, v in sums.items()},
               "images_per_s": seen / (time.perf_counter() - t0)}
        history.append(row)
        print(f"finetune epoch {epoch + 1}: train reward {row['reward']:.4f}, "
              f"{row['images_per_s']:.0f} images/s")
    model.eval()
    folder = out / "finetuned"
    folder.mkdir(parents=True, exist_ok=True)
    new_ckpt = save_checkpoint(
        folder / "bagnet.pt", model, arch=ckpt["arch"], arch_kwargs=ckpt["arch_kwargs"],
        class_names=ckpt["class_names"], mean=norm["mean"], std=norm["std"],
        image_shape=ckpt["image_shape"], dataset=ckpt.get("dataset"),
        metrics={"finetuned_from": ckpt["model_hash"]}, config={"finetune": history})
    banks = folder / "banks"
    new_sources = {}
    for split, src in sources.items():
        data = TensorImageDataset(src.description["dataset"], split, np.array(_images(src, split)),
                                  np.array(src.labels), src.class_names, norm["mean"],
                                  norm["std"])
        write_bank(model, data, banks / split, checkpoint=new_ckpt, device=device,
                   overwrite=True, progress=cfg.progress,
                   dataset_options=ckpt.get("dataset", {}).get("options"))
        new_sources[split] = load_source(banks / split)
    _checkpoint(folder / "policy.pt", net, opt, "finetune", cfg.finetune_epochs, cfg,
                new_sources["train"], history, sched)
    glimpses = sorted({int(t) for t in cfg.eval_glimpses.split(",")})
    test = final_errors(net, new_sources["test"], glimpses, cfg.seed, device)
    print(f"after fine-tuning the BagNet (banks {banks}): test error at T = {glimpses}:")
    for name, errors in test.items():
        print(f"  {name:21s} " + "  ".join(f"{errors[t]:7.2%}" for t in glimpses))
    result = {"history": history, "banks": str(banks), "test_error": test}
    write_json(folder / "results.json", result)  # last: the fine-tuning is complete
    return result
