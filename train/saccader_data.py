"""The Saccader trainer's view of a split: its arrays as tensors, in memory or read per batch."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from glimpse_gym.envs.source import GlimpseSource
from glimpse_gym.envs.tables import fits_in_memory


class SaccaderSplit:
    """A split's arrays as tensors: what-features ``[N, D, H, W]`` (float16, converted per
    batch), BagNet logits ``[N, K, H, W]`` and labels, held in memory when they take at most
    half the free memory (of the host, or the GPU's), else read batch by batch from the
    bank's files."""

    def __init__(self, source: GlimpseSource, device: torch.device) -> None:
        self.source = source
        self.labels = torch.from_numpy(np.array(source.labels)).to(device)
        self.device = device
        need = sum(math.prod(a.shape) * a.dtype.itemsize for a in (source.features,
                                                                    source.logits))
        self.features = self.logits = None  # read per batch
        if fits_in_memory(need, None, device, "the split's features and logits"):
            self.features = torch.from_numpy(np.array(source.features)).to(device)
            self.logits = torch.from_numpy(np.array(source.logits, dtype=np.float32)).to(device)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                limit: int | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(features [B, D, H, W] float32, logits [B, K, H, W], labels [B])`` batches, in
        a random order from ``generator`` (else in order), of the first ``limit`` images."""
        n = len(self) if limit is None else min(limit, len(self))
        order = (torch.randperm(len(self), generator=generator)[:n] if generator is not None
                 else torch.arange(n))
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size].to(self.device)
            if self.features is None:  # from the bank's files (a bank larger than memory)
                rows = idx.cpu().numpy()
                yield (torch.from_numpy(np.asarray(self.source.features[rows], np.float32)
                                        ).to(self.device),
                       torch.from_numpy(np.asarray(self.source.logits[rows], np.float32)
                                        ).to(self.device),
                       self.labels[idx])
                continue
            yield self.features[idx].float(), self.logits[idx], self.labels[idx]


__all__ = ["SaccaderSplit"]
