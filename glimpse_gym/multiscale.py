"""Multi-scale feature banks: BagNet grids of every image at several scales (TNet's levels).

A multi-scale bank is a directory::

    multiscale.json   format, the levels (scale, image size, grid, receptive field and stride
                      in the level's pixels and in full-resolution pixels, BagNet FLOPs), the
                      parent of every cell of every level below the first, its own checksum
    level0/           an ordinary feature bank of the images resized to the coarsest scale
    level1/ ...       up to the last level, the images at their full size (with images.npy)

Level ``l`` is the split resized (antialiased bilinear) by ``scales[l]``; the scales rise, so
level 0 is the coarsest and the last level is the finest. A BagNet trained across scales
(``pretrain-bagnet --scales``) carries its BatchNorm statistics at each scale
(:func:`batchnorm_statistics`), and each level is written with its scale's
(:func:`at_scale`). Each level is a complete :class:`~glimpse_gym.bank.FeatureBank` with the
usual guarantees.

**Parents and children.** Every cell of level ``l > 0`` has one parent at level ``l - 1``:
the coarse cell whose receptive-field centre is nearest to the cell's own centre, both in
full-resolution pixels (ties go to the lower cell index). On a regular grid a coarse cell's
*tile* is the stride-wide square around its centre, stretched to the image's edge at the
border; the children of a coarse cell are the finer cells whose receptive-field centres fall
inside its tile, so the tiles of a level partition the image and every finer cell has
exactly one parent.

The whole directory is written under a temporary name and renamed into place, as a single
bank is; :meth:`MultiScaleBank.load` checks ``multiscale.json`` (checksum, fields, the
parent map recomputed from the geometry) and every level against it and against the others
(same images, labels, classes and BagNet).
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from glimpse_gym.bagnet.common import BagNetBase, cell_boxes
from glimpse_gym.bagnet.inference import preprocess
from glimpse_gym.bank import FeatureBank, write_bank
from glimpse_gym.datasets import ImageDataset, TensorImageDataset
from glimpse_gym.errors import BankError, UsageError
from glimpse_gym.fileio import (
    exchange_or_replace,
    json_checksum,
    ordinary_mode,
    remove_stale,
    temporary_name,
)

FORMAT = "glimpse-gym-multiscale/1"
META = "multiscale.json"
CHECKSUM = "meta_sha256"


def level_size(image_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``(height, width)`` of an image of ``image_size`` resized by ``scale``."""
    return max(1, round(image_size[0] * scale)), max(1, round(image_size[1] * scale))


