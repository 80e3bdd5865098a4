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
(:func:`at_scale`). A level may also come from a BagNet of its own (``level_bagnets``,
``extract-features --level-checkpoint``): for example the half-size level from a BagNet
trained at that size and the full-size level from one trained on full-size images, instead of
one network compromising between the scales (TNet shares one backbone). Such levels need the
same classes and feature size; ``multiscale.json`` records each level's BagNet. Each level is
a complete :class:`~glimpse_gym.bank.FeatureBank` with the usual guarantees.

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
(same images, labels and classes; the BagNet ``multiscale.json`` gives the level, else level
0's).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glimpse_gym.bagnet.common import BagNetBase, cell_boxes
from glimpse_gym.bagnet.scales import (
    at_scale,
    bagnet_flops,
    batchnorm_statistics,
    level_size,
    resize_images,
)
from glimpse_gym.bank import FeatureBank
from glimpse_gym.bank_write import write_bank
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

    @property
    def model_hash(self) -> str:
        """The hash of the bank's BagNet, or the levels' hashes joined by ``+`` where levels
        have BagNets of their own (what checkpoints trained on the bank record)."""
        hashes = [lv.bank.meta["model"]["hash"] for lv in self.levels]
        return hashes[0] if len(set(hashes)) == 1 else "+".join(hashes)

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
            wanted = spec.get("model_hash", first.meta["model"]["hash"])
            if bank.meta["model"]["hash"] != wanted:
                raise BankError(f"{path / spec['folder']} was written by BagNet "
                                f"{bank.meta['model']['hash']}, but {META} gives level {i} "
                                f"BagNet {wanted}")
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
    """``b`` must be the same images, labels and classes as ``a`` (its BagNet is checked
    against ``multiscale.json`` by the caller)."""
    wrong = []
    for field in ("name", "split", "num_images"):
        if a.meta["dataset"][field] != b.meta["dataset"][field]:
            wrong.append(f"dataset {field} {b.meta['dataset'][field]!r}, level 0 has "
                         f"{a.meta['dataset'][field]!r}")
    if a.meta["model"]["hash"] == b.meta["model"]["hash"] and \
            a.meta["normalization"] != b.meta["normalization"]:
        wrong.append("another normalisation")
    if a.features.shape[1] != b.features.shape[1]:
        wrong.append(f"features of size {b.features.shape[1]}, level 0 has {a.features.shape[1]}")
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
                          progress: bool = True,
                          level_bagnets: dict[float, tuple[BagNetBase, dict[str, Any]]]
                          | None = None) -> MultiScaleBank:
    """Write a multi-scale bank of ``dataset`` at ``out`` atomically: one level per scale
    (rising, the last 1), the full-size level with the images when ``store_images``.

    ``level_bagnets`` maps some scales to a BagNet of their own, ``(model, checkpoint)``
    (with that checkpoint's BatchNorm statistics at the scale where it has them); the other
    levels use ``model``. Every BagNet must have the same classes and feature size."""
    scales = check_scales(scales)
    own = {float(k): v for k, v in (level_bagnets or {}).items()}
    unknown = sorted(set(own) - set(scales))
    if unknown:
        raise UsageError(f"a BagNet is given for scale(s) {unknown}, which are not among the "
                         f"scales {scales}")
    nets = [own.get(s, (model, checkpoint)) for s in scales]
    classes = {tuple(ck.get("class_names") or ()) for _, ck in nets}
    if len({m.num_classes for m, _ in nets}) > 1 or len(classes) > 1:
        raise UsageError("the levels' BagNets must have the same classes; got "
                         f"{sorted({m.num_classes for m, _ in nets})} classes")
    for what, values in (("feature size", {m.feature_dim for m, _ in nets}),
                         ("image channels", {m.in_channels for m, _ in nets})):
        if len(values) > 1:  # the agents read every level's features
            raise UsageError(f"the levels' BagNets must have the same {what}; got "
                             f"{sorted(values)}")
    trained_on = {(ck.get("dataset") or {}).get("name") for _, ck in nets} - {None}
    if len(trained_on) > 1:
        warnings.warn(f"the levels' BagNets were trained on different datasets "
                      f"({', '.join(sorted(trained_on))})", stacklevel=2)
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
    for s, size, (net, _) in zip(scales, sizes, nets, strict=True):
        if min(net.grid_size(*size)) < 1:
            raise UsageError(f"at scale {s} the images are {size[0]}x{size[1]}, smaller than "
                             f"the BagNet's receptive field ({net.rf} px): use larger scales")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_name(out), dir=out.parent))
    ordinary_mode(tmp, directory=True)
    try:
        specs, above = [], None
        for i, (s, size, (net, ck)) in enumerate(zip(scales, sizes, nets, strict=True)):
            last = i == len(scales) - 1
            data = dataset if last else TensorImageDataset(
                dataset.name, dataset.split,
                resize_images(dataset.images, size, progress=progress, desc=f"resize x{s}"),
                dataset.labels, dataset.class_names, dataset.mean, dataset.std)
            with at_scale(net, ck.get("bn_by_scale"), s):
                bank = write_bank(net, data, tmp / f"level{i}", checkpoint=ck,
                                  batch_size=batch_size, device=device,
                                  store_images=store_images and last,
                                  dataset_options=dataset_options, progress=progress)
            boxes = full_resolution_boxes(bank.grid, net.rf, net.stride, size, (hgt, wid))
            spec = {"folder": f"level{i}", "scale": s, "image_size": list(size),
                    "grid": list(bank.grid), "rf": net.rf, "stride": net.stride,
                    "rf_full": [net.rf * hgt / size[0], net.rf * wid / size[1]],
                    "stride_full": [net.stride * hgt / size[0], net.stride * wid / size[1]],
                    "flops_image": bagnet_flops(net.eval(), c, size),
                    "flops_cell": bagnet_flops(net, c, (net.rf, net.rf)),
                    "model_hash": bank.meta["model"]["hash"]}
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
