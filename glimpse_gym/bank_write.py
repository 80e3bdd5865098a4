"""Writing a feature bank: one pass of a BagNet over a dataset split, by parts.

:func:`write_bank` runs the model over the split and writes the bank directory described in
:mod:`glimpse_gym.bank` under a temporary name beside the target, then renames it into place.
With ``shard_images`` the arrays are written as parts of that many consecutive images
(``features-00000.npy``, ...; format ``glimpse-gym-bank/2``), each part by itself, so
that parts can be written by several processes and a bank never has to be in memory whole;
the loaded bank reads them as one (:class:`glimpse_gym.shards.ShardedArray`). The steps are
public for the distributed writer (:mod:`glimpse_gym.bank_parallel`): :class:`BankPlan`
(what will be written), :func:`write_part` (one part's files and figures) and
:func:`commit` (``meta.json`` from every part's figures, then the rename).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from tqdm import tqdm

from glimpse_gym.bagnet.common import BagNetBase, image_logits
from glimpse_gym.bagnet.inference import iterate_batches, preprocess
from glimpse_gym.bank import FeatureBank
from glimpse_gym.bank_arrays import INT8_MAX, quantize
from glimpse_gym.bank_checks import FORMAT, FORMAT_SHARDED, HEAD, META, META_CHECKSUM, meta_checksum
from glimpse_gym.datasets import ImageDataset
from glimpse_gym.errors import BankError, UsageError
from glimpse_gym.fileio import (
    exchange_or_replace,
    file_sha256,
    ordinary_mode,
    remove_stale,
    temporary_name,
)

TIMING_FIELDS = ("created", "extract_seconds", "images_per_s")
"""the fields of ``meta.json`` that differ between two writes of the same bank"""
FEATURE_DTYPES = ("float16", "int8")
GRIDS = ("features", "logits")  # the arrays of one value per (channel, cell)
CALIBRATION_IMAGES = 1024
"""int8 banks: the per-channel scales are the largest |feature| over this many images drawn
at random (seed 0) from the split, divided by 127 (larger values elsewhere are clipped, and
counted); a random draw, since a split may be sorted by class"""


@dataclass
class BankPlan:
    """What a bank of ``dataset`` through ``model`` will hold: its arrays, parts and files."""

    out: Path
    n: int
    specs: dict[str, tuple[str, tuple[int, ...]]]  # name -> (dtype, shape of one image)
    shards: list[int]  # images per part
    meta: dict[str, Any] = field(default_factory=dict)  # meta.json without files and figures
    scale: np.ndarray | None = None  # int8 features: [D] float32 per-channel scales
    channels_last: bool = False  # features and logits stored [N, H', W', C]
    autocast: bool = False  # forward passes in float16 on CUDA, bfloat16 on the CPU

    def stored_shape(self, name: str) -> tuple[int, ...]:
        """One image's shape in the file (``[C, H', W']`` moved to ``[H', W', C]`` when
        stored channels-last)."""
        shape = self.specs[name][1]
        return (*shape[1:], shape[0]) if self.channels_last and name in GRIDS else shape

    @classmethod
    def make(cls, model: BagNetBase, dataset: ImageDataset, out: str | Path, *,
             checkpoint: dict[str, Any], store_images: bool = True, overwrite: bool = False,
             dataset_options: dict[str, Any] | None = None,
             shard_images: int | None = None, feature_dtype: str = "float16",
             store_logits: bool = True, channels_last: bool = False, batch_size: int = 512,
             device: torch.device | str = "cpu", calibrate_scales: bool = True,
             autocast: bool = False) -> BankPlan:
        """Check the arguments (nothing is written) and lay out the bank; for int8 features
        (unless ``calibrate_scales`` is False: the caller sets ``scale``), run the model over
        :data:`CALIBRATION_IMAGES` images for the scales."""
        out = Path(out).expanduser()
        if out.exists() and not overwrite:
            raise BankError(f"{out} already exists; pass overwrite=True (--overwrite) to "
                            "replace it, or write elsewhere")
        if out.exists() and not (out / META).is_file() and (
                not out.is_dir() or any(out.iterdir())):
            raise BankError(f"{out} is not a feature bank (no {META}); refusing to replace "
                            "it: write the bank elsewhere")
        if feature_dtype not in FEATURE_DTYPES:
            raise UsageError(f"feature_dtype (--feature-dtype) must be one of "
                             f"{FEATURE_DTYPES}, got {feature_dtype!r}")
        if shard_images is not None and shard_images < 1:
            raise UsageError(f"shard_images (--shard-images) must be at least 1, got "
                             f"{shard_images}")
        c, hgt, wid = dataset.image_shape
        if c != model.in_channels:
            raise UsageError(f"the model takes {model.in_channels}-channel images, the "
                             f"dataset {dataset.name!r} has {c}")
        gh, gw = model.grid_size(hgt, wid)
        if gh < 1 or gw < 1:
            raise UsageError(f"images of {hgt}x{wid} are smaller than the receptive field "
                             f"{model.rf}")
        n, d, k = len(dataset), model.feature_dim, model.num_classes
        specs = {"features": (feature_dtype, (d, gh, gw))}
        if store_logits:
            specs["logits"] = ("float32", (k, gh, gw))
        specs["labels"] = ("int64", ())
        if store_images:
            specs["images"] = ("uint8", (c, hgt, wid))
        size = n if shard_images is None or shard_images >= n else shard_images
        shards = [size] * (n // size) + ([n % size] if n % size else []) if n else [0]
        norm = checkpoint["normalization"]
        meta = {
            "format": FORMAT if len(shards) == 1 else FORMAT_SHARDED,
            "dataset": {"name": dataset.name, "split": dataset.split, "num_images": n,
                        "options": dataset_options or {}, "class_names": dataset.class_names},
            "model": {"arch": checkpoint["arch"], "arch_kwargs": checkpoint["arch_kwargs"],
                      "hash": checkpoint["model_hash"], "rf": model.rf,
                      "stride": model.stride, "feature_dim": d, "num_classes": k},
            "grid": [gh, gw],
            "image_shape": [c, hgt, wid],
            "normalization": {"mean": list(norm["mean"]), "std": list(norm["std"])},
        }
        plan = cls(out, n, specs, shards, meta, channels_last=channels_last, autocast=autocast)
        if feature_dtype == "int8" and calibrate_scales:
            plan.scale = calibrate(model, dataset, meta["normalization"], batch_size, device,
                                   autocast)
        return plan

    @property
    def sharded(self) -> bool:
        return len(self.shards) > 1

    def files(self, part: int) -> dict[str, str]:
        """Array name -> file name of ``part``."""
        suffix = f"-{part:05d}" if self.sharded else ""
        return {name: f"{name}{suffix}.npy" for name in self.specs}

    def part_range(self, part: int) -> tuple[int, int]:
        start = sum(self.shards[:part])
        return start, start + self.shards[part]

    def open(self) -> Path:
        """Make the temporary folder beside ``out`` (removing what killed writers left)."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(self.out)
        tmp = Path(tempfile.mkdtemp(prefix=temporary_name(self.out), dir=self.out.parent))
        ordinary_mode(tmp, directory=True)
        return tmp


