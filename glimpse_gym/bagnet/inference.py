"""Running a BagNet over a dataset: normalisation, batching and evaluation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from glimpse_gym.bagnet.common import BagNetBase, image_logits
from glimpse_gym.datasets import ImageDataset


def preprocess(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
               device: torch.device | str = "cpu") -> torch.Tensor:
    """``[N, C, H, W] uint8`` -> float32 on ``device``, scaled to [0, 1] then normalised."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def iterate_batches(dataset: ImageDataset, batch_size: int, *, num_workers: int = 0,
                    indices: torch.Tensor | None = None
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images [B, C, H, W] uint8, labels [B] int64)`` in order (or of ``indices``).

    In-memory datasets are sliced directly; others go through a DataLoader.
    """
    if dataset.in_memory:
        order = torch.arange(len(dataset)) if indices is None else indices
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield dataset.images[idx], dataset.labels[idx]
        return
    subset = dataset if indices is None else torch.utils.data.Subset(dataset, indices.tolist())
    loader = DataLoader(subset, batch_size=batch_size, num_workers=num_workers)
    for images, labels in loader:
        yield images, labels.long()


@torch.no_grad()
def evaluate_bagnet(model: BagNetBase, dataset: ImageDataset, mean: Sequence[float],
                    std: Sequence[float], device: torch.device | str = "cpu",
                    batch_size: int = 256, num_workers: int = 0,
                    per_image: bool = False) -> dict[str, Any]:
    """Image-level and per-cell accuracy of ``model`` on ``dataset``.

    Returns:
        ``image_acc`` (argmax of the mean cell logits), ``image_error`` (= 1 - image_acc),
        ``cell_acc`` (fraction of cells whose own argmax is the label), ``loss`` (per-cell
        cross-entropy), ``num_images``; with ``per_image``, also ``correct``: a bool array
        ``[num_images]``, True where the image-level prediction is right (for paired
        comparisons of two models on the same images).
    """
    was_training = model.training
    model.eval()
    correct = cells_correct = cells = 0
    loss_sum = 0.0
    hits: list[torch.Tensor] = []
    for images, labels in iterate_batches(dataset, batch_size, num_workers=num_workers):
        x = preprocess(images, mean, std, device)
        y = labels.to(device)
        logits = model(x).logits
        h, w = logits.shape[2:]
        target = y[:, None, None].expand(-1, h, w)
        loss_sum += F.cross_entropy(logits, target, reduction="sum").item() / (h * w)
        hit = image_logits(logits).argmax(1) == y
        correct += hit.sum().item()
        if per_image:
            hits.append(hit.cpu())
        cells_correct += (logits.argmax(1) == target).sum().item()
        cells += target.numel()
    model.train(was_training)
    n = len(dataset)
    result: dict[str, Any] = {
        "image_acc": correct / n,
        "image_error": 1 - correct / n,
        "cell_acc": cells_correct / max(cells, 1),
        "loss": loss_sum / n,
        "num_images": n,
    }
    if per_image:
        result["correct"] = torch.cat(hits).numpy() if hits else np.zeros(0, dtype=bool)
    return result
