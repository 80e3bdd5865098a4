"""Where an environment's images come from: a feature bank, or the embedded default.

:func:`load_source` returns a :class:`GlimpseSource`: per-image what-features, per-cell
logits, labels, optionally the images, and the grid geometry. With no bank it uses the bank
of the embedded digits BagNet over the ``digits`` split (or of a task's shipped BagNet over its
dataset), kept in the user cache (:func:`glimpse_gym.cache.cache_dir`): the first
``gym.make`` of an id on a machine writes it (a few seconds for digits, offline), later ones
open it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glimpse_gym.bagnet import iterate_batches, load_bagnet, preprocess
from glimpse_gym.bagnet.common import cell_boxes
from glimpse_gym.bank import FeatureBank, check_expected
from glimpse_gym.bank_write import write_bank
from glimpse_gym.cache import cache_dir
from glimpse_gym.datasets import ImageDataset, TensorImageDataset, make_dataset
from glimpse_gym.errors import BankError, UsageError
from glimpse_gym.pretrained import resolve_checkpoint


@dataclass(frozen=True, eq=False)
class GlimpseSource:
    """Read-only arrays an environment samples episodes from.

    Attributes:
        features: ``[N, D, H, W] float16`` what-features (a memory map for banks).
        logits: ``[N, K, H, W] float32`` per-cell logits.
        labels: ``[N] int64``.
        images: ``[N, C, Hi, Wi] uint8`` or None.
        head_weight, head_bias: ``[K, D]``, ``[K]`` float32, the BagNet head.
        feature_range: ``(min, max)`` of ``features`` (the observation bounds).
        rf, stride: receptive field and stride of a cell, in pixels.
        image_shape: ``(C, Hi, Wi)``.
        class_names: one per class.
        description: dataset, split, model hash, bank path, grid, feature dim and class
            count (see :func:`describe`; recorded by trained policies, checked when they run).
    """

    features: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    images: np.ndarray | None
    head_weight: np.ndarray
    head_bias: np.ndarray
    feature_range: tuple[float, float]
    rf: int
    stride: int
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    description: dict[str, Any]

    @property
    def num_images(self) -> int:
        return int(self.labels.shape[0])

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.features.shape[2]), int(self.features.shape[3])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def cell_boxes(self) -> np.ndarray:
        """``[H*W, 4]`` pixel boxes ``(top, left, bottom, right)`` of the cells, row-major."""
        return cell_boxes(self.grid, self.rf, self.stride)


def source_from_bank(bank: FeatureBank) -> GlimpseSource:
    """Wrap a loaded feature bank."""
    return GlimpseSource(
        features=bank.features, logits=bank.logits, labels=bank.labels, images=bank.images,
        head_weight=bank.head_weight, head_bias=bank.head_bias,
        feature_range=bank.feature_range, rf=bank.rf, stride=bank.stride,
        image_shape=tuple(bank.meta["image_shape"]),
        class_names=tuple(bank.meta["dataset"]["class_names"]),
        description=describe(bank.meta["dataset"]["name"], bank.meta["dataset"]["split"],
                             bank.meta["model"]["hash"], str(bank.path), bank.features.shape,
                             bank.num_classes))


def describe(dataset: str, split: str, model_hash: str, bank: str | None,
             features_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """A source's :attr:`GlimpseSource.description`: what a policy trained on it records,
    and what a policy is checked against before it is run on another source."""
    _, d, h, w = features_shape
    return {"dataset": dataset, "split": split, "model_hash": model_hash, "bank": bank,
            "grid": [int(h), int(w)], "feature_dim": int(d), "num_classes": int(num_classes)}


@functools.lru_cache(maxsize=8)
def _computed_source(dataset: str, split: str, checkpoint: str, seed: int,
                     root: str | None = None, options: tuple[tuple[str, Any], ...] = (),
                     max_images: int | None = None) -> GlimpseSource:
    """The bank of ``checkpoint`` over ``dataset``/``split``, from the user cache: written
    there (atomically) by the first call on a machine, opened and checked by later ones (which
    need neither the dataset's files nor ``root``)."""
    model, ckpt = load_bagnet(resolve_checkpoint(checkpoint))
    path = default_bank_path(dataset, split, ckpt["model_hash"], seed, dict(options), max_images)
    try:
        bank = FeatureBank.load(path)
    except BankError as exc:  # not made yet, or damaged: made again
        if (path / "meta.json").exists():
            warnings.warn(f"the cached bank is unusable and is made again: {exc}",
                          stacklevel=4)
        data = _dataset(dataset, split, seed, root, dict(options), max_images)
        try:
            bank = write_bank(model, data, path, checkpoint=ckpt, overwrite=True,
                              progress=len(data) >= PROGRESS_FROM,
                              dataset_options={"seed": seed, **dict(options)})
        except OSError as err:  # a read-only or full cache folder: computed in memory
            warnings.warn(f"cannot write the bank to {path} ({err}); computing it "
                          "in memory (set GLIMPSE_GYM_CACHE to a writable folder)", stacklevel=4)
            return _in_memory_source(model, ckpt, data)
    source = source_from_bank(bank)
    return dataclasses.replace(source, description={**source.description, "bank": None})


PROGRESS_FROM = 5000
"""Writing a cached bank of at least this many images shows a progress bar."""


def _dataset(dataset: str, split: str, seed: int, root: str | None, options: dict[str, Any],
             max_images: int | None) -> ImageDataset:
    kwargs = {"seed": seed, **options, **({"root": root} if root is not None else {})}
    data = make_dataset(dataset, split, **kwargs)
    if max_images is None or max_images >= len(data):
        return data
    if not isinstance(data, TensorImageDataset):
        raise UsageError(f"max_images needs a dataset held in memory; {dataset!r} is read "
                         "from disk: write a bank of a subset with 'glimpse extract-features'")
    return TensorImageDataset(data.name, data.split, data.images[:max_images],
                              data.labels[:max_images], data.class_names, data.mean, data.std)


def default_bank_path(dataset: str, split: str, model_hash: str, seed: int,
                      options: dict[str, Any] | None = None,
                      max_images: int | None = None) -> Path:
    """Where the cache keeps the bank of the BagNet ``model_hash`` over a dataset split (the
    dataset's options and an image limit, when given, are part of the name)."""
    name = f"{dataset}-seed{seed}-{model_hash[:16]}"
    if options or max_images is not None:
        key = json.dumps({"options": options or {}, "max_images": max_images}, sort_keys=True)
        name += "-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    return cache_dir() / "banks" / name / split


def _in_memory_source(model: Any, ckpt: dict[str, Any], data: ImageDataset) -> GlimpseSource:
    mean, std = ckpt["normalization"]["mean"], ckpt["normalization"]["std"]
    feats, logits = [], []
    with torch.no_grad():
        for images, _ in iterate_batches(data, 512):
            out = model(preprocess(images, mean, std))
            feats.append(out.features.to(torch.float16))
            logits.append(out.logits)
    weight, bias = model.head_parameters()
    arrays = [torch.cat(feats).numpy(), torch.cat(logits).numpy(), data.labels.numpy(),
              data.images.numpy()]
    for a in arrays:
        a.flags.writeable = False
    return GlimpseSource(
        features=arrays[0], logits=arrays[1], labels=arrays[2], images=arrays[3],
        head_weight=weight.detach().numpy().copy(), head_bias=bias.detach().numpy().copy(),
        feature_range=(float(arrays[0].min()), float(arrays[0].max())),
        rf=model.rf, stride=model.stride, image_shape=data.image_shape,
        class_names=tuple(data.class_names),
        description=describe(data.name, data.split, ckpt["model_hash"], None, arrays[0].shape,
                             arrays[1].shape[1]))


def load_source(bank: str | Path | FeatureBank | GlimpseSource | None = None, *,
                dataset: str = "digits", split: str = "train", checkpoint: str = "default",
                seed: int = 0, root: str | Path | None = None,
                data_options: dict[str, Any] | None = None, max_images: int | None = None,
                expect: dict[str, Any] | None = None) -> GlimpseSource:
    """The images of an environment.

    Args:
        bank: a feature bank directory, a loaded bank, or a ready :class:`GlimpseSource`
            (used as is, e.g. synthetic arrays in tests); when None, the bank of
            ``checkpoint`` over ``dataset``/``split`` in the user cache, written there on
            first use (fine for ``digits``; write banks with 'glimpse extract-features' for
            big data).
        dataset, split, checkpoint, seed: used only when ``bank`` is None; ``checkpoint`` is
            a path, ``"default"`` (the embedded digits BagNet) or a task's name (its shipped
            BagNet, see :mod:`glimpse_gym.tasks`).
        root, data_options: where the dataset's files are and its options (``canvas_size``,
            ...), when ``bank`` is None; ``root`` is needed only to write the cached bank.
        max_images: only the split's first N images (quick checks), when ``bank`` is None.
        expect: fields a bank must match (see :meth:`FeatureBank.check_matches`).
    """
    if isinstance(bank, GlimpseSource) or bank is None:
        options = tuple(sorted((data_options or {}).items()))
        source = bank or _computed_source(dataset, split, str(checkpoint), seed,
                                          None if root is None else str(root), options,
                                          max_images)
        if expect:
            d = source.description
            check_expected({"dataset": d.get("dataset"), "split": d.get("split"),
                            "model_hash": d.get("model_hash"), "grid": tuple(d.get("grid", ())),
                            "num_classes": d.get("num_classes"),
                            "feature_dim": d.get("feature_dim")}, expect,
                           f"the source {d.get('dataset')}/{d.get('split')}")
        return source
    if not isinstance(bank, FeatureBank):
        bank = FeatureBank.load(bank, expect=expect)
    elif expect:
        bank.check_matches(expect)
    return source_from_bank(bank)
