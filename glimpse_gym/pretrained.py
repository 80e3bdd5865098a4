"""The embedded default: a small BagNet trained on ``digits``, shipped with the package.

It was produced by this package's own ``glimpse pretrain-bagnet`` (docs/bagnets-and-banks.md,
"The embedded default"), so everything downstream runs offline with no training first.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "digits_bagnet.pt"


def default_checkpoint() -> Path:
    """Path of the embedded digits BagNet checkpoint."""
    if not DEFAULT_CHECKPOINT.is_file():
        raise FileNotFoundError(f"the embedded default weights are missing at "
                                f"{DEFAULT_CHECKPOINT}; reinstall glimpse-gym or run "
                                "'make default-weights'")
    return DEFAULT_CHECKPOINT


def resolve_checkpoint(spec: str | Path) -> Path:
    """``"default"`` is the embedded checkpoint, a task's name (see :mod:`glimpse_gym.tasks`)
    its shipped BagNet; anything else is a path."""
    from glimpse_gym.tasks import TASKS

    if str(spec) == "default":
        return default_checkpoint()
    if str(spec) in TASKS:
        task = TASKS[str(spec)]
        if not task.shipped:
            raise FileNotFoundError(f"this installation has no BagNet for the task "
                                    f"{task.name!r} ({task.weights_path} is missing); pass a "
                                    "checkpoint path, or reinstall glimpse-gym")
        return task.weights_path
    return Path(spec).expanduser()
