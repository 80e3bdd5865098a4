"""Classifying an image from a few glimpsed cells, as Saccader does.

The prediction after glimpses at cells ``c_1..c_T`` is the argmax of the mean of the BagNet
logits at those cells. Cells are row-major indices into the ``H' x W'`` grid.
"""

from __future__ import annotations

import numpy as np
import torch


def cell_logits(logits: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Gather per-cell logits: ``logits [N, K, H, W]``, ``cells [N, T]`` -> ``[N, T, K]``."""
    n, k = logits.shape[:2]
    flat = logits.reshape(n, k, -1)
    return flat.gather(2, cells[:, None, :].expand(-1, k, -1)).transpose(1, 2)


def predict_from_cells(logits: torch.Tensor | np.ndarray,
                       cells: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``[N]`` predictions: argmax over classes of the mean logits at ``cells [N, T]``."""
    logits = logits if torch.is_tensor(logits) else torch.from_numpy(np.array(logits))
    cells = torch.as_tensor(cells).long()
    return cell_logits(logits.float(), cells).mean(dim=1).argmax(dim=1)


def ordered_logit_cells(logits: torch.Tensor, num: int) -> torch.Tensor:
    """``[N, num]`` cells with the largest logit of the image-level predicted class, best first.

    The "ordered logits" policy of Elsayed et al. 2019 (greedy, no learning).
    """
    n, k = logits.shape[:2]
    flat = logits.reshape(n, k, -1).float()
    predicted = flat.mean(dim=2).argmax(dim=1)
    class_map = flat.gather(1, predicted[:, None, None].expand(-1, 1, flat.shape[2]))[:, 0]
    return class_map.topk(num, dim=1).indices


def random_cells(num_images: int, num_cells: int, num: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``[N, num]`` distinct cells drawn uniformly for each image."""
    scores = torch.rand(num_images, num_cells, generator=generator)
    return scores.topk(num, dim=1).indices
