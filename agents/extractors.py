"""Stable-Baselines3 features extractors for Glimpse-v0's observations.

:class:`CellExtractor` runs one small MLP on every cell's D features and hands the per-cell
codes, each followed by the cell's visited bit, flattened in cell order, to the policy: with
no hidden policy layers (``net_arch=dict(pi=[], vf=[64])``) each action logit is a linear
read-out of the cells' codes and visited bits. It is cheap, which matters because PPO's
updates dominate its running time: the MLP reads the features grid as it is (a view, no
copy), and the visited bits join only the small codes.

:class:`GridExtractor` treats the observation as the grid it is: the what-features ``[H, W,
D]`` and the visited mask become a ``[D + 1, H, W]`` image, a small conv net mixes
neighbouring cells, and a linear layer maps the result to ``features_dim``. It keeps the
cells' spatial layout (a flat MLP over the whole grid would have to learn it).

:class:`SequenceExtractor` reads the compact ``glimpses`` observation: the glimpses so far as
a padded sequence, coded slot by slot and averaged (an order-invariant encoder).

By reference: given ``bank=`` (a bank directory), :class:`CellExtractor` and
:class:`GridExtractor` also read the ``index`` observation (each env's image row in the
bank, and ``visited``), fetching the grids from the bank themselves (:class:`BankGrids`);
with the same weights they give what they give on the ``full`` observation of the same
images, which they still read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from glimpse_gym.envs.kernels import channels_last
from glimpse_gym.envs.source import GlimpseSource, load_source

BankSpec = str | Path | dict | GlimpseSource


class BankGrids:
    """The feature grids of a bank, read by image row: what an extractor reads when the env
    observes by reference (``observation="index"``).

    On the CPU the grids are read from the bank's memory map (shared by every process through
    the page cache, nothing copied ahead); on another device the bank's features are copied
    there once (float16) and gathered on the device. The bank is opened at the first read,
    so a policy built with a bank path that is not on this machine still loads and runs on
    the grid observations (``full``).

    Args:
        bank: a bank directory, the :func:`~glimpse_gym.envs.load_source` arguments of one as
            a dict (``{"bank": None, "split": "train"}``: the embedded default's), or a
            :class:`GlimpseSource`; :meth:`bind` changes it.
    """

    def __init__(self, bank: BankSpec) -> None:
        self.bind(bank)

    def bind(self, bank: BankSpec) -> None:
        """Read from ``bank`` from now on (e.g. the test split's bank for an evaluation)."""
        if isinstance(bank, GlimpseSource):
            self.bank: Any = bank
        elif isinstance(bank, dict):
            self.bank = dict(bank)
        else:
            self.bank = {"bank": str(bank)}
        self._source: GlimpseSource | None = bank if isinstance(bank, GlimpseSource) else None
        self._on_device: dict[str, torch.Tensor] = {}
        self.generation = getattr(self, "generation", -1) + 1  # what a reader's cache keys on

    @property
    def source(self) -> GlimpseSource:
        if self._source is None:
            self._source = load_source(**self.bank)
        return self._source

    def __call__(self, index: torch.Tensor, channels_first: bool = False) -> torch.Tensor:
        """``index [B]`` or ``[B, 1]`` (any dtype: SB3 hands observations over as float32)
        -> the images' grids, float32 on the index's device: channels-last and flat, ``[B,
        H*W*D]`` (what the ``full`` observation holds), or with ``channels_first`` ``[B, D,
        H, W]`` (the same values, as the bank stores them: no transpose on the CPU)."""
        src = self.source
        rows = index.reshape(-1).long()
        n = src.num_images
        bad = rows[(rows < 0) | (rows >= n)]
        if len(bad):
            raise ValueError(f"image index {int(bad[0])} is outside the bank this policy "
                             f"reads ({src.description.get('bank')}, {n} images): bind the "
                             "policy to the env's bank (extractor.grids.bind(...))")
        b, (h, w), d = len(rows), src.grid, src.feature_dim
        if rows.device.type == "cpu":
            grids = np.asarray(src.features[rows.numpy()])  # [B, D, H, W]
            if channels_first:
                return torch.from_numpy(grids).float()
            return torch.from_numpy(channels_last(grids)).view(b, -1)
        key = str(rows.device)
        if key not in self._on_device:
            from glimpse_gym.envs.tables import channels_last as to_device
            self._on_device[key] = to_device(src.features, torch.float16, rows.device)
        grids = self._on_device[key].index_select(0, rows).float()  # [B, H*W, D]
        if channels_first:
            return grids.permute(0, 2, 1).reshape(b, d, h, w)
        return grids.reshape(b, -1)

    def __getstate__(self) -> dict[str, Any]:  # the bank's spec travels, not its arrays
        bank = self.bank
        if isinstance(bank, GlimpseSource):
            d = bank.description
            # without a path, the bank is rebuilt from its dataset and split; expect its
            # BagNet, so that a different one is refused rather than read
            bank = {"bank": d["bank"]} if d.get("bank") else \
                {"bank": None, "dataset": d["dataset"], "split": d["split"],
                 "expect": {"model_hash": d["model_hash"]}}
        return {"bank": bank}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.bind(state["bank"])


class PerImage:
    """Mixin of the by-reference extractors (torch modules with a :class:`BankGrids` reader,
    ``grids``): :meth:`per_image` computes what depends on the image alone once per distinct
    image of a batch (an episode's T steps share it; in training the gradient flows through
    the gather) and, while no gradient is taken (collecting rollouts), keeps it from one
    call to the next until the weights, the bank or the device change."""

    _kept: tuple[Any, torch.Tensor, torch.Tensor] | None = None

    def per_image(self, module: nn.Module, index: torch.Tensor, compute: Any) -> torch.Tensor:
        """``compute(rows)`` (the distinct images' rows -> a tensor, one entry per row) for
        the images ``index`` refers to, row i for ``index[i]``; ``module``: what it
        depends on (its parameters and buffers are watched)."""
        rows, inverse = torch.unique(index.reshape(-1).long(), return_inverse=True)
        # what changes the result: the weights, BatchNorm statistics and mode, the bank and
        # the device (Module.to() keeps the tensors' versions: see _apply)
        versions = tuple(t._version for t in (*module.parameters(), *module.buffers()))
        key = (versions, module.training, self.grids.generation, str(index.device))
        kept = self._kept
        if (not torch.is_grad_enabled() and kept is not None and kept[0] == key
                and torch.equal(kept[1], rows)):
            return kept[2].index_select(0, inverse)
        values = compute(rows)
        self._kept = None if torch.is_grad_enabled() else (key, rows, values)
        return values.index_select(0, inverse)  # backward: index_add_, not index_put_

    def _apply(self, *args: Any, **kwargs: Any) -> Any:
        self._kept = None  # .to(), .double(), ...: the kept values are of the old tensors
        return super()._apply(*args, **kwargs)


def grid_size(observation_space: gym.spaces.Dict, bank: BankSpec | None,
               feature_dim: int | None, name: str) -> tuple[int, int, BankGrids | None]:
    """``(cells, D, grids)`` of a grid extractor: from the ``features`` space, or, for the
    ``index`` observation, from ``feature_dim`` (or the bank) with the bank's reader."""
    cells = observation_space["visited"].shape[0]
    if "valid" in observation_space.spaces:
        raise ValueError(f"{name} reads a whole grid (the full, partial or index "
                         "observation); the compact 'glimpses' observation is read by "
                         "SequenceExtractor")
    grids = None if bank is None else BankGrids(bank)
    if "features" in observation_space.spaces:
        total = observation_space["features"].shape[0]
        if total % cells:
            raise ValueError(f"{total} feature values do not split into {cells} cells")
        return cells, total // cells, grids
    if grids is None:
        raise ValueError(f"{name} on the 'index' observation reads the grids from the bank: "
                         "pass bank=<bank directory> (and feature_dim=D) in "
                         "features_extractor_kwargs (the Saccader's policies: policy_kwargs)")
    return cells, feature_dim or grids.source.feature_dim, grids


def grid_features(observations: dict[str, torch.Tensor], grids: BankGrids | None
                  ) -> torch.Tensor:
    """The flat channels-last grids ``[B, H*W*D]``: the observation's own ``features``, or
    read from the bank by the ``index`` observation."""
    if "features" in observations:
        return observations["features"]
    if grids is None:
        raise ValueError("an 'index' observation, but this extractor has no bank to read "
                         "the grids from (bank=...)")
    return grids(observations["index"])


class CellExtractor(PerImage, BaseFeaturesExtractor):
    """``{"features": [B, H*W*D], "visited": [B, H*W]}`` -> ``[B, H*W*(code + 1)]``.

    By reference (the ``index`` observation) the per-cell codes are computed once per
    distinct image of a batch and kept across rollout steps (:class:`PerImage`).

    Args:
        observation_space: Glimpse-v0's Dict space.
        hidden: width of the per-cell MLP's hidden layer.
        code: the MLP's output size per cell (the visited bit is appended to it).
    """

    def __init__(self, observation_space: gym.spaces.Dict, hidden: int = 16,
                 code: int = 4, bank: BankSpec | None = None,
                 feature_dim: int | None = None) -> None:
        cells, d, grids = grid_size(observation_space, bank, feature_dim, "CellExtractor")
        super().__init__(observation_space, (code + 1) * cells)
        self.feature_dim, self.grids = d, grids
        self.mlp = nn.Sequential(nn.Linear(self.feature_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, code), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        b = observations["visited"].shape[0]
        if "features" in observations or self.grids is None:
            features = grid_features(observations, self.grids)
            codes = self.mlp(features.view(b, -1, self.feature_dim))
        else:
            codes = self.per_image(self.mlp, observations["index"], lambda rows: self.mlp(
                self.grids(rows).view(len(rows), -1, self.feature_dim)))
        visited = observations["visited"].to(codes.dtype).view(b, -1, 1)
        return torch.cat([codes, visited], dim=2).flatten(1)


class GridExtractor(BaseFeaturesExtractor):
    """``{"features": [B, H*W*D], "visited": [B, H*W]}`` -> ``[B, features_dim]``.

    Args:
        observation_space: Glimpse-v0's Dict space.
        grid: ``(H, W)`` of the cell grid (``env.unwrapped.feature_shape[:2]``).
        channels: width of the conv layers.
        features_dim: output size.
    """

    def __init__(self, observation_space: gym.spaces.Dict, grid: tuple[int, int],
                 channels: int = 32, features_dim: int = 128,
                 bank: BankSpec | None = None, feature_dim: int | None = None) -> None:
        super().__init__(observation_space, features_dim)
        h, w = grid
        cells, d, self.grids = grid_size(observation_space, bank, feature_dim,
                                          "GridExtractor")
        if h * w != cells:
            raise ValueError(f"grid {grid} does not fit the observation space ({cells} cells)")
        self.grid, self.feature_dim = (h, w), d
        self.conv = nn.Sequential(  # per-cell mixing, then one 3x3 over neighbouring cells
            nn.Conv2d(self.feature_dim + 1, channels, 1), nn.ReLU(),
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(),
        )
        self.linear = nn.Sequential(nn.Linear(16 * h * w, features_dim), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        h, w = self.grid
        b = observations["visited"].shape[0]
        features = grid_features(observations, self.grids)
        features = features.view(b, h, w, self.feature_dim).permute(0, 3, 1, 2)
        visited = observations["visited"].float().view(b, 1, h, w)
        x = self.conv(torch.cat([features, visited], dim=1))
        return self.linear(x.flatten(1))


class SequenceExtractor(BaseFeaturesExtractor):
    """The ``glimpses`` observation (``features [B, T*D]``, ``cells [B, T]``, ``valid [B,
    T]``, ``visited [B, H*W]``) -> ``[B, code + H*W]``.

    Each filled slot (a glimpse) is coded by a small MLP over its D features and a learned
    embedding of its cell; the codes are averaged over the filled slots (order-invariant, and
    any T: the features are split into rows of D, so a policy trained with T = 6 also reads
    12 glimpses, as ``glimpse evaluate`` runs it; SB3's ``model.predict`` checks the shape
    against the trained T), and the visited mask is appended for the action head.

    Args:
        observation_space: the ``glimpses`` mode's Dict space.
        hidden: the slot MLP's hidden width. code: the pooled code's size.
        location_dim: the cell embedding's size.
    """

    def __init__(self, observation_space: gym.spaces.Dict, hidden: int = 64, code: int = 64,
                 location_dim: int = 16) -> None:
        if "valid" not in observation_space.spaces:
            raise ValueError("SequenceExtractor reads the 'glimpses' observation mode "
                             "(features, cells, valid, visited); got keys "
                             f"{sorted(observation_space.spaces)}")
        cells = observation_space["visited"].shape[0]
        slots = observation_space["cells"].shape[0]
        total = observation_space["features"].shape[0]
        if total % slots:
            raise ValueError(f"{total} feature values do not split into {slots} glimpses")
        super().__init__(observation_space, code + cells)
        self.num_cells, self.feature_dim = cells, total // slots
        self.where = nn.Embedding(cells + 1, location_dim)  # index H*W: an empty slot
        self.mlp = nn.Sequential(nn.Linear(self.feature_dim + location_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, code), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        b = observations["visited"].shape[0]
        features = observations["features"].view(b, -1, self.feature_dim)
        valid = observations["valid"].to(features.dtype)  # [B, T]
        cells = observations["cells"].long().clamp(min=-1) % (self.num_cells + 1)  # -1 -> H*W
        codes = self.mlp(torch.cat([features, self.where(cells)], dim=2))  # [B, T, code]
        pooled = (codes * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        return torch.cat([pooled, observations["visited"].to(pooled.dtype)], dim=1)


EXTRACTORS = ("cell", "grid", "sequence")


def extractor_policy_kwargs(extractor: str, grid: tuple[int, int], channels: int = 16,
                            code: int = 4, features_dim: int = 128,
                            bank: str | dict | None = None,
                            feature_dim: int | None = None) -> dict:
    """SB3 ``policy_kwargs`` for ``"cell"`` (:class:`CellExtractor`, linear action read-out,
    a 64-unit value layer), ``"grid"`` (:class:`GridExtractor` and SB3's default heads) or
    ``"sequence"`` (:class:`SequenceExtractor` for the ``glimpses`` observation, 64-unit
    policy and value layers).

    ``channels`` is the per-cell MLP's hidden width (cell), the conv width (grid) or the slot
    MLP's hidden width (sequence); ``code`` the cell code size (cell only); ``features_dim``
    the grid extractor's output size or the sequence extractor's pooled code size.
    ``bank`` and ``feature_dim`` (cell and grid): the bank to read the grids from (a
    directory, or :func:`~glimpse_gym.envs.load_source` arguments as a dict) when the env
    observes by reference (``observation="index"``).
    """
    by_reference = {} if bank is None else {"bank": bank, "feature_dim": feature_dim}
    if extractor == "cell":
        return {"features_extractor_class": CellExtractor,
                "features_extractor_kwargs": {"hidden": channels, "code": code,
                                              **by_reference},
                "net_arch": {"pi": [], "vf": [64]}}
    if extractor == "grid":
        return {"features_extractor_class": GridExtractor,
                "features_extractor_kwargs": {"grid": tuple(grid), "features_dim": features_dim,
                                              "channels": channels, **by_reference}}
    if extractor == "sequence":
        return {"features_extractor_class": SequenceExtractor,
                "features_extractor_kwargs": {"hidden": channels, "code": features_dim},
                "net_arch": {"pi": [64], "vf": [64]}}
    raise ValueError(f"extractor must be one of {EXTRACTORS}, got {extractor!r}")
