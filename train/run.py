"""What every heavy command does the same way: device and threads, the output folder, and
saying where its outputs went.

- :func:`setup` resolves ``--device`` and applies ``--threads``;
- :func:`prepare_out` refuses to write over a finished run (``results.json`` or the final
  file there) or an unfinished one (its checkpoints) unless ``--overwrite`` (start again) or
  ``--resume`` (continue) says so, and checks that ``--resume`` has something to continue;
- :func:`report` prints the files a command wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from glimpse_gym.device import resolve_device
from glimpse_gym.errors import UsageError


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


def report(out: str | Path, names: Iterable[str]) -> None:
    """Print ``wrote: OUT/{a, b, ...}`` for the files a command wrote."""
    out = Path(out)
    present = [n for n in names if (out / n).exists()]
    print(f"wrote: {out}/ ({', '.join(present)})" if present else f"wrote: {out}")