def forward(model: BagNetBase, images: torch.Tensor, norm: dict[str, Any],
            device: torch.device | str, autocast: bool = False) -> Any:
    """The model on uint8 ``images`` as extraction runs it: normalised, and with
    ``autocast`` in float16 on CUDA (bfloat16 on the CPU); features and logits float32."""
    device = torch.device(device)
    half = torch.float16 if device.type == "cuda" else torch.bfloat16
    with torch.autocast(device.type, dtype=half, enabled=autocast):
        out = model(preprocess(images, norm["mean"], norm["std"], device))
    return type(out)(out.features.float(), out.logits.float())


@torch.no_grad()
def calibrate(model: BagNetBase, dataset: ImageDataset, norm: dict[str, Any], batch_size: int,
              device: torch.device | str, autocast: bool = False) -> np.ndarray:
    """``[D]`` float32 int8 scales: the largest |feature| of each channel over
    :data:`CALIBRATION_IMAGES` images drawn at random (seed 0), divided by 127 (1 for a
    channel that is always 0)."""
    model = model.eval().to(device)
    top = torch.zeros(model.feature_dim, device=device)
    count = min(len(dataset), CALIBRATION_IMAGES)
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:count]
    for images, _ in iterate_batches(dataset, batch_size, indices=pick.sort().values):
        f = forward(model, images, norm, device, autocast).features
        top = torch.maximum(top, f.abs().amax(dim=(0, 2, 3)))
    top = torch.where(top > 0, top, torch.full_like(top, INT8_MAX))
    return (top / INT8_MAX).float().cpu().numpy()


