"""Rankings of cells that policies and trainers share (batched, on tensors).

The readout itself, what the env predicts from the glimpsed cells, is a rule: see
:mod:`glimpse_gym.rules`. Cells are row-major indices into the ``H x W`` grid.
"""

from __future__ import annotations

import torch


def class_scores(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``[N, H*W]``: each cell's logit of ``classes [N]`` in ``logits [N, K, H, W]``."""
    flat = logits.reshape(*logits.shape[:2], -1).float()
    return flat.gather(1, classes[:, None, None].expand(-1, 1, flat.shape[2]))[:, 0]


def ordered_logit_scores(logits: torch.Tensor) -> torch.Tensor:
    """``[N, H*W]``: each cell's logit of the class the whole image predicts (the argmax of
    the mean of all cells' logits). Ranking cells by it is Elsayed et al. 2019's greedy
    "ordered logits" policy."""
    predicted = logits.reshape(*logits.shape[:2], -1).float().mean(dim=2).argmax(dim=1)
    return class_scores(logits, predicted)


def ordered_logit_cells(logits: torch.Tensor, num: int) -> torch.Tensor:
    """``[N, num]`` cells with the largest :func:`ordered_logit_scores`, best first."""
    return ordered_logit_scores(logits).topk(num, dim=1).indices


def random_cells(num_images: int, num_cells: int, num: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``[N, num]`` distinct cells drawn uniformly for each image."""
    scores = torch.rand(num_images, num_cells, generator=generator)
    return scores.topk(num, dim=1).indices
