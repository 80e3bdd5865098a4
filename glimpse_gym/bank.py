"""Feature banks: one pass of a BagNet over a dataset split, stored for cheap glimpses.

A bank is a directory::

    meta.json       format, dataset, model (arch, hash, rf, stride), grid, image shape,
                    normalisation, array shapes/dtypes, sha256 of every file, accuracy
    features.npy    [N, D, H', W'] float16   what-features of every cell
    logits.npy      [N, K, H', W'] float32   per-cell class logits
    labels.npy      [N] int64
    head.npz        weight [K, D], bias [K] float32: logits = head(features)
    images.npy      [N, C, H, W] uint8       optional, for rendering and occlusion

It is written under a temporary name beside the target and renamed into place, so an
interrupted run leaves no half bank; replacing a bank (``overwrite``) swaps the two folders
in one step, so a reader finds the old bank or the new one; a killed writer's temporary
folder is removed by the next write. ``meta.json`` holds its own checksum and the size and
sha256 of every file. :meth:`FeatureBank.load` memory-maps the arrays (a bank larger than RAM
works) and checks the bank first (:mod:`glimpse_gym.bank_checks`); anything missing, damaged
or mismatched raises :class:`~glimpse_gym.errors.BankError` naming the file and the problem.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from tqdm import tqdm

from glimpse_gym.bagnet.common import BagNetBase, cell_boxes, image_logits
from glimpse_gym.bagnet.inference import iterate_batches, preprocess
from glimpse_gym.bank_checks import (
    FORMAT,
    HEAD,
    META,
    META_CHECKSUM,
    meta_checksum,
    read_meta,
    verify_files,
)
from glimpse_gym.datasets import ImageDataset
from glimpse_gym.errors import BankError, UsageError
from glimpse_gym.fileio import (
    READ_ERRORS,
    exchange_or_replace,
    file_sha256,
    ordinary_mode,
    remove_stale,
    temporary_name,
)


@dataclass
class FeatureBank:
    """A loaded bank; arrays are read-only memory maps.

    Attributes:
        path: the bank directory.
        meta: the parsed ``meta.json``.
        features: ``[N, D, H', W'] float16``.
        logits: ``[N, K, H', W'] float32``.
        labels: ``[N] int64``.
        head_weight, head_bias: ``[K, D]`` and ``[K]`` float32.
        images: ``[N, C, H, W] uint8`` or None when the bank was written without images.
    """

    path: Path
    meta: dict[str, Any]
    features: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    head_weight: np.ndarray
    head_bias: np.ndarray
    images: np.ndarray | None

    @property
    def num_images(self) -> int:
        return int(self.labels.shape[0])

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.meta["grid"])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return int(self.meta["model"]["num_classes"])

    @property
    def feature_range(self) -> tuple[float, float]:
        """``(min, max)`` of the stored features (recorded at extraction)."""
        stats = self.meta.get("stats", {})
        if "feature_min" in stats:
            return float(stats["feature_min"]), float(stats["feature_max"])
        return float(self.features.min()), float(self.features.max())

    @property
    def rf(self) -> int:
        return int(self.meta["model"]["rf"])

    @property
    def stride(self) -> int:
        return int(self.meta["model"]["stride"])

    def cell_boxes(self) -> np.ndarray:
        """``[H'*W', 4]`` int pixel boxes ``(top, left, bottom, right)``, cells row-major."""
        return cell_boxes(self.grid, self.rf, self.stride)

    @classmethod
    def load(cls, path: str | Path, *, expect: dict[str, Any] | None = None,
             verify: bool = False) -> FeatureBank:
        """Open a bank, check it, and memory-map its arrays.

        Opening checks ``meta.json`` (its checksum, its fields and their agreement) and every
        file's size; the first open of a bank also compares every file's sha256 with
        ``meta.json`` and records that in the user cache, so later opens of the same files
        skip it (see :mod:`glimpse_gym.bank_checks`).

        Args:
            path: the bank directory.
            expect: fields the bank must match, any of ``dataset``, ``split``,
                ``model_hash``, ``grid``, ``num_classes``, ``feature_dim``.
            verify: compare every file's sha256 with ``meta.json`` even when a record says
                the files were verified before (reads every byte).

        Raises:
            BankError: naming the file and what is wrong.
        """
        path = Path(path).expanduser()
        try:
            is_dir = path.is_dir()
        except OSError as exc:
            raise BankError(f"{path} cannot be read: {exc.strerror or exc}") from None
        if not is_dir:
            raise BankError(f"no feature bank at {path} (expected a directory with {META}); "
                            "write one with 'glimpse extract-features'")
        meta = read_meta(path)
        verify_files(path, meta, always=verify)
        arrays = {name: _open_array(path, spec) for name, spec in meta["arrays"].items()}
        head = _open_head(path / HEAD)
        bank = cls(path=path, meta=meta, features=arrays["features"], logits=arrays["logits"],
                   labels=arrays["labels"], head_weight=head[0], head_bias=head[1],
                   images=arrays.get("images"))
        bank._check_consistency()
        if expect:
            bank.check_matches(expect)
        return bank

    def _check_consistency(self) -> None:
        n, d, h, w = self.features.shape
        k = self.num_classes
        problems = []
        if tuple(self.meta["grid"]) != (h, w):
            problems.append(f"features.npy grid {h}x{w} but meta.json says {self.meta['grid']}")
        if self.logits.shape != (n, k, h, w):
            problems.append(f"logits.npy is {self.logits.shape}, expected {(n, k, h, w)}")
        if self.labels.shape != (n,):
            problems.append(f"labels.npy is {self.labels.shape}, expected ({n},)")
        elif n and (self.labels.min() < 0 or self.labels.max() >= k):
            problems.append(f"labels.npy holds labels outside 0..{k - 1}")
        if self.head_weight.shape != (k, d) or self.head_bias.shape != (k,):
            problems.append(f"head.npz is {self.head_weight.shape}/{self.head_bias.shape}, "
                            f"expected {(k, d)}/{(k,)}")
        if self.images is not None and self.images.shape[0] != n:
            problems.append(f"images.npy has {self.images.shape[0]} images, labels {n}")
        if problems:
            raise BankError(f"feature bank {self.path} is inconsistent: " + "; ".join(problems))

    def check_matches(self, expect: dict[str, Any]) -> None:
        """Raise BankError listing every field of ``expect`` that this bank does not match."""
        check_expected({
            "dataset": self.meta["dataset"]["name"],
            "split": self.meta["dataset"]["split"],
            "model_hash": self.meta["model"]["hash"],
            "grid": tuple(self.meta["grid"]),
            "num_classes": self.num_classes,
            "feature_dim": int(self.features.shape[1]),
        }, expect, f"feature bank {self.path}")


def check_expected(have: dict[str, Any], expect: dict[str, Any], what: str) -> None:
    """Raise BankError listing every field of ``expect`` that ``have`` (the fields of
    ``what``: dataset, split, model_hash, grid, num_classes, feature_dim) does not match."""
    unknown = sorted(set(expect) - set(have))
    if unknown:
        raise ValueError(f"cannot check bank fields {unknown}; known: {sorted(have)}")
    wrong = [f"{k}: bank has {have[k]!r}, expected {tuple(v) if isinstance(v, list) else v!r}"
             for k, v in expect.items()
             if have[k] != (tuple(v) if isinstance(v, list) else v)]
    if wrong:
        raise BankError(f"{what} does not match: " + "; ".join(wrong))


def _open_array(path: Path, spec: dict[str, Any]) -> np.ndarray:
    f = path / spec["file"]
    try:
        arr = np.load(f, mmap_mode="r", allow_pickle=False)
    except READ_ERRORS as exc:
        raise BankError(f"{f} is damaged (cannot be read as .npy: {exc})") from None
    if str(arr.dtype) != spec["dtype"] or list(arr.shape) != list(spec["shape"]):
        raise BankError(f"{f} is {arr.dtype}{list(arr.shape)}, but {META} says "
                        f"{spec['dtype']}{list(spec['shape'])}")
    return arr


def _open_head(f: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(f, allow_pickle=False) as npz:
            return npz["weight"].astype(np.float32), npz["bias"].astype(np.float32)
    except FileNotFoundError:
        raise BankError(f"{f} is missing from the feature bank") from None
    except (*READ_ERRORS, KeyError) as exc:
        raise BankError(f"{f} is damaged: {exc}") from None


@torch.no_grad()
def write_bank(model: BagNetBase, dataset: ImageDataset, out: str | Path, *,
               checkpoint: dict[str, Any], batch_size: int = 512,
               device: torch.device | str = "cpu", store_images: bool = True,
               overwrite: bool = False, dataset_options: dict[str, Any] | None = None,
               num_workers: int = 0, progress: bool = True) -> FeatureBank:
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

    Returns:
        The written bank, loaded.
    """
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise BankError(f"{out} already exists; pass overwrite=True (--overwrite) to replace "
                        "it, or write elsewhere")
    if out.exists() and not (out / META).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise BankError(f"{out} is not a feature bank (no {META}); refusing to replace it: "
                        "write the bank elsewhere")
    model = model.eval().to(device)
    c, hgt, wid = dataset.image_shape
    if c != model.in_channels:
        raise UsageError(f"the model takes {model.in_channels}-channel images, the dataset "
                         f"{dataset.name!r} has {c}")
    gh, gw = model.grid_size(hgt, wid)
    if gh < 1 or gw < 1:
        raise UsageError(f"images of {hgt}x{wid} are smaller than the receptive field "
                         f"{model.rf}")
    n, d, k = len(dataset), model.feature_dim, model.num_classes
    mean, std = checkpoint["normalization"]["mean"], checkpoint["normalization"]["std"]
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)  # what killed writes left beside it
    tmp = Path(tempfile.mkdtemp(prefix=temporary_name(out), dir=out.parent))
    ordinary_mode(tmp, directory=True)
    try:
        specs = {
            "features": ("features.npy", "float16", (n, d, gh, gw)),
            "logits": ("logits.npy", "float32", (n, k, gh, gw)),
            "labels": ("labels.npy", "int64", (n,)),
        }
        if store_images:
            specs["images"] = ("images.npy", "uint8", (n, c, hgt, wid))
        arrays = {name: open_memmap(tmp / f, mode="w+", dtype=dt, shape=shape)
                  for name, (f, dt, shape) in specs.items()}
        correct = cells_correct = 0
        pos, feature_min, feature_max = 0, float("inf"), float("-inf")
        t0 = time.perf_counter()
        for images, labels in tqdm(iterate_batches(dataset, batch_size, num_workers=num_workers),
                                   total=-(-n // batch_size), desc=f"extract {dataset.split}",
                                   disable=not progress, leave=False):
            out_b = model(preprocess(images, mean, std, device))
            b = len(labels)
            features = out_b.features.to(torch.float16)
            arrays["features"][pos:pos + b] = features.cpu().numpy()
            feature_min = min(feature_min, features.min().item())
            feature_max = max(feature_max, features.max().item())
            logits = out_b.logits.float().cpu()
            arrays["logits"][pos:pos + b] = logits.numpy()
            arrays["labels"][pos:pos + b] = labels.numpy()
            if store_images:
                arrays["images"][pos:pos + b] = images.numpy()
            correct += (image_logits(logits).argmax(1) == labels).sum().item()
            cells_correct += (logits.argmax(1) == labels[:, None, None]).sum().item()
            pos += b
        seconds = time.perf_counter() - t0
        for arr in arrays.values():
            arr.flush()
        del arrays
        weight, bias = model.head_parameters()
        np.savez(tmp / HEAD, weight=weight.detach().float().cpu().numpy(),
                 bias=bias.detach().float().cpu().numpy())
        files = [spec[0] for spec in specs.values()] + [HEAD]
        meta = {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "dataset": {"name": dataset.name, "split": dataset.split, "num_images": n,
                        "options": dataset_options or {}, "class_names": dataset.class_names},
            "model": {"arch": checkpoint["arch"], "arch_kwargs": checkpoint["arch_kwargs"],
                      "hash": checkpoint["model_hash"], "rf": model.rf, "stride": model.stride,
                      "feature_dim": d, "num_classes": k},
            "grid": [gh, gw],
            "image_shape": [c, hgt, wid],
            "normalization": {"mean": list(mean), "std": list(std)},
            "arrays": {name: {"file": f, "dtype": dt, "shape": list(shape)}
                       for name, (f, dt, shape) in specs.items()},
            "checksums": {f: file_sha256(tmp / f) for f in files},
            "sizes": {f: (tmp / f).stat().st_size for f in files},
            "stats": {"image_acc": correct / max(n, 1),
                      "feature_min": feature_min, "feature_max": feature_max,
                      "cell_acc": cells_correct / max(n * gh * gw, 1),
                      "extract_seconds": seconds, "images_per_s": n / max(seconds, 1e-9)},
        }
        meta[META_CHECKSUM] = meta_checksum(meta)
        (tmp / META).write_text(json.dumps(meta, indent=1))
        exchange_or_replace(tmp, out)  # readers see the old bank or the new one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FeatureBank.load(out)  # hashes the files once more, as read back, and records it
