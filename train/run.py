"""What every heavy command does the same way: its common options, device and threads, the
banks it reads, the output folder, and writing and announcing its results.

- :class:`RunOptions`, :class:`TrainOptions` and :class:`AgentOptions`: the options every run,
  every resumable training and every agent trainer has (the commands' configs extend them);
  :class:`SaccaderOptions`: those of both Saccader trainers;
- :func:`setup` resolves ``--device`` and applies ``--threads``;
- :func:`split_source` says where a split of ``--banks`` is (or the embedded default's);
- :func:`prepare_out` refuses to write over a finished run (``results.json`` or the final
  file there) or an unfinished one (its checkpoints) unless ``--overwrite`` (start again) or
  ``--resume`` (continue) says so, and checks that ``--resume`` has something to continue;
- :func:`write_results` writes ``results.json``; :func:`report` prints the files a command
  wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glimpse_gym.device import resolve_device
from glimpse_gym.errors import UsageError
from glimpse_gym.fileio import write_json


@dataclass
class RunOptions:
    """The options every heavy command has (``--help`` lists them after its own)."""

    out: str = "runs/out"
    """output folder"""
    overwrite: bool = False
    """replace what an earlier run left in --out"""
    seed: int = 0
    """seed of everything random in the run"""
    device: str = "auto"
    """auto (CUDA when present), cpu, cuda or cuda:N"""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)"""
    progress: bool = True
    """show progress bars"""


@dataclass
class TrainOptions(RunOptions):
    """A training that checkpoints as it goes and can be continued."""

    resume: bool = False
    """continue the interrupted run in --out from its last checkpoint"""


@dataclass
class AgentOptions(TrainOptions):
    """An agent trained on the banks of one BagNet."""

    banks: str | None = None
    """folder with train/, val/ and test/ feature banks (default: the embedded digits model)"""
    glimpses: int = 6
    """T, glimpses per episode"""
    eval_images: int = 5000
    """val images per evaluation (all of them when the split is smaller)"""


@dataclass
class SaccaderOptions:
    """The Saccader's network and training options, on one grid and across scales."""

    location_glimpses: int = 12
    """glimpses of step 2 (the location pretraining)"""
    batch_size: int = 256
    """images per batch"""
    lr: float = 1e-3
    """Adam learning rate (step 3 uses a cosine decay from it)"""
    l2: float = 8e-5
    """L2 penalty on the weights in step 3"""
    where_channels: int = 64
    """width of the where network"""
    mixed_channels: int = 64
    """channels of the mixed features"""


def split_source(banks: str | Path | None, split: str) -> dict[str, Any]:
    """The environment arguments of split ``split`` of ``--banks`` (``banks/split``), or of
    the embedded default's split when ``banks`` is None."""
    if banks is None:
        return {"bank": None, "split": split}
    return {"bank": str(Path(banks).expanduser() / split)}


def setup(device: str, threads: int | None) -> torch.device:
    """The torch device of ``--device``; ``--threads`` (when given) set for torch."""
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be a positive integer, got {threads}")
        torch.set_num_threads(threads)
    return resolve_device(device)


def prepare_out(out: str | Path, *, finished: Iterable[str] = ("results.json",),
                checkpoints: Iterable[str] = (), resume: bool = False,
                overwrite: bool = False) -> Path:
    """Check the output folder ``out`` before a run writes to it, then create it.

    Args:
        out: the run's folder.
        finished: files whose presence means the run finished.
        checkpoints: files a run writes as it goes (an unfinished run, or what ``--resume``
            continues).
        resume: the run continues ``checkpoints``.
        overwrite: the run may replace what is there.

    Raises:
        UsageError: saying what is in ``out`` and which option to pass.
    """
    out = Path(out).expanduser()
    if resume and overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite starts it again: "
                         "pass one of them")
    checkpoints = list(checkpoints)
    if resume:
        if checkpoints and not any((out / c).exists() for c in checkpoints):
            raise UsageError(f"--resume: nothing to continue in {out} (no "
                             f"{' or '.join(checkpoints)}); run without --resume to start")
    elif not overwrite:
        done = [f for f in finished if (out / f).exists()]
        begun = [c for c in checkpoints if (out / c).exists()]
        if done:
            raise UsageError(f"{out} holds a finished run ({', '.join(done)}); pass --overwrite "
                             "to replace it, or choose another --out")
        if begun:
            raise UsageError(f"{out} holds an unfinished run ({', '.join(begun)}); pass --resume "
                             "to continue it, --overwrite to start again, or another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, no permission, ...
        raise UsageError(f"cannot use {out} as the output folder: "
                         f"{exc.strerror or exc}") from None
    return out


def write_results(out: str | Path, results: dict[str, Any], files: Iterable[str]) -> None:
    """Write ``OUT/results.json`` (atomically) and print where every output went."""
    write_json(Path(out) / "results.json", results)
    report(out, ["results.json", *files])


def report(out: str | Path, names: Iterable[str]) -> None:
    """Print ``wrote: OUT/{a, b, ...}`` for the files a command wrote."""
    out = Path(out)
    present = [n for n in names if (out / n).exists()]
    print(f"wrote: {out}/ ({', '.join(present)})" if present else f"wrote: {out}")