@torch.no_grad()
def write_part(plan: BankPlan, part: int, model: BagNetBase, dataset: ImageDataset,
               tmp: Path, *, batch_size: int = 512, device: torch.device | str = "cpu",
               num_workers: int = 0, bar: Any = None) -> dict[str, Any]:
    """Write part ``part``'s files into ``tmp``; return its figures (counts, feature range,
    and each file's size and sha256) for :func:`commit`."""
    start, stop = plan.part_range(part)
    files = plan.files(part)
    arrays = {name: open_memmap(tmp / files[name], mode="w+", dtype=dt,
                                shape=(stop - start, *plan.stored_shape(name)))
              for name, (dt, _) in plan.specs.items()}
    if plan.channels_last:  # write through [n, C, H', W'] views of the files
        for name in GRIDS:
            if name in arrays:
                arrays[name] = np.moveaxis(arrays[name], -1, 1)
    norm = plan.meta["normalization"]
    correct = cells_correct = clipped = 0
    pos, lo, hi = 0, float("inf"), float("-inf")
    scale = None if plan.scale is None else torch.from_numpy(plan.scale).to(device)
    batches = iterate_batches(dataset, batch_size, num_workers=num_workers,
                              indices=torch.arange(start, stop))
    for images, labels in batches:
        out = forward(model, images, norm, device, plan.autocast)
        b = len(labels)
        if scale is None:
            features = out.features.to(torch.float16)
            stored = features
        else:
            stored = quantize(out.features, scale)
            clipped += (out.features.abs() > (INT8_MAX + 0.5) * scale.view(1, -1, 1, 1)
                        ).sum().item()
            features = stored.float() * scale.view(1, -1, 1, 1)
        arrays["features"][pos:pos + b] = stored.cpu().numpy()
        lo, hi = min(lo, features.min().item()), max(hi, features.max().item())
        logits = out.logits.float().cpu()
        if "logits" in arrays:
            arrays["logits"][pos:pos + b] = logits.numpy()
        arrays["labels"][pos:pos + b] = labels.numpy()
        if "images" in arrays:
            arrays["images"][pos:pos + b] = images.numpy()
        correct += (image_logits(logits).argmax(1) == labels).sum().item()
        cells_correct += (logits.argmax(1) == labels[:, None, None]).sum().item()
        pos += b
        if bar is not None:
            bar.update(b)
    for arr in arrays.values():
        arr.flush()
    del arrays
    names = list(files.values())
    return {"part": part, "images": stop - start, "correct": correct,
            "cells_correct": cells_correct, "feature_min": lo, "feature_max": hi,
            "clipped": clipped,
            "checksums": {f: file_sha256(tmp / f) for f in names},
            "sizes": {f: (tmp / f).stat().st_size for f in names}}


def commit(plan: BankPlan, model: BagNetBase, tmp: Path, parts: list[dict[str, Any]],
           seconds: float) -> None:
    """Write the head and ``meta.json`` (from every part's figures) into ``tmp``, then put
    ``tmp`` at ``plan.out`` in one step (readers see the old bank or the new one)."""
    parts = sorted(parts, key=lambda p: p["part"])
    if [p["part"] for p in parts] != list(range(len(plan.shards))):
        raise BankError(f"cannot commit {plan.out}: parts {[p['part'] for p in parts]} of "
                        f"{len(plan.shards)} were written")
    weight, bias = model.head_parameters()
    head = {"weight": weight.detach().float().cpu().numpy(),
            "bias": bias.detach().float().cpu().numpy()}
    if plan.scale is not None:
        head["feature_scale"] = plan.scale
    np.savez(tmp / HEAD, **head)
    n, (gh, gw) = plan.n, plan.meta["grid"]
    checksums = {k: v for p in parts for k, v in p["checksums"].items()}
    sizes = {k: v for p in parts for k, v in p["sizes"].items()}
    checksums[HEAD], sizes[HEAD] = file_sha256(tmp / HEAD), (tmp / HEAD).stat().st_size
    arrays = {}
    for name, (dt, shape) in plan.specs.items():
        where = ({"files": [plan.files(i)[name] for i in range(len(plan.shards))]}
                 if plan.sharded else {"file": plan.files(0)[name]})
        arrays[name] = {**where, "dtype": dt, "shape": [n, *shape]}
        if plan.channels_last and name in GRIDS:
            arrays[name]["layout"] = "channels-last"
    meta = {**plan.meta, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "arrays": arrays}
    if plan.sharded:
        meta["shards"] = list(plan.shards)
    meta.update({
        "checksums": checksums, "sizes": sizes,
        "stats": {"image_acc": sum(p["correct"] for p in parts) / max(n, 1),
                  "feature_min": min(p["feature_min"] for p in parts),
                  "feature_max": max(p["feature_max"] for p in parts),
                  "cell_acc": sum(p["cells_correct"] for p in parts) / max(n * gh * gw, 1),
                  "extract_seconds": seconds, "images_per_s": n / max(seconds, 1e-9)}})
    if plan.scale is not None:
        d = plan.meta["model"]["feature_dim"]
        meta["stats"]["int8_clipped"] = sum(p["clipped"] for p in parts) / max(n * d * gh * gw, 1)
    meta[META_CHECKSUM] = meta_checksum(meta)
    (tmp / META).write_text(json.dumps(meta, indent=1))
    exchange_or_replace(tmp, plan.out)


