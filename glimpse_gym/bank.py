"""Feature banks: one pass of a BagNet over a dataset split, stored for cheap glimpses.

A bank is a directory::

    meta.json       format, dataset, model (arch, hash, rf, stride), grid, image shape,
                    normalisation, array shapes/dtypes, sha256 of every file, accuracy
    features.npy    [N, D, H', W'] float16   what-features of every cell
    logits.npy      [N, K, H', W'] float32   per-cell class logits
    labels.npy      [N] int64
    head.npz        weight [K, D], bias [K] float32: logits = head(features)
    images.npy      [N, C, H, W] uint8       optional, for rendering and occlusion

Compact forms (:mod:`glimpse_gym.bank_write`'s options), read as the arrays above:

- written by parts (``shard_images``; format ``glimpse-gym-bank/2``): each array as files of
  consecutive images (``features-00000.npy``, ...; ``meta.json``'s ``shards`` gives the images
  of each), read as one :class:`~glimpse_gym.shards.ShardedArray`;
- ``features.npy`` int8 with per-channel scales (``feature_scale`` in ``head.npz``), read as
  float32 (:class:`~glimpse_gym.bank_arrays.Dequantized`);
- no ``logits.npy``: the logits computed from the features by the head at each read
  (:class:`~glimpse_gym.bank_arrays.HeadLogits`);
- features and logits stored channels-last, ``[N, H', W', C]`` (``"layout":
  "channels-last"`` in ``meta.json``), read through ``[N, C, H', W']`` views.

It is written (:mod:`glimpse_gym.bank_write`) under a temporary name beside the target and
renamed into place, so an interrupted run leaves no half bank; replacing a bank
(``overwrite``) swaps the two folders in one step, so a reader finds the old bank or the new
one; a killed writer's temporary folder is removed by the next write. ``meta.json`` holds
its own checksum and the size and sha256 of every file. :meth:`FeatureBank.load`
memory-maps the arrays (a bank larger than RAM works) and checks the bank first
(:mod:`glimpse_gym.bank_checks`); anything missing, damaged or mismatched raises
:class:`~glimpse_gym.errors.BankError` naming the file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glimpse_gym.bagnet.common import cell_boxes
from glimpse_gym.bank_arrays import Dequantized, HeadLogits
from glimpse_gym.bank_checks import HEAD, META, array_files, read_meta, verify_files
from glimpse_gym.errors import BankError
from glimpse_gym.fileio import READ_ERRORS
from glimpse_gym.shards import ShardedArray, stack


@dataclass
class FeatureBank:
    """A loaded bank; arrays are read-only memory maps.

    Attributes:
        path: the bank directory.
        meta: the parsed ``meta.json``.
        features: ``[N, D, H', W'] float16`` (a :class:`ShardedArray` in a bank of parts, as
            are the other arrays; an int8 bank's read as float32, :class:`Dequantized`).
        logits: ``[N, K, H', W'] float32`` (:class:`HeadLogits` when not stored: the head
            applied to the features at each read).
        labels: ``[N] int64``.
        head_weight, head_bias: ``[K, D]`` and ``[K]`` float32.
        images: ``[N, C, H, W] uint8`` or None when the bank was written without images.
    """

    path: Path
    meta: dict[str, Any]
    features: np.ndarray | ShardedArray | Dequantized
    logits: np.ndarray | ShardedArray | HeadLogits
    labels: np.ndarray | ShardedArray
    head_weight: np.ndarray
    head_bias: np.ndarray
    images: np.ndarray | ShardedArray | None

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

    def storage(self) -> dict[str, Any]:
        """Bytes on disk: ``total``, ``per_image`` (total / N), ``arrays`` (name -> bytes of
        its files), ``parts`` (files per array) and ``files`` (every file, the head too)."""
        sizes = self.meta["sizes"]
        arrays = {name: sum(sizes[f] for f in array_files(spec))
                  for name, spec in self.meta["arrays"].items()}
        total = sum(sizes.values())
        return {"total": total, "per_image": total / max(self.num_images, 1),
                "arrays": arrays, "parts": len(self.meta.get("shards", [0])),
                "files": len(sizes)}

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
        arrays = {name: _open_array(path, spec, meta) for name, spec in meta["arrays"].items()}
        weight, bias, scale = _open_head(path / HEAD)
        features = arrays["features"]
        if (features.dtype == np.int8) != (scale is not None):
            raise BankError(f"{path / HEAD}: int8 features need its feature_scale and other "
                            f"features none; the features are {features.dtype} and it has "
                            f"{'one' if scale is not None else 'none'}")
        if scale is not None:
            if scale.shape != (features.shape[1],):
                raise BankError(f"{path / HEAD}: feature_scale is {list(scale.shape)}, "
                                f"expected one scale per channel [{features.shape[1]}]")
            features = Dequantized(features, scale)
        logits = arrays.get("logits")
        if logits is None:
            if weight.shape[1:] != features.shape[1:2]:
                raise BankError(f"{path / HEAD}: its weight {list(weight.shape)} does not "
                                f"read features of {features.shape[1]} channels")
            logits = HeadLogits(features, weight, bias)
        bank = cls(path=path, meta=meta, features=features, logits=logits,
                   labels=arrays["labels"], head_weight=weight, head_bias=bias,
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
        elif n and (np.min(self.labels) < 0 or np.max(self.labels) >= k):
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


def _open_array(path: Path, spec: dict[str, Any], meta: dict[str, Any]
                ) -> np.ndarray | ShardedArray:
    parts = []
    for f, n in zip(array_files(spec), meta.get("shards", [spec["shape"][0]]), strict=True):
        f = path / f
        try:
            arr = np.load(f, mmap_mode="r", allow_pickle=False)
        except READ_ERRORS as exc:
            raise BankError(f"{f} is damaged (cannot be read as .npy: {exc})") from None
        shape = [n, *spec["shape"][1:]]
        last = spec.get("layout") == "channels-last"
        if last:  # stored [n, H', W', C]
            shape = [n, *shape[2:], shape[1]]
        if str(arr.dtype) != spec["dtype"] or list(arr.shape) != shape:
            raise BankError(f"{f} is {arr.dtype}{list(arr.shape)}, but {META} says "
                            f"{spec['dtype']}{shape}")
        parts.append(np.moveaxis(arr, -1, 1) if last else arr)
    return stack(parts)


def _open_head(f: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        with np.load(f, allow_pickle=False) as npz:
            scale = npz["feature_scale"].astype(np.float32) if "feature_scale" in npz else None
            return npz["weight"].astype(np.float32), npz["bias"].astype(np.float32), scale
    except FileNotFoundError:
        raise BankError(f"{f} is missing from the feature bank") from None
    except (*READ_ERRORS, KeyError) as exc:
        raise BankError(f"{f} is damaged: {exc}") from None
