"""TNet (Papadopoulos, Korus and Memon, NeurIPS 2021) on a multi-scale bank.

TNet looks at the whole image at low resolution, picks the most promising cells of that grid,
processes only those regions at a higher resolution, recurses, and classifies from the
features of every level. On a multi-scale bank (:mod:`glimpse_gym.multiscale`) the levels'
BagNet features are already computed, as the Saccader's are on a bank, so the model here is
TNet's attention and classifier on fixed features:

- **Position/level code.** Every feature vector (level 0's mean, and each opened cell's)
  gets a code: sinusoids of the cell's centre (y, x, in image fractions) and its level,
  through a dense layer, added to the vector.
- **Location module per level.** Level ``l``'s cells are scored before they are opened, from
  what is known of them: their parent's features (level ``l - 1``, open) and their own
  position code, through a per-cell MLP (TNet's 1x1 convolutions); a softmax over the cells
  that may be opened (children of opened parents) gives their probabilities.
- **top-k, deterministically** (in training too): level 1 opens the ``k_1`` best-scored
  cells, then level 2 the ``k_2`` best among their children, and so on (``locations``; T is
  their sum).
- **Classifier**: one linear layer on the average of the coded feature vectors.
- **Loss** (TNet's ``train.py``): cross-entropy 0.7 over the individual feature vectors'
  predictions + 0.3 on the final one; REINFORCE (weight 0.1) on the summed log-probabilities
  of the chosen cells, reward 1 when the final prediction is right, with a moving-average
  baseline (start 0.5, decay 0.9); and a per-feature REINFORCE term (weight 0.1), each
  chosen cell's log-probability rewarded by its own feature vector's correctness against the
  same baseline.

:class:`TNetPolicy` drives the same choices through ``MultiScale-v0``'s vector env.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from glimpse_gym.multiscale import MultiScaleBank

FORMAT = "glimpse-gym-tnet/1"
CLASS_WEIGHTS = (0.7, 0.3)  # individual feature vectors, final prediction
RL_WEIGHT = 0.1
BASELINE_START, BASELINE_DECAY = 0.5, 0.9


@dataclass
class Geometry:
    """What the model needs of a multi-scale bank: per level its cells' centres (image
    fractions) and, below level 0, each cell's parent."""

    centres: list[np.ndarray]  # per level [cells, 2]
    parents: list[np.ndarray | None]  # per level [cells] (None at level 0)
    feature_dim: int
    num_classes: int
    grids: list[tuple[int, int]] = field(default_factory=list)  # per level (rows, columns)

    @classmethod
    def of(cls, bank: MultiScaleBank) -> Geometry:
        h, w = bank.image_shape[1:]
        centres = [np.stack([(lv.boxes[:, 0] + lv.boxes[:, 2]) / (2 * h),
                             (lv.boxes[:, 1] + lv.boxes[:, 3]) / (2 * w)], 1)
                   for lv in bank.levels]
        first = bank.levels[0].bank
        return cls(centres, [lv.parent for lv in bank.levels], int(first.features.shape[1]),
                   first.num_classes, [tuple(lv.grid) for lv in bank.levels])

    def describe(self) -> dict[str, Any]:
        return {"cells": [len(c) for c in self.centres], "feature_dim": self.feature_dim,
                "num_classes": self.num_classes}


def sinusoids(values: torch.Tensor, bands: int = 8) -> torch.Tensor:
    """``values [..., V]`` in [0, 1] -> ``[..., V * 2 * bands]`` sines and cosines."""
    freq = (2.0 ** torch.arange(bands, device=values.device, dtype=values.dtype)) * math.pi
    x = values[..., None] * freq
    return torch.cat([x.sin(), x.cos()], -1).flatten(-2)


