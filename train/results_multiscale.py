"""``glimpse results --multiscale``: a task's table across scales, over seeds.

The steps, each its own ``glimpse`` command (run, skipped and continued as
:mod:`train.results` does):

1. the task's BagNet trained across the task's scales (``pretrain-bagnet --scales``, one scale
   per batch; the task's epochs) and its multi-scale banks (``extract-features --scales``);
   with ``--bagnet shipped`` no training: banks of two levels from the package's BagNets, the
   half size from the task's BagNet across scales and the full size from its full-size
   BagNet (``extract-features --level-checkpoint``), into ``runs/results/TASK-ms-shipped``;
2. per seed: TNet (``train tnet --locations``), MaskablePPO on ``MultiScale-v0`` (``train
   multiscale-ppo``, the task's T) and the Saccader across scales (``train
   multiscale-saccader``, the task's T, :data:`SACCADER_EPOCHS`);
3. per seed: ``evaluate-multiscale`` of the three, random cells and ordered logits across
   scales, and each level below the first alone (ordered logits, random cells, its whole
   image), error and cost at every T;
4. ``evaluate-multiscale --combine`` over the seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from glimpse_gym.errors import UsageError
from glimpse_gym.pretrained import WEIGHTS_DIR
from glimpse_gym.tasks import TASKS

if TYPE_CHECKING:
    from train.results import ResultsConfig

MULTISCALE = {  # task: (scales, TNet's cells per level below the first)
    "cluttered-mnist": ("0.5,1", "6"),
    "cluttered-fashion": ("0.5,1", "6"),
    "cluttered-mnist-100": ("0.25,0.5,1", "3,5"),
}
"""Each task's scales (a coarse grid of 3x3 cells on 60x60, 2x2 and 8x8 on 100x100) and
TNet's schedule, whose sum is the task's T (as MaskablePPO's): on 60x60, 6 full-size cells;
on 100x100, 3 cells at half size, then 5 at full size."""

SHIPPED_SCALES = "0.5,1"
"""``--bagnet shipped``: the half-size level (the task's BagNet across scales, with its
half-size statistics) and the full size (the task's full-size BagNet); TNet opens the task's
T full-size cells."""

SACCADER_EPOCHS = {"cluttered-mnist": (3, 3), "cluttered-fashion": (3, 3),
                   "cluttered-mnist-100": (1, 2)}
"""The Saccader across scales: epochs of step 2 and of step 3 per task (an epoch on 100x100,
505 action cells, costs several times one on 60x60, 121)."""


def plan_multiscale(cfg: ResultsConfig) -> list[tuple[str, list[str], Path]]:
    """The steps of ``--multiscale`` as ``(name, command, the file that marks it done)``."""
    from train.results import BAGNET_EPOCHS, _glimpse, output_folder

    task = TASKS[cfg.task]
    scales, locations = MULTISCALE[task.name]
    out = output_folder(cfg)
    seeds = cfg.seeds or [0, 1, 2]
    common = ["--threads", str(cfg.threads), "--no-progress", "--overwrite"]
    ckpt = out / "bagnet-s0" / "bagnet.pt"
    opts = [f"--data-option={k}={v}" for k, v in task.data_options.items()]
    banks = out / "banks-s0"
    steps: list[tuple[str, list[str], Path]] = []
    own: list[str] = []  # a BagNet of its own for the full-size level
    if cfg.bagnet == "shipped":
        if not task.multiscale_shipped:
            have = [t.name for t in TASKS.values() if t.multiscale_shipped]
            raise UsageError(f"--multiscale --bagnet shipped: the package ships no BagNet "
                             f"across scales for {task.name!r}; tasks with one: "
                             f"{', '.join(have)}")
        scales, locations = SHIPPED_SCALES, str(task.glimpses)
        ckpt = WEIGHTS_DIR / task.multiscale_weights
        own = ["--level-checkpoint", f"1={task.name}"]
    else:
        steps.append(("bagnet-s0", _glimpse(
            "pretrain-bagnet", "--dataset", task.dataset, *opts, "--root", cfg.root,
            "--epochs", str(cfg.bagnet_epochs or BAGNET_EPOCHS[task.name]), "--image-loss",
            "1", "--scales", scales, "--seed", "0", "--out", str(ckpt), *common),
            ckpt.parent / "metrics.json"))
    steps.append(("banks-s0", _glimpse(
        "extract-features", "--checkpoint", str(ckpt), *own, "--root", cfg.root, "--scales",
        scales, "--out", str(banks), "--no-progress", "--overwrite"),
        banks / "test" / "multiscale.json"))
    for s in seeds:
        folder = out / f"seed{s}"
        steps += [
            (f"tnet-s{s}", _glimpse(
                "train", "tnet", "--banks", str(banks), "--locations", locations, "--seed",
                str(s), "--out", str(folder / "tnet"), *common),
             folder / "tnet" / "results.json"),
            (f"multiscale-ppo-s{s}", _glimpse(
                "train", "multiscale-ppo", "--banks", str(banks), "--glimpses",
                str(task.glimpses), "--n-steps", str(2 * task.glimpses),  # whole episodes
                "--total-timesteps", "600000", "--eval-freq", "150000",
                "--seed", str(s), "--out", str(folder / "multiscale-ppo"), *common),
             folder / "multiscale-ppo" / "results.json"),
            (f"saccader-s{s}", _glimpse(
                "train", "multiscale-saccader", "--banks", str(banks), "--glimpses",
                str(task.glimpses), "--location-epochs", str(SACCADER_EPOCHS[task.name][0]),
                "--policy-epochs", str(SACCADER_EPOCHS[task.name][1]), "--seed", str(s), "--out",
                str(folder / "saccader"), *common),
             folder / "saccader" / "results.json"),
            (f"evaluate-s{s}", _glimpse(
                "evaluate-multiscale", "--bank", str(banks / "test"), "--policy", "random",
                "--policy", "ordered-logits",
                "--policy", f"tnet={folder / 'tnet' / 'best.pt'}", "--policy",
                f"multiscale-ppo={folder / 'multiscale-ppo' / 'best.zip'}", "--policy",
                f"saccader={folder / 'saccader' / 'best.pt'}", "--max-glimpses",
                str(task.glimpses), "--seed", str(s), "--out", str(out / "eval" / f"seed{s}"),
                *common), out / "eval" / f"seed{s}" / "results.json")]
    steps.append(("combine", _glimpse(
        "evaluate-multiscale", *[f"--combine={out / 'eval' / f'seed{s}'}" for s in seeds],
        "--out", str(out / "eval" / "combined"), "--overwrite"),
        out / "eval" / "combined" / "results.json"))
    return steps


__all__ = ["MULTISCALE", "SACCADER_EPOCHS", "SHIPPED_SCALES", "plan_multiscale"]
