"""Step 1b: run a trained BagNet once over dataset splits and write feature banks.

Under ``torchrun --nproc-per-node=N`` the N processes write each bank together, by parts
(:func:`glimpse_gym.bank_parallel.write_bank_distributed`); rank 0 commits it and prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from glimpse_gym.bagnet import load_bagnet
from glimpse_gym.bank import FeatureBank
from glimpse_gym.bank_parallel import write_bank_distributed
from glimpse_gym.bank_write import write_bank
from glimpse_gym.datasets import dataset_options, make_dataset
from glimpse_gym.distributed import Distributed, process_group
from glimpse_gym.errors import UsageError
from glimpse_gym.multiscale import MultiScaleBank, check_scales, write_multiscale_bank
from glimpse_gym.pretrained import resolve_checkpoint
from train.config import parse_options
from train.run import RunOptions, setup
from train.tools import human_bytes


@dataclass
class ExtractConfig(RunOptions):
    """Options of ``glimpse extract-features``."""

    checkpoint: str = "default"
    """BagNet checkpoint (.pt from pretrain-bagnet); 'default' is the embedded digits model, a
    task's name (cluttered-mnist, ...) its shipped BagNet"""
    out: str = "runs/banks/digits"
    """output folder: one bank per split is written to OUT/<split>"""
    split: list[str] = field(default_factory=list)
    """split(s) to extract (default: train, val and test)"""
    dataset: str | None = None
    """dataset registry name (default: the one the checkpoint was trained on)"""
    root: str | None = None
    """folder holding the dataset's files (mnist, cluttered-mnist, cifar10, imagefolder)"""
    data_option: list[str] = field(default_factory=list)
    """dataset option KEY=VALUE (default: the checkpoint's own options)"""
    seed: int | None = None
    """seed of the train/val carve and canvases (default: the checkpoint's)"""
    batch_size: int = 512
    """images per forward pass"""
    store_images: bool = True
    """also store the uint8 images (rendering and the occlusion test need them)"""
    num_workers: int = 0
    """DataLoader workers for datasets read from disk (imagefolder)"""
    feature_dtype: str = "float16"
    """how the features are stored: float16, or int8 with one scale per channel (half the
    bytes; read back as float32)"""
    store_logits: bool = True
    """store the per-cell logits (--no-store-logits: compute them from the features by the
    bank's linear head at each read; for many classes, where they outweigh the features)"""
    channels_last: bool = False
    """store features and logits [N, H', W', C] (a cell's values contiguous: one page per
    glimpse read from a bank on disk); read back as [N, C, H', W'] all the same"""
    autocast: bool = False
    """run the BagNet in float16 on CUDA (bfloat16 on the CPU): faster on hardware made for it;
    the bank keeps its dtypes"""
    shard_images: int | None = None
    """write each bank's arrays in parts of this many images (features-00000.npy, ...),
    read as one; default: one part (under torchrun: one part per process)"""
    scales: str | None = None
    """write multi-scale banks instead (TNet's levels): the BagNet on the images resized by
    each of these comma-separated, rising scales ending with 1, e.g. 0.25,0.5,1"""
    level_checkpoint: list[str] = field(default_factory=list)
    """with --scales: SCALE=CHECKPOINT writes that level with a BagNet of its own (a .pt or a
    task's name), e.g. 1=cluttered-mnist-100 for the full size; the other levels use
    --checkpoint (repeatable)"""


def extract_features(cfg: ExtractConfig) -> dict[str, FeatureBank | MultiScaleBank]:
    """Write one bank (or, with ``--scales``, one multi-scale bank) per split; return them by
    split name (under torchrun: on rank 0; the other ranks return an empty dict)."""
    scales = None
    if cfg.scales is not None:
        try:
            scales = check_scales([float(x) for x in cfg.scales.split(",")])
        except ValueError:
            raise UsageError(f"--scales must be comma-separated numbers, got {cfg.scales!r}") \
                from None
    compact = {"--shard-images": cfg.shard_images is not None,
               "--feature-dtype int8": cfg.feature_dtype != "float16",
               "--no-store-logits": not cfg.store_logits, "--channels-last": cfg.channels_last,
               "--autocast": cfg.autocast}
    if scales is not None and any(compact.values()):
        raise UsageError(f"{', '.join(k for k, v in compact.items() if v)}: for single-scale "
                         "banks; multi-scale banks (--scales) are written in one part, float16, "
                         "channels-first, with their logits")
    if cfg.level_checkpoint and scales is None:
        raise UsageError("--level-checkpoint gives a level of a multi-scale bank its own "
                         "BagNet: it needs --scales")
    device = setup(cfg.device, cfg.threads)
    with process_group(device) as group:  # under torchrun: one group, a device each
        if group is not None:
            if scales is not None:
                raise UsageError("extract-features under torchrun writes single-scale banks; "
                                 "write multi-scale banks (--scales) with one process")
            device = group.device
        return _extract(cfg, scales, device, group)