class TNet(nn.Module):
    """TNet's attention and classifier over a multi-scale bank's levels (see the module)."""

    def __init__(self, geometry: Geometry, locations: tuple[int, ...], hidden: int = 64,
                 bands: int = 8) -> None:
        super().__init__()
        levels = len(geometry.centres)
        if len(locations) != levels - 1 or min(locations) < 1:
            raise ValueError(f"locations needs one count >= 1 per level below the first "
                             f"({levels - 1}), got {locations}")
        self.geometry, self.locations, self.bands = geometry, tuple(locations), bands
        d, k = geometry.feature_dim, geometry.num_classes
        code = 3 * 2 * bands
        codes = []
        for level, centres in enumerate(geometry.centres):
            yx = torch.as_tensor(centres, dtype=torch.float32)
            lv = torch.full((len(yx), 1), level / max(1, levels - 1))
            codes.append(sinusoids(torch.cat([yx, lv], 1), bands))
        whole = torch.tensor([[0.5, 0.5, 0.0]])  # level 0's mean: the whole image
        self.register_buffer("code_whole", sinusoids(whole, bands))
        for level, c in enumerate(codes):
            self.register_buffer(f"code_{level}", c)
        for level, p in enumerate(geometry.parents):
            if p is not None:
                self.register_buffer(f"parent_{level}", torch.as_tensor(p, dtype=torch.long))
        self.position = nn.Linear(code, d)
        self.where = nn.ModuleList(
            nn.Sequential(nn.Linear(d + code, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            for _ in range(levels - 1))
        self.head = nn.Linear(d, k)

    def code(self, level: int) -> torch.Tensor:
        return getattr(self, f"code_{level}")

    def parent(self, level: int) -> torch.Tensor:
        return getattr(self, f"parent_{level}")

    def scores(self, level: int, above: torch.Tensor) -> torch.Tensor:
        """Location logits ``[B, cells]`` of level ``level`` from ``above [B, cells above, D]``
        (the level above's features; only the opened parents' rows are read)."""
        parents = above[:, self.parent(level)]  # [B, cells, D]
        code = self.code(level).expand(len(above), -1, -1)
        return self.where[level - 1](torch.cat([parents, code], -1)).squeeze(-1)

    def coded(self, features: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return features + self.position(code)

    def forward(self, levels: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Choose and classify from the features of every level (``[B, cells_l, D]``;
        features of unopened cells are read only through :meth:`scores` of their children,
        so only the chosen cells' rows matter). Returns the chosen cells per level, their
        log-probabilities ``[B, T]``, the final logits ``[B, K]`` and each feature vector's
        own logits ``[B, 1 + T, K]`` (level 0's mean first)."""
        vectors = [self.coded(levels[0].mean(1), self.code_whole).unsqueeze(1)]
        chosen, log_probs = [], []
        allowed = None  # level 1: every cell
        for level in range(1, len(levels)):
            logits = self.scores(level, levels[level - 1])
            if allowed is not None:
                logits = logits.masked_fill(~allowed, float("-inf"))
            k = self.locations[level - 1]
            top = logits.detach().topk(k, dim=1).indices  # [B, k], best first
            log_probs.append(logits.log_softmax(1).gather(1, top))
            chosen.append(top)
            rows = levels[level].gather(1, top[..., None].expand(-1, -1, levels[level].shape[2]))
            vectors.append(self.coded(rows, self.code(level)[top]))
            if level + 1 < len(levels):  # the next level: children of the opened cells
                parent = self.parent(level + 1)
                allowed = (parent[None, :, None] == top[:, None, :]).any(-1)
        vectors_t = torch.cat(vectors, 1)  # [B, 1 + T, D]
        return {"chosen": chosen, "log_probs": torch.cat(log_probs, 1),
                "logits": self.head(vectors_t.mean(1)), "each": self.head(vectors_t)}


def tnet_loss(out: dict[str, torch.Tensor], labels: torch.Tensor, baseline: float
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """TNet's loss for one batch (see the module) and its statistics; the caller updates the
    baseline with ``stats["reward"]``."""
    logits, each = out["logits"], out["each"]
    k = logits.shape[1]
    final = F.cross_entropy(logits, labels)
    individual = F.cross_entropy(each.reshape(-1, k), labels.repeat_interleave(each.shape[1]))
    reward = (logits.argmax(1) == labels).float()
    own = (each[:, 1:].argmax(-1) == labels[:, None]).float()  # the chosen cells' vectors
    log_probs = out["log_probs"]
    reinforce = -((reward - baseline)[:, None] * log_probs).sum(1).mean()
    per_feature = -((own - baseline) * log_probs).sum(1).mean()
    loss = (CLASS_WEIGHTS[0] * individual + CLASS_WEIGHTS[1] * final
            + RL_WEIGHT * (reinforce + per_feature))
    return loss, {"loss": loss.item(), "final_ce": final.item(),
                  "individual_ce": individual.item(), "reward": reward.mean().item(),
                  "feature_reward": own.mean().item()}


def update_baseline(baseline: float, reward: float) -> float:
    """TNet's moving-average baseline (decay 0.9)."""
    return BASELINE_DECAY * baseline + (1 - BASELINE_DECAY) * reward


def level_features(bank: MultiScaleBank, index: np.ndarray,
                   device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Every level's features of images ``index`` as ``[B, cells, D]`` float32."""
    return [torch.from_numpy(np.asarray(level.bank.features[index], dtype=np.float32))
            .flatten(2).transpose(1, 2).contiguous().to(device) for level in bank.levels]


@torch.no_grad()
def evaluate_tnet(net: TNet, bank: MultiScaleBank, batch_size: int = 1024,
                  max_images: int | None = None,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """Test error of TNet's own classifier and of the env's readout of the same cells
    (``MultiScale-v0``: level 0's vote plus the chosen cells' BagNet logits), on the first
    ``max_images`` images (all by default)."""
    net.eval()
    n = bank.num_images if max_images is None else min(max_images, bank.num_images)
    own = readout = 0
    k = bank.levels[0].bank.num_classes
    for start in range(0, n, batch_size):
        index = np.arange(start, min(n, start + batch_size))
        out = net(level_features(bank, index, device))
        labels = torch.from_numpy(np.asarray(bank.labels[index])).to(device)
        own += int((out["logits"].argmax(1) == labels).sum())
        total = torch.from_numpy(np.asarray(bank.levels[0].bank.logits[index], np.float64)
                                 ).flatten(2).mean(2)
        for level, cells in enumerate(out["chosen"], 1):
            logits = torch.from_numpy(np.asarray(bank.levels[level].bank.logits[index],
                                                 np.float64)).flatten(2)  # [B, K, cells]
            total += logits.gather(2, cells.cpu()[:, None, :].expand(-1, k, -1)).sum(2)
        readout += int((total.argmax(1) == labels.cpu()).sum())
    net.train()
    return {"num_images": n, "error": 1 - own / n, "readout_error": 1 - readout / n}


def trained_for(ckpt: dict[str, Any], bank: MultiScaleBank, path: str | Path) -> Geometry:
    """``bank``'s :class:`Geometry`, after checking that checkpoint ``ckpt`` (read from
    ``path``) was trained on banks of the same levels and BagNet
    (:class:`~glimpse_gym.errors.UsageError` otherwise)."""
    from glimpse_gym.errors import UsageError

    geometry = Geometry.of(bank)
    model = bank.model_hash
    if ckpt["geometry"] != geometry.describe() or ckpt["bank"] != model:
        raise UsageError(f"{path} was trained on multi-scale banks with {ckpt['geometry']} "
                         f"(BagNet {ckpt['bank']}); this bank has {geometry.describe()} "
                         f"(BagNet {model})")
    return geometry


def load_tnet(path: str | Path, bank: MultiScaleBank,
              device: torch.device | str = "cpu") -> TNet:
    """A TNet checkpoint (``last.pt`` / ``best.pt`` of ``glimpse train tnet``) for ``bank``:
    :class:`~glimpse_gym.errors.CheckpointError` when it is damaged or not a TNet's,
    :class:`~glimpse_gym.errors.UsageError` when it was trained on other levels or another
    BagNet."""
    from glimpse_gym.fileio import load_payload

    ckpt = load_payload(path, FORMAT, "TNet", device)
    geometry = trained_for(ckpt, bank, path)
    net = TNet(geometry, tuple(ckpt["locations"]), hidden=ckpt["hidden"]).to(device)
    net.load_state_dict(ckpt["state_dict"])
    return net.eval()


__all__ = ["FORMAT", "Geometry", "TNet", "evaluate_tnet", "level_features", "load_tnet",
           "sinusoids", "tnet_loss", "trained_for", "update_baseline"]
