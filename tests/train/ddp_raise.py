"""Run under torchrun by ``test_distributed.py``: a bank written by 2 processes where rank 1's
BagNet raises in its first forward pass."""

from __future__ import annotations

import sys

import torch

from glimpse_gym.bagnet import load_bagnet
from glimpse_gym.bank_parallel import write_bank_distributed
from glimpse_gym.datasets import make_dataset
from glimpse_gym.distributed import process_group
from glimpse_gym.pretrained import default_checkpoint


def _broken(x: torch.Tensor) -> None:
    raise RuntimeError("rank 1: a broken batch")


if __name__ == "__main__":
    torch.set_num_threads(1)
    with process_group(torch.device("cpu")) as group:
        model, ckpt = load_bagnet(default_checkpoint())
        if group.rank == 1:
            model.forward = _broken
        write_bank_distributed(model, make_dataset("digits", "val"), sys.argv[1], group=group,
                               checkpoint=ckpt, shard_images=20, progress=False)