def write_bank(model: BagNetBase, dataset: ImageDataset, out: str | Path, *,
               checkpoint: dict[str, Any], batch_size: int = 512,
               device: torch.device | str = "cpu", store_images: bool = True,
               overwrite: bool = False, dataset_options: dict[str, Any] | None = None,
               num_workers: int = 0, progress: bool = True,
               shard_images: int | None = None, feature_dtype: str = "float16",
               store_logits: bool = True, channels_last: bool = False,
               autocast: bool = False) -> FeatureBank:
    """Run ``model`` over ``dataset`` and write a bank directory at ``out`` atomically.

    Args:
        model: the BagNet (eval mode is set here).
        dataset: the split to extract.
        out: the bank directory to create.
        checkpoint: the model's checkpoint dict (normalisation, hash, arch are recorded).
        batch_size: images per forward pass.
        device: where the model runs.
        store_images: also store the uint8 images (for rendering and occlusion).
        overwrite: replace an existing bank at ``out``; otherwise that is an error.
        dataset_options: the options the dataset was made with, for ``meta.json``.
        num_workers: DataLoader workers for datasets read from disk.
        progress: show a progress bar.
        shard_images: write the arrays as parts of this many images (default: one part).
        feature_dtype: ``"float16"``, or ``"int8"`` with per-channel scales
            (:func:`calibrate`; read back as float32 by
            :class:`~glimpse_gym.bank_arrays.Dequantized`).
        store_logits: store the per-cell logits; without them a reader computes them from the
            features by the head (:class:`~glimpse_gym.bank_arrays.HeadLogits`).
        channels_last: store features and logits ``[N, H', W', C]`` (``layout`` in
            ``meta.json``; read back as ``[N, C, H', W']`` views): a cell's values are
            contiguous, so a glimpse read from a memory-mapped bank touches one page.
        autocast: run the model in float16 on CUDA (bfloat16 on the CPU); the stored
            features and logits are those values, in the bank's dtypes.

    Returns:
        The written bank, loaded.
    """
    model = model.eval().to(device)
    plan = BankPlan.make(model, dataset, out, checkpoint=checkpoint, store_images=store_images,
                         overwrite=overwrite, dataset_options=dataset_options,
                         shard_images=shard_images, feature_dtype=feature_dtype,
                         store_logits=store_logits, channels_last=channels_last,
                         batch_size=batch_size, device=device, autocast=autocast)
    tmp = plan.open()
    try:
        t0 = time.perf_counter()
        with tqdm(total=plan.n, desc=f"extract {dataset.split}", unit="img",
                  disable=not progress, leave=False) as bar:
            parts = [write_part(plan, i, model, dataset, tmp, batch_size=batch_size,
                                device=device, num_workers=num_workers, bar=bar)
                     for i in range(len(plan.shards))]
        commit(plan, model, tmp, parts, time.perf_counter() - t0)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FeatureBank.load(plan.out)  # hashes the files once more, as read back


__all__ = ["CALIBRATION_IMAGES", "FEATURE_DTYPES", "TIMING_FIELDS", "BankPlan", "calibrate",
           "commit", "forward", "write_bank", "write_part"]
