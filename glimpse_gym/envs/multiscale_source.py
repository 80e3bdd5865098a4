"""The multi-scale bank of a standard task, from the user cache (``MultiScale-<Task>-v0``).

The first make of a task's split on a machine runs the task's shipped BagNets over the split
(``root`` says where the dataset's files are): the one trained across scales for the levels
below the full size, the task's full-size BagNet for the full size (a level from a BagNet of
its own, :func:`~glimpse_gym.multiscale.write_multiscale_bank`). It writes the multi-scale
bank into the user cache, with a progress bar on large splits; later makes open it (checked) and
need neither the files nor ``root``. A damaged cached bank is written again, with a warning.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

from glimpse_gym.bagnet import load_bagnet
from glimpse_gym.envs.source import PROGRESS_FROM, _dataset, default_bank_path
from glimpse_gym.errors import BankError, UsageError
from glimpse_gym.multiscale import META, MultiScaleBank, write_multiscale_bank
from glimpse_gym.pretrained import WEIGHTS_DIR


@functools.lru_cache(maxsize=8)
def task_multiscale_bank(task: str, split: str = "train", root: str | None = None,
                         max_images: int | None = None) -> MultiScaleBank:
    """The multi-scale bank of ``task``'s ``split`` (its first ``max_images`` images)."""
    from glimpse_gym.tasks import TASKS

    if task not in TASKS or not TASKS[task].multiscale_shipped:
        have = [t.name for t in TASKS.values() if t.multiscale_shipped]
        raise UsageError(f"no BagNet across scales is shipped for the task {task!r}; tasks "
                         f"with one: {', '.join(have) or 'none'}")
    t = TASKS[task]
    model, ckpt = load_bagnet(WEIGHTS_DIR / t.multiscale_weights)
    full = load_bagnet(t.weights_path)
    # both BagNets name the cached bank
    options = {**t.data_options, "scales": list(t.scales), "full_size": full[1]["model_hash"]}
    path = default_bank_path(t.dataset, split, ckpt["model_hash"], 0, options, max_images)
    want = [ckpt["model_hash"]] * (len(t.scales) - 1) + [full[1]["model_hash"]]
    try:
        bank = MultiScaleBank.load(path)
        if [lv.bank.meta["model"]["hash"] for lv in bank.levels] != want:
            raise BankError(f"{path}: its levels were not written by the task's BagNets")
        return bank
    except BankError as exc:  # not made yet, damaged or not the task's: made again
        if Path(path, META).exists():
            warnings.warn(f"the cached multi-scale bank is unusable and is made again: {exc}",
                          stacklevel=3)
    data = _dataset(t.dataset, split, 0, root, dict(t.data_options), max_images)
    return write_multiscale_bank(model, data, path, t.scales, checkpoint=ckpt, overwrite=True,
                                 dataset_options={"seed": 0, **t.data_options},
                                 progress=len(data) >= PROGRESS_FROM, level_bagnets={1.0: full})


__all__ = ["task_multiscale_bank"]