def _extract(cfg: ExtractConfig, scales: list[float] | None, device: torch.device,
             group: Distributed | None) -> dict[str, FeatureBank | MultiScaleBank]:
    model, ckpt = load_bagnet(resolve_checkpoint(cfg.checkpoint), device)
    level_bagnets = {}
    for item in cfg.level_checkpoint:
        scale, _, path = item.partition("=")
        try:
            value = float(scale) if path else None
        except ValueError:
            value = None
        if value is None:
            raise UsageError(f"--level-checkpoint takes SCALE=CHECKPOINT (e.g. "
                             f"1=cluttered-mnist-100), got {item!r}")
        if value in level_bagnets:
            raise UsageError(f"--level-checkpoint gives scale {value:g} twice")
        level_bagnets[value] = load_bagnet(resolve_checkpoint(path), device)
    trained_on = ckpt.get("dataset", {})
    name = cfg.dataset or trained_on.get("name")
    if not name:
        raise UsageError("the checkpoint does not record its dataset; pass --dataset")
    opts: dict[str, Any] = {}
    if name == trained_on.get("name"):
        opts.update(trained_on.get("options", {}))
        opts.setdefault("seed", trained_on.get("seed", 0))
    opts.update(parse_options(cfg.data_option))
    accepted = dataset_options(name)
    if cfg.seed is not None:
        opts["seed"] = cfg.seed
    if cfg.root is not None and "root" in accepted:
        opts["root"] = cfg.root
    banks = {}
    for split in cfg.split or ["train", "val", "test"]:
        ds = make_dataset(name, split, **opts)
        target = Path(cfg.out) / split
        if scales is not None:
            banks[split] = write_multiscale_bank(
                model, ds, target, scales, checkpoint=ckpt, batch_size=cfg.batch_size,
                device=device, store_images=cfg.store_images, overwrite=cfg.overwrite,
                dataset_options=opts, progress=cfg.progress, level_bagnets=level_bagnets)
            for i, level in enumerate(banks[split].levels):
                _summary(f"{target} level {i} (x{level.scale:g})", level.bank)
            continue
        kw = dict(checkpoint=ckpt, batch_size=cfg.batch_size, store_images=cfg.store_images,
                  overwrite=cfg.overwrite, dataset_options=opts, num_workers=cfg.num_workers,
                  progress=cfg.progress, shard_images=cfg.shard_images,
                  feature_dtype=cfg.feature_dtype, store_logits=cfg.store_logits,
                  channels_last=cfg.channels_last, autocast=cfg.autocast)
        if group is None:
            bank = write_bank(model, ds, target, device=device, **kw)
        else:
            bank = write_bank_distributed(model, ds, target, group=group, **kw)
        if bank is not None:  # rank 0 of a process group prints and returns the banks
            _summary(str(target), bank)
            banks[split] = bank
    if banks:
        print(f"wrote: {', '.join(str(b.path) for b in banks.values())}"
              + (f" ({group.world} processes)" if group is not None else ""))
    return banks


def _summary(what: str, bank: FeatureBank) -> None:
    s, st = bank.meta["stats"], bank.storage()
    print(f"{what}: {bank.num_images} images, grid {bank.grid}, features "
          f"{tuple(bank.features.shape)} {bank.meta['arrays']['features']['dtype']} | image acc "
          f"{s['image_acc']:.4f} cell acc {s['cell_acc']:.4f} | {s['images_per_s']:.0f} img/s "
          f"| {human_bytes(st['total'])} in {st['parts']} part(s), "
          f"{human_bytes(st['per_image'])} per image")