def resize_images(images: torch.Tensor, size: tuple[int, int], chunk: int = 2048,
                  progress: bool = False, desc: str = "resize") -> torch.Tensor:
    """``[N, C, H, W] uint8`` resized to ``size`` (antialiased bilinear, rounded)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], *size), dtype=torch.uint8)
    for start in tqdm(range(0, len(images), chunk), desc=desc, disable=not progress,
                      leave=False):
        x = images[start:start + chunk].float()
        y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


@torch.no_grad()
def batchnorm_statistics(model: BagNetBase, images: torch.Tensor, scales: Sequence[float],
                         mean: Sequence[float], std: Sequence[float],
                         device: torch.device | str = "cpu", batch_size: int = 256
                         ) -> dict[str, dict[str, torch.Tensor]]:
    """The BatchNorm statistics of ``model`` at each scale, ``{"0.5": {name: tensor}, ...}``:
    re-estimated on ``images [N, C, H, W] uint8`` resized by that scale (the average over all
    its batches). A BagNet trained across scales normalises every batch at its own scale, but
    its running statistics mix the scales; each scale's own statistics serve it far better.
    ``model`` is left as it was."""
    net = copy.deepcopy(model).to(device).train()
    norms = {name for name, m in net.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    out = {}
    for s in scales:
        for name, m in net.named_modules():
            if name in norms:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            net(preprocess(resize_images(x, level_size(x.shape[-2:], s)), mean, std, device))
        out[f"{s:g}"] = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()
                         if k.rpartition(".")[0] in norms}
    return out


@contextlib.contextmanager
def at_scale(model: BagNetBase, bn_by_scale: dict[str, dict[str, torch.Tensor]] | None,
             scale: float) -> Iterator[BagNetBase]:
    """``model`` with the BatchNorm statistics of ``scale`` (a checkpoint's ``bn_by_scale``)
    inside the block, its own again after it; unchanged where none are stored for ``scale``."""
    stats = (bn_by_scale or {}).get(f"{scale:g}")
    if not stats:
        yield model
        return
    own = {k: v.clone() for k, v in model.state_dict().items() if k in stats}
    model.load_state_dict(stats, strict=False)
    try:
        yield model
    finally:
        model.load_state_dict(own, strict=False)


def full_resolution_boxes(grid: tuple[int, int], rf: int, stride: int,
                          level_image: tuple[int, int], full_image: tuple[int, int]
                          ) -> np.ndarray:
    """``[cells, 4]`` float boxes ``(top, left, bottom, right)`` of a level's cells in the
    full-resolution image's pixels."""
    boxes = cell_boxes(grid, rf, stride).astype(np.float64)
    sy, sx = full_image[0] / level_image[0], full_image[1] / level_image[1]
    return boxes * np.array([sy, sx, sy, sx])


def parents(coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """For boxes ``fine`` ``[M, 4]``, the index into ``coarse`` ``[N, 4]`` of the box whose
    centre is nearest to each one's centre (ties: the lower index)."""
    def centres(b: np.ndarray) -> np.ndarray:
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)
    d = ((centres(fine)[:, None, :] - centres(coarse)[None, :, :]) ** 2).sum(-1)
    return d.argmin(1).astype(np.int64)  # argmin takes the first of equal distances


def bagnet_flops(model: BagNetBase, channels: int, size: tuple[int, int]) -> int:
    """Floating-point operations of one forward pass of ``model`` on one image of ``size``
    (torch's FLOP counter: 2 per multiply-add of the convolutions and linear layers)."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters())
    x = torch.zeros((1, channels, *size), device=param.device, dtype=param.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


@dataclass
class Level:
    """One level of a multi-scale bank: its bank and its geometry in full-resolution pixels."""

    bank: FeatureBank
    scale: float
    boxes: np.ndarray
    """``[cells, 4]`` float boxes of the cells in full-resolution pixels"""
    parent: np.ndarray | None
    """``[cells]`` int64 index of each cell's parent in the level above (None at level 0)"""
    flops_image: int
    """BagNet FLOPs of the whole level (the image at this scale)"""
    flops_cell: int
    """BagNet FLOPs of one cell on its own (a receptive-field-sized patch)"""

    @property
    def grid(self) -> tuple[int, int]:
        return self.bank.grid

    @property
    def num_cells(self) -> int:
        return self.grid[0] * self.grid[1]

    def children(self, parent_cell: int) -> np.ndarray:
        """The cells of this level whose parent is ``parent_cell`` of the level above."""
        if self.parent is None:
            raise ValueError("level 0 has no parents")
        return np.flatnonzero(self.parent == parent_cell)


@dataclass
class MultiScaleBank:
    """A loaded multi-scale bank: its levels, coarsest first."""

    path: Path
    meta: dict[str, Any]
    levels: list[Level]

    @property
    def num_images(self) -> int:
        return self.levels[0].bank.num_images

    @property
    def labels(self) -> np.ndarray:
        return self.levels[-1].bank.labels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["image_shape"])  # type: ignore[return-value]

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = False) -> MultiScaleBank:
        """Open and check a multi-scale bank (:class:`~glimpse_gym.errors.BankError` naming
        the file and the problem when it is missing, damaged or inconsistent)."""
        path = Path(path).expanduser()
        meta = _read_meta(path)
        levels = []
        first = None
        for i, spec in enumerate(meta["levels"]):
            bank = FeatureBank.load(path / spec["folder"], verify=verify)
            if list(bank.grid) != spec["grid"] or list(bank.meta["image_shape"][1:]) != \
                    spec["image_size"]:
                raise BankError(f"{path / spec['folder']}: grid {bank.grid} and image size "
                                f"{bank.meta['image_shape'][1:]} are not those {META} gives "
                                f"level {i} ({spec['grid']}, {spec['image_size']})")
            if first is None:
                first = bank
            else:
                _check_same_images(first, bank, path / spec["folder"])
            boxes = full_resolution_boxes(bank.grid, bank.rf, bank.stride,
                                          tuple(spec["image_size"]),
                                          tuple(meta["image_shape"][1:]))
            parent = None
            if i > 0:
                parent = np.asarray(spec["parent"], dtype=np.int64)
                expected = parents(levels[-1].boxes, boxes)
                if parent.shape != expected.shape or not np.array_equal(parent, expected):
                    raise BankError(f"{path / META}: the parent map of level {i} is not the "
                                    "one its geometry gives (nearest coarse centre)")
            levels.append(Level(bank, float(spec["scale"]), boxes, parent,
                                int(spec["flops_image"]), int(spec["flops_cell"])))
        if list(levels[-1].bank.meta["image_shape"]) != list(meta["image_shape"]):
            raise BankError(f"{path / meta['levels'][-1]['folder']}: images of "
                            f"{levels[-1].bank.meta['image_shape']}, but {META} gives the full "
                            f"size {meta['image_shape']}")
        return cls(path, meta, levels)


