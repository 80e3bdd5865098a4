"""What each kind of attention marks: rankings of a grid's cells, and deletion and insertion
curves through the full-image BagNet.

A ranking orders an image's cells (row-major indices of the BagNet grid) from most to least
important, by one of:

- a policy's glimpses, in the order taken (its :class:`~agents.evaluation.PolicyRun` cells);
- a soft attention map of a small BagNet's NAM or ADCM block (:func:`attention_ranking`:
  the map at the block, averaged over channels where it has them);
- gradient saliency of the full-image BagNet (:func:`saliency_ranking`: the summed
  ``|d logit / d pixel|`` of the predicted class over each cell's receptive field);
- the cells' own logits, or random cells (:mod:`agents.policies`).

:func:`deletion_insertion` then blanks the receptive fields of each ranking's first T cells
(deletion: how much the BagNet's accuracy drops) or blanks everything else (insertion: what
the top T cells alone support), for T = 1..Tmax.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agents.evaluation import occlude
from glimpse_gym.bagnet import BagNetBase, image_logits, preprocess

ATTENTION_BLOCKS = ("nam", "nam_spatial", "adcm")
"""the soft-attention blocks of a small BagNet, in the order they run"""


def top_cells(scores: torch.Tensor, tmax: int) -> torch.Tensor:
    """``[N, H', W']`` scores -> ``[N, tmax]`` cell indices, highest first (ties: the lower
    index first)."""
    return torch.sort(-scores.flatten(1), dim=1, stable=True).indices[:, :tmax]


@torch.no_grad()
def attention_map(model: BagNetBase, x: torch.Tensor, block: str) -> torch.Tensor:
    """``[N, H', W']``: the attention of ``model``'s ``block`` (one of
    :data:`ATTENTION_BLOCKS`) on normalised images ``x``, averaged over channels (ADCM's
    position map, on the what-features, as it is). The blocks before it run as at test
    time."""
    if block not in ATTENTION_BLOCKS:
        raise ValueError(f"block must be one of {ATTENTION_BLOCKS}, got {block!r}")
    if getattr(model, block, None) is None:
        raise ValueError(f"this BagNet has no {block} block (pretrain-bagnet --"
                         f"{block.replace('_', '-')})")
    model.eval()
    if block == "adcm":  # on the what-features, before the classifier
        return model.adcm.attention(model.trunk(x))[1].mean(dim=1)
    h = model.layers(x)
    for name in ("nam", "nam_spatial"):
        module = getattr(model, name, None)
        if name == block:
            return module.attention(h).mean(dim=1)
        if module is not None:
            h = module(h)
    raise AssertionError("unreachable")


def attention_ranking(model: BagNetBase, images: Any, mean: Any, std: Any, block: str,
                      tmax: int, batch: int = 256, device: str | torch.device = "cpu"
                      ) -> torch.Tensor:
    """``[N, tmax]`` cells ranked by :func:`attention_map` of uint8 ``images``."""
    out = []
    for s in range(0, len(images), batch):
        x = preprocess(torch.from_numpy(np.array(images[s:s + batch])), mean, std, device)
        out.append(top_cells(attention_map(model, x, block).cpu(), tmax))
    return torch.cat(out)


def saliency_ranking(model: BagNetBase, images: Any, mean: Any, std: Any, tmax: int,
                     batch: int = 256, device: str | torch.device = "cpu") -> torch.Tensor:
    """``[N, tmax]`` cells ranked by gradient saliency: for each image, ``|d l / d x|`` of the
    predicted class's image-level logit ``l``, summed over channels and averaged over each
    cell's receptive field (a ``rf x rf`` window at ``stride``: the cells' own boxes, all of
    one size, so the ranking is that of the sums)."""
    model.eval()
    out = []
    for s in range(0, len(images), batch):
        x = preprocess(torch.from_numpy(np.array(images[s:s + batch])), mean, std, device)
        x.requires_grad_(True)
        logits = image_logits(model(x).logits)
        chosen = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
        (grad,) = torch.autograd.grad(chosen, x)
        pixels = grad.abs().sum(1, keepdim=True)  # [B, 1, H, W]
        cells = F.avg_pool2d(pixels, model.rf, model.stride)[:, 0]  # the mean over each box
        grid = tuple(model.grid_size(*x.shape[-2:]))
        if tuple(cells.shape[1:]) != grid:
            raise ValueError(f"the boxes of rf {model.rf} at stride {model.stride} make a "
                             f"{tuple(cells.shape[1:])} grid, the BagNet's is {grid} (a "
                             "padded BagNet): saliency per cell needs unpadded boxes")
        out.append(top_cells(cells.detach().cpu(), tmax))
    return torch.cat(out)


@torch.no_grad()
def deletion_insertion(model: BagNetBase, mean: Any, std: Any, images: Any,
                       labels: torch.Tensor, cells: torch.Tensor, cell_boxes: np.ndarray,
                       tmax: int, batch: int = 500, device: str | torch.device = "cpu"
                       ) -> dict[str, list[float]]:
    """The full-image BagNet's accuracy with the receptive fields of the first T cells of
    ``cells [N, >= tmax]`` blanked (``deletion``) and with everything but them blanked
    (``insertion``), for T = 1..tmax, and on the clean images (``clean``); ``area``: the mean
    fraction of the image those T cells' receptive fields cover (overlapping boxes, or a
    cell ranked twice, cover less than T boxes)."""
    model.eval()
    boxes = torch.as_tensor(cell_boxes, dtype=torch.long)
    n = len(labels)
    hits = {"deletion": np.zeros(tmax), "insertion": np.zeros(tmax), "clean": np.zeros(1),
            "area": np.zeros(tmax)}

    def correct(x: torch.Tensor, y: torch.Tensor) -> int:
        out = model(preprocess(x, mean, std, device))
        return int((image_logits(out.logits).argmax(dim=1) == y).sum())

    for s in range(0, n, batch):
        imgs = torch.from_numpy(np.array(images[s:s + batch]))
        y = labels[s:s + batch].to(device)
        hits["clean"][0] += correct(imgs, y)
        for t in range(1, tmax + 1):
            blanked, mask = occlude(imgs, boxes[cells[s:s + batch, :t]])
            hits["deletion"][t - 1] += correct(blanked, y)
            hits["insertion"][t - 1] += correct(imgs.masked_fill(~mask[:, None], 0), y)
            hits["area"][t - 1] += float(mask.flatten(1).float().mean(1).sum())
    return {k: (v / max(n, 1)).tolist() for k, v in hits.items()}


__all__ = ["ATTENTION_BLOCKS", "attention_map", "attention_ranking", "deletion_insertion",
           "saliency_ranking", "top_cells"]
