"""Writing one feature bank from several processes (``torchrun``), committed once.

:func:`write_bank_distributed` is :func:`~glimpse_gym.bank_write.write_bank` split over the
ranks of a process group: rank 0 makes the temporary folder beside the target, every rank
writes its parts into it (parts ``rank``, ``rank + world``, ... of ``shard_images`` images:
the same parts, byte for byte, as one process writes with the same ``shard_images``), the
ranks exchange each part's figures, and rank 0 alone writes ``meta.json`` and renames the
folder into place. Until then nothing is at the target: a rank that fails or is killed
leaves no bank there (the temporary folder of a killed run is removed by the next write).
Every rank must see the same file system at the target (one machine, or a shared one).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from glimpse_gym.bagnet.common import BagNetBase
from glimpse_gym.bank import FeatureBank
from glimpse_gym.bank_write import BankPlan, commit, write_part
from glimpse_gym.datasets import ImageDataset
from glimpse_gym.distributed import Distributed


def write_bank_distributed(model: BagNetBase, dataset: ImageDataset, out: str | Path, *,
                           group: Distributed, checkpoint: dict[str, Any],
                           batch_size: int = 512, store_images: bool = True,
                           overwrite: bool = False,
                           dataset_options: dict[str, Any] | None = None,
                           num_workers: int = 0, progress: bool = True,
                           shard_images: int | None = None, feature_dtype: str = "float16",
                           store_logits: bool = True, channels_last: bool = False,
                           autocast: bool = False) -> FeatureBank | None:
    """Write the bank of :func:`~glimpse_gym.bank_write.write_bank` with every rank of
    ``group`` (on ``group.device``); return it on rank 0, None on the others.

    ``shard_images`` defaults to ``ceil(N / world)`` (one part per rank).
    """
    device = group.device
    model = model.eval().to(device)
    if shard_images is None:
        shard_images = max(1, math.ceil(len(dataset) / group.world))
    plan = BankPlan.make(model, dataset, out, checkpoint=checkpoint, store_images=store_images,
                         overwrite=overwrite, dataset_options=dataset_options,
                         shard_images=shard_images, feature_dtype=feature_dtype,
                         store_logits=store_logits, channels_last=channels_last,
                         batch_size=batch_size, device=device, autocast=autocast,
                         calibrate_scales=group.leader)
    if feature_dtype == "int8":  # every rank quantizes with rank 0's scales
        plan.scale = np.asarray(group.broadcast(plan.scale), np.float32)
    tmp = plan.open() if group.leader else None
    tmp = Path(group.broadcast(None if tmp is None else str(tmp)))
    mine = list(range(group.rank, len(plan.shards), group.world))
    try:
        t0 = time.perf_counter()
        with tqdm(total=sum(plan.shards[i] for i in mine), unit="img",
                  desc=f"extract {dataset.split} (rank {group.rank}/{group.world})",
                  disable=not (progress and group.leader), leave=False) as bar:
            figures = [write_part(plan, i, model, dataset, tmp, batch_size=batch_size,
                                  device=device, num_workers=num_workers, bar=bar)
                       for i in mine]
        everyone = [f for rank in group.gather(figures) for f in rank]
        if group.leader:
            commit(plan, model, tmp, everyone, time.perf_counter() - t0)
    except BaseException:
        if group.leader:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    group.barrier()  # the bank is in place for every rank
    return FeatureBank.load(plan.out) if group.leader else None


__all__ = ["write_bank_distributed"]