def _check_same_images(a: FeatureBank, b: FeatureBank, where: Path) -> None:
    """``b`` must be the same images and labels as ``a``, through the same BagNet."""
    wrong = []
    for field in ("name", "split", "num_images"):
        if a.meta["dataset"][field] != b.meta["dataset"][field]:
            wrong.append(f"dataset {field} {b.meta['dataset'][field]!r}, level 0 has "
                         f"{a.meta['dataset'][field]!r}")
    if a.meta["model"]["hash"] != b.meta["model"]["hash"]:
        wrong.append(f"BagNet {b.meta['model']['hash']}, level 0 has {a.meta['model']['hash']}")
    if a.meta["normalization"] != b.meta["normalization"]:
        wrong.append("another normalisation")
    if a.meta["model"]["num_classes"] != b.meta["model"]["num_classes"]:
        wrong.append("a different number of classes")
    if not wrong and not np.array_equal(a.labels, b.labels):
        wrong.append("different labels")
    if wrong:
        raise BankError(f"{where} is not a level of the same images: " + "; ".join(wrong))


def _read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / META
    try:
        meta = json.loads(meta_path.read_bytes())
    except FileNotFoundError:
        raise BankError(f"no multi-scale bank at {path} ({META} is missing); write one with "
                        "'glimpse extract-features --scales ...'") from None
    except OSError as exc:
        raise BankError(f"{meta_path} cannot be read: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise BankError(f"{meta_path} is damaged (not valid JSON: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise BankError(f"{meta_path}: format is {found!r}, expected {FORMAT!r}")
    if meta.get(CHECKSUM) != json_checksum(meta, CHECKSUM):
        raise BankError(f"{meta_path} was changed or damaged after it was written (its "
                        f"{CHECKSUM} does not match); write the bank again")
    levels = meta.get("levels")
    if not isinstance(levels, list) or not levels or not all(
            isinstance(x, dict) and {"folder", "scale", "grid", "image_size", "flops_image",
                                     "flops_cell"} <= set(x) for x in levels):
        raise BankError(f"{meta_path}: 'levels' must be a non-empty list of levels")
    if any(not isinstance(x["folder"], str) or len(Path(x["folder"]).parts) != 1
           or x["folder"] in (".", "..") for x in levels):
        raise BankError(f"{meta_path}: a level's folder must be a plain name")
    return meta


def check_scales(scales: Sequence[float]) -> list[float]:
    """The scales, checked: rising, in (0, 1], the last one 1 (the full image)."""
    s = [float(x) for x in scales]
    if len(s) < 2 or any(not 0 < x <= 1 for x in s) or s != sorted(set(s)) or s[-1] != 1.0:
        raise UsageError(f"--scales needs at least two rising scales in (0, 1] ending with 1 "
                         f"(the full image), e.g. 0.5,1; got {','.join(map(str, s))}")
    return s


def write_multiscale_bank(model: BagNetBase, dataset: ImageDataset, out: str | Path,
                          scales: Sequence[float], *, checkpoint: dict[str, Any],
                          batch_size: int = 512, device: torch.device | str = "cpu",
                          store_images: bool = True, overwrite: bool = False,
                          dataset_options: dict[str, Any] | None = None,
                          progress: bool = True) -> MultiScaleBank:
    """Write a multi-scale bank of ``dataset`` at ``out`` atomically: one level per scale
    (rising, the last 1), the full-size level with the images when ``store_images``."""
    scales = check_scales(scales)
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise BankError(f"{out} already exists; pass overwrite=True (--overwrite) to replace "
                        "it, or write elsewhere")
    if out.exists() and not (out / META).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise BankError(f"{out} is not a multi-scale bank (no {META}); refusing to replace "
                        "it: write the bank elsewhere")
    if not dataset.in_memory:
        raise UsageError(f"multi-scale banks need a dataset held in memory; {dataset.name!r} "
                         "is read from disk image by image")
    c, hgt, wid = dataset.image_shape
    sizes = [level_size((hgt, wid), s) for s in scales]
    for s, size in zip(scales, sizes, strict=True):
        if min(model.grid_size(*size)) < 1:
            raise UsageError(f"at scale {s} the images are {size[0]}x{size[1]}, smaller than "
                             f"the BagNet's receptive field ({model.rf} px): use larger scales")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_name(out), dir=out.parent))
    ordinary_mode(tmp, directory=True)
    try:
        specs, above = [], None
        flops_cell = bagnet_flops(model.eval(), c, (model.rf, model.rf))
        for i, (s, size) in enumerate(zip(scales, sizes, strict=True)):
            last = i == len(scales) - 1
            data = dataset if last else TensorImageDataset(
                dataset.name, dataset.split,
                resize_images(dataset.images, size, progress=progress, desc=f"resize x{s}"),
                dataset.labels, dataset.class_names, dataset.mean, dataset.std)
            with at_scale(model, checkpoint.get("bn_by_scale"), s):
                bank = write_bank(model, data, tmp / f"level{i}", checkpoint=checkpoint,
                                  batch_size=batch_size, device=device,
                                  store_images=store_images and last,
                                  dataset_options=dataset_options, progress=progress)
            boxes = full_resolution_boxes(bank.grid, model.rf, model.stride, size, (hgt, wid))
            spec = {"folder": f"level{i}", "scale": s, "image_size": list(size),
                    "grid": list(bank.grid), "rf": model.rf, "stride": model.stride,
                    "rf_full": [model.rf * hgt / size[0], model.rf * wid / size[1]],
                    "stride_full": [model.stride * hgt / size[0], model.stride * wid / size[1]],
                    "flops_image": bagnet_flops(model, c, size), "flops_cell": flops_cell}
            if above is not None:
                spec["parent"] = parents(above, boxes).tolist()
            specs.append(spec)
            above = boxes
        meta = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "image_shape": [c, hgt, wid], "levels": specs,
                "parents": "nearest receptive-field centre in the level above"}
        meta[CHECKSUM] = json_checksum(meta, CHECKSUM)
        (tmp / META).write_text(json.dumps(meta, indent=1))
        exchange_or_replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MultiScaleBank.load(out)


__all__ = ["FORMAT", "Level", "MultiScaleBank", "at_scale", "bagnet_flops",
           "batchnorm_statistics", "check_scales",
           "full_resolution_boxes", "level_size", "parents", "resize_images",
           "write_multiscale_bank"]
