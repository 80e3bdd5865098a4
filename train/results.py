"""``glimpse results``: a standard task's whole table, over seeds, from one command.

For a task (``glimpse_gym.tasks``) it runs, in order, each step as its own ``glimpse``
command with its log in ``OUT/logs/``:

1. the BagNet: trained with ``pretrain-bagnet`` (``--bagnet train``), or the package's
   shipped weights (``--bagnet shipped``, no training), then its feature banks;
2. per seed: MaskablePPO, PPO, REINFORCE and the Saccader's steps 2-3 on those banks, each
   trained with the task's T (``Task.glimpses``: 6, and 8 on 100x100);
3. per seed: ``evaluate`` of every policy with the non-learned ones and the full image
   (the occlusion test with the task's T);
4. ``evaluate --combine`` over the seeds: mean, spread, 95 % intervals, differences.

With ``--finetune-epochs N`` each seed's Saccader also runs the paper's step 3 (``train
saccader --stage finetune``: the Saccader and the BagNet trained together on the images, new
banks from the fine-tuned BagNet), is evaluated on its own fine-tuned banks into
``OUT/eval-finetuned/seedK`` and combined over the seeds; ``OUT/eval-finetuned/versus-fixed-
bank.json`` gives the fine-tuned minus the fixed-bank Saccader's error at every T, with its
95 % interval over the seeds.

With ``--bagnet train`` and ``--bagnet-per-seed``, seed k also trains its own BagNet (seed
k), so the spread includes the representation's. A step whose output is already there is
skipped, and a trainer cut short continues from its last checkpoint (``--resume``), so an
interrupted run continues where it stopped (``--overwrite`` redoes all). Single seeds may run
side by side into one folder once its banks exist; a last run of all seeds combines them.
``OUT/timings.json`` records each step's wall time.

``--attention nam|nam-spatial|adcm`` trains the BagNets with that soft-attention block
(``pretrain-bagnet --nam``, ``--nam --nam-spatial``, ``--adcm``) into
``runs/results/TASK-ATTENTION``; ``--interpretability`` adds the deletion and insertion test
to each seed's evaluation (with the BagNet's own attention maps among the rankings, named
``attention:BLOCK``) and combines it over the seeds; ``--agent-option NAME=OPTION`` passes
an option to one agent's trainer (``saccader=--policy-epochs=2``). ``glimpse ablation`` runs
this for every attention block side by side.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glimpse_gym.errors import UsageError
from glimpse_gym.fileio import atomic_write
from glimpse_gym.tasks import TASKS

AGENTS = {  # name: (glimpse subcommand, options, the policy file evaluate loads)
    "saccader": (["train", "saccader"], [], "policy.pt"),
    "maskable-ppo": (["train", "maskable-ppo"], ["--total-timesteps", "600000",
                                                 "--eval-freq", "150000"], "last.zip"),
    "ppo": (["train", "ppo"], ["--total-timesteps", "600000", "--eval-freq", "150000"],
            "last.zip"),
    "reinforce": (["train", "reinforce"], ["--iterations", "3000", "--eval-every", "500"],
                  "best.pt"),
}
BAGNET_EPOCHS = {"cluttered-mnist": 15, "cluttered-mnist-100": 7, "cluttered-fashion": 7}
"""Epochs of the BagNet each task's published table was made with."""
TASK_AGENT_OPTIONS = {
    "cluttered-mnist-100": {"saccader": ["--location-epochs", "1", "--policy-epochs", "3"]},
}
"""Options of an agent on one task, after the agent's own: on 100x100 (441 cells, T = 8) a
Saccader epoch costs about 7x one on 60x60, so it trains 1 + 3 epochs instead of 3 + 10."""
ATTENTION = {"plain": [], "nam": ["--nam"], "nam-spatial": ["--nam", "--nam-spatial"],
             "adcm": ["--adcm"]}
"""The soft-attention blocks a trained BagNet may have: ``pretrain-bagnet`` options."""


@dataclass
class ResultsConfig:
    """Options of ``glimpse results``."""

    task: str = "cluttered-mnist"
    """the task: cluttered-mnist, cluttered-mnist-100 or cluttered-fashion"""
    root: str = "../shared/data"
    """folder holding the dataset's files (torchvision layout)"""
    seeds: list[int] = field(default_factory=list)
    """training seeds of the agents (repeatable; default: 0, 1 and 2)"""
    bagnet: str = "train"
    """train: train the task's BagNet first; shipped: use the weights the package ships"""
    bagnet_per_seed: bool = False
    """with --bagnet train: seed k also trains its own BagNet (seed k)"""
    bagnet_epochs: int | None = None
    """epochs of the BagNet (default: the task's published recipe)"""
    agents: list[str] = field(default_factory=list)
    """agents to train (repeatable; default: saccader, maskable-ppo, ppo, reinforce)"""
    out: str | None = None
    """output folder (default: runs/results/TASK, with -ms after it for --multiscale and
    -shipped for --bagnet shipped)"""
    overwrite: bool = False
    """redo every step, even those whose output is there"""
    threads: int = 2
    """torch CPU threads of each step"""
    finetune_epochs: int = 0
    """also run the paper's step 3 on each seed's Saccader for this many epochs (the BagNet
    fine-tuned with it on the images), evaluated into OUT/eval-finetuned (0: not run)"""
    multiscale: bool = False
    """the task across scales instead (a BagNet trained across scales, multi-scale banks,
    TNet, MaskablePPO and the Saccader on MultiScale-v0, evaluated against each level
    alone) into runs/results/TASK-ms; with --bagnet shipped the package's BagNets, the half
    size from the one across scales and the full size from the full-size one, into
    runs/results/TASK-ms-shipped"""
    attention: str = "plain"
    """with --bagnet train: the BagNets' soft-attention block: plain (none), nam (NAM's
    channel branch), nam-spatial (NAM's channel and spatial branches) or adcm"""
    agent_option: list[str] = field(default_factory=list)
    """NAME=OPTION: an option of one agent's trainer, after the task's (e.g.
    saccader=--policy-epochs=2) (repeatable)"""
    interpretability: bool = False
    """each seed's evaluation also runs the interpretability test (the attention maps of the
    BagNet among the rankings when it has any), combined over the seeds"""
    interpretability_images: int = 2000
    """with --interpretability: the first this many test images"""
    dry_run: bool = False
    """print the commands and stop"""


def output_folder(cfg: ResultsConfig) -> Path:
    """``--out``, or the default that keeps the shipped BagNet's runs apart."""
    suffix = ("-ms" if cfg.multiscale else "") + ("-shipped" if cfg.bagnet == "shipped" else "")
    suffix += "" if cfg.attention == "plain" else f"-{cfg.attention}"
    return Path(cfg.out or f"runs/results/{cfg.task}{suffix}")


def _glimpse(*args: str) -> list[str]:
    return [sys.executable, "-m", "train.cli", *args]


def plan(cfg: ResultsConfig) -> list[tuple[str, list[str], Path]]:
    """The steps as ``(name, command, the file that marks it done)``."""
    if cfg.task not in TASKS:
        raise UsageError(f"unknown task {cfg.task!r}; valid: {', '.join(TASKS)}")
    if cfg.bagnet not in ("train", "shipped"):
        raise UsageError(f"--bagnet must be 'train' or 'shipped', got {cfg.bagnet!r}")
    if cfg.attention not in ATTENTION:
        raise UsageError(f"--attention must be one of {', '.join(ATTENTION)}, got "
                         f"{cfg.attention!r}")
    if cfg.attention != "plain" and (cfg.bagnet != "train" or cfg.multiscale):
        raise UsageError("--attention trains BagNets with that block: it needs --bagnet train "
                         "and no --multiscale")
    if cfg.multiscale:
        if cfg.bagnet_per_seed or cfg.finetune_epochs or cfg.agents or cfg.agent_option or \
                cfg.interpretability:
            raise UsageError("--multiscale trains its own agents on one BagNet across scales "
                             "(trained, or with --bagnet shipped the package's): it takes no "
                             "--bagnet-per-seed, --finetune-epochs, --agents, "
                             "--agent-option or --interpretability")
        from train.results_multiscale import plan_multiscale
        return plan_multiscale(cfg)
    task = TASKS[cfg.task]
    out = output_folder(cfg)
    seeds = cfg.seeds or [0, 1, 2]
    agents = cfg.agents or list(AGENTS)
    unknown = sorted(set(agents) - set(AGENTS))
    if unknown:
        raise UsageError(f"unknown agent(s) {unknown}; valid: {', '.join(AGENTS)}")
    extra = _agent_options(cfg.agent_option, agents)
    data = ["--root", cfg.root]
    common = ["--threads", str(cfg.threads), "--no-progress", "--overwrite"]
    steps: list[tuple[str, list[str], Path]] = []
    # one BagNet for every agent seed unless per seed: the first seed's, or with --bagnet
    # shipped the shipped one (seed 0's), so runs of single seeds share its banks
    bagnet_seeds = (seeds if cfg.bagnet_per_seed else [seeds[0]]) if cfg.bagnet == "train" \
        else [0]
    for b in bagnet_seeds:
        ckpt = out / f"bagnet-s{b}" / "bagnet.pt"
        if cfg.bagnet == "train":
            opts = [f"--data-option={k}={v}" for k, v in task.data_options.items()]
            epochs = cfg.bagnet_epochs or BAGNET_EPOCHS[task.name]
            steps.append((f"bagnet-s{b}", _glimpse(
                "pretrain-bagnet", "--dataset", task.dataset, *opts, *data, "--epochs",
                str(epochs), "--image-loss", "1", *ATTENTION[cfg.attention], "--seed", str(b),
                "--out", str(ckpt), *common), ckpt.parent / "metrics.json"))
        else:
            ckpt = Path(task.name)  # resolved to the shipped file by the commands
        steps.append((f"banks-s{b}", _glimpse(
            "extract-features", "--checkpoint", str(ckpt), *data, "--out",
            str(out / f"banks-s{b}"), *common),
            out / f"banks-s{b}" / "test" / "meta.json"))
    for s in seeds:
        b = s if len(bagnet_seeds) > 1 else bagnet_seeds[0]
        banks = str(out / f"banks-s{b}")
        for name in agents:
            cmd, opts, _ = AGENTS[name]
            opts = [*opts, *TASK_AGENT_OPTIONS.get(task.name, {}).get(name, []),
                    *extra.get(name, [])]
            folder = out / f"seed{s}" / name
            steps.append((f"{name}-s{s}", _glimpse(*cmd, "--banks", banks, *opts, "--glimpses",
                                                   str(task.glimpses), "--seed", str(s),
                                                   "--out", str(folder), *common),
                          folder / "results.json"))  # written last: checkpoints come earlier
        ckpt = (out / f"bagnet-s{b}" / "bagnet.pt") if cfg.bagnet == "train" else task.name
        evaluated = [f"--policy={n}={out / f'seed{s}' / n / AGENTS[n][2]}" for n in agents]
        if cfg.interpretability:
            evaluated += ["--interpretability", "--interpretability-images",
                          str(cfg.interpretability_images)]
            if cfg.attention != "plain":
                evaluated.append(f"--attention-checkpoint=attention={ckpt}")
        steps.append((f"evaluate-s{s}", _glimpse(
            "evaluate", "--bank", f"{banks}/test", "--checkpoint", str(ckpt), *evaluated,
            "--policy=ordered-logits", "--policy=random", "--policy=centre",
            "--occlusion-glimpses", str(task.glimpses), "--seed", str(s),
            "--out", str(out / "eval" / f"seed{s}"), *common),
            out / "eval" / f"seed{s}" / "results.json"))
        if cfg.finetune_epochs and "saccader" in agents:
            steps += _finetune_steps(cfg, out / f"seed{s}" / "saccader", banks, str(ckpt),
                                     task.glimpses, s)
    steps.append(_combine_step("combine", out / "eval", seeds))
    if cfg.finetune_epochs and "saccader" in agents:
        steps.append(_combine_step("combine-finetuned", out / "eval-finetuned", seeds))
    return steps


def _agent_options(specs: list[str], agents: list[str]) -> dict[str, list[str]]:
    """``--agent-option NAME=OPTION`` as ``{agent: [options]}``."""
    found: dict[str, list[str]] = {}
    for spec in specs:
        name, _, option = spec.partition("=")
        if name not in agents or not option.startswith("--"):
            raise UsageError(f"--agent-option {spec!r}: give NAME=--OPTION[=VALUE] with NAME "
                             f"one of the agents trained ({', '.join(agents)})")
        found.setdefault(name, []).append(option)
    return found


def _combine_step(name: str, evals: Path, seeds: list[int]) -> tuple[str, list[str], Path]:
    combined = [f"--combine={evals / f'seed{s}'}" for s in seeds]
    return (name, _glimpse("evaluate", *combined, "--out", str(evals / "combined"),
                           "--overwrite"), evals / "combined" / "results.json")


def _finetune_steps(cfg: ResultsConfig, folder: Path, banks: str, ckpt: str, glimpses: int,
                    seed: int) -> list[tuple[str, list[str], Path]]:
    """The paper's step 3 on one seed's Saccader, and its evaluation on the fine-tuned
    BagNet's own banks (every row of that table reads the fine-tuned BagNet)."""
    tuned = folder / "finetuned"
    common = ["--threads", str(cfg.threads), "--no-progress"]
    evals = folder.parent.parent / "eval-finetuned" / f"seed{seed}"
    return [
        (f"saccader-finetune-s{seed}", _glimpse(
            "train", "saccader", "--stage", "finetune", "--finetune-epochs",
            str(cfg.finetune_epochs), "--banks", banks, "--bagnet-checkpoint", ckpt,
            "--glimpses", str(glimpses), "--seed", str(seed), "--out", str(folder), *common),
         tuned / "results.json"),  # written last, after the fine-tuned test errors
        (f"evaluate-finetuned-s{seed}", _glimpse(
            "evaluate", "--bank", str(tuned / "banks" / "test"), "--checkpoint",
            str(tuned / "bagnet.pt"), f"--policy=saccader-finetuned={tuned / 'policy.pt'}",
            "--policy=ordered-logits", "--policy=random", "--policy=centre",
            "--occlusion-glimpses", str(glimpses), "--seed", str(seed), "--out", str(evals),
            *common, "--overwrite"), evals / "results.json")]


def compare_finetuned(out: Path) -> dict[str, Any]:
    """The fine-tuned minus the fixed-bank Saccader's test error at every T, over the seeds
    both combined tables hold (:func:`agents.stats.difference`); written to
    ``OUT/eval-finetuned/versus-fixed-bank.json``."""
    from agents.stats import difference

    def errors(table: str, name: str) -> dict[str, list[float]]:
        row = json.loads((out / table / "combined" / "results.json").read_text())["policies"]
        return {t: e["values"] for t, e in row[name]["error"].items()}

    fixed, tuned = errors("eval", "saccader"), errors("eval-finetuned", "saccader-finetuned")
    result = {"finetuned - fixed bank": {t: difference(tuned[t], fixed[t])
                                         for t in fixed if t in tuned}}
    atomic_write(out / "eval-finetuned" / "versus-fixed-bank.json",
                 lambda f: f.write(json.dumps(result, indent=1).encode()))
    return result


RESUMABLE = {"pretrain-bagnet": "", "train saccader": "locations.pt",
             "train ppo": "last.zip", "train maskable-ppo": "last.zip",
             "train reinforce": "last.pt", "train tnet": "last.pt",
             "train multiscale-ppo": "last.zip", "train multiscale-saccader": "last.pt"}
"""The checkpoint each trainer leaves while it runs ("": ``--out`` is the checkpoint), from
which ``--resume`` continues."""


def _checkpoint_of(cmd: list[str]) -> Path | None:
    """The checkpoint a step's trainer writes as it goes (None for other steps)."""
    args = cmd[3:]
    command = " ".join(args[:2]) if args[0] == "train" else args[0]
    if command not in RESUMABLE or "--out" not in args or "finetune" in args:
        return None  # (the paper's step 3 starts again from policy.pt)
    out = Path(args[args.index("--out") + 1])
    return out / RESUMABLE[command] if RESUMABLE[command] else out


def _done(marker: Path, cmd: list[str]) -> bool:
    """Whether a step's output is there: its marker file, and for an evaluation asked for the
    interpretability test, a ``results.json`` that has it."""
    if not marker.exists():
        return False
    if "--interpretability" not in cmd or marker.name != "results.json":
        return True
    try:
        return "interpretability" in json.loads(marker.read_text())
    except (OSError, ValueError):
        return False


def run_results(cfg: ResultsConfig) -> dict[str, Any]:
    """Run (or, with ``--dry-run``, print) the steps; return the timings of the steps run."""
    steps = plan(cfg)
    out = output_folder(cfg)
    if cfg.dry_run:
        for name, cmd, _ in steps:
            print(f"{name}: glimpse {shlex.join(cmd[3:])}")
        return {}
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    timings_path = out / "timings.json"
    timings: dict[str, float] = {}
    start = time.perf_counter()
    for i, (name, cmd, done) in enumerate(steps, 1):
        if _done(done, cmd) and not cfg.overwrite and not name.startswith("combine"):
            print(f"[{i}/{len(steps)}] {name}: done before, skipped ({done})")
            continue
        checkpoint = _checkpoint_of(cmd)
        if checkpoint is not None and checkpoint.exists() and not cfg.overwrite:
            # cut short earlier: the trainer continues from its last checkpoint
            cmd = ["--resume" if c == "--overwrite" else c for c in cmd]
            print(f"[{i}/{len(steps)}] {name}: continuing {checkpoint}", flush=True)
        print(f"[{i}/{len(steps)}] {name}: glimpse {shlex.join(cmd[3:])}", flush=True)
        t0 = time.perf_counter()
        with open(logs / f"{name}.log", "w") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - t0
        if rc != 0:
            tail = (logs / f"{name}.log").read_text(errors="replace")[-1500:]
            raise UsageError(f"step {name} failed (exit {rc}) after {seconds:.0f} s; its log "
                             f"is {logs / f'{name}.log'}; it ends:\n{tail}")
        timings[name] = round(seconds, 1)
        # read again before writing: runs of other seeds into the same folder may have added theirs
        merged = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
        merged[name] = timings[name]
        text = json.dumps(merged, indent=1).encode()
        atomic_write(timings_path, lambda f, text=text: f.write(text))
        print(f"    {seconds / 60:.1f} min", flush=True)
    if any(name == "combine-finetuned" for name, _, _ in steps):
        rows = compare_finetuned(out)["finetuned - fixed bank"]
        print("the fine-tuned minus the fixed-bank Saccader's test error (points, 95 % "
              "interval over seeds): " + ", ".join(
                  f"T={t} {100 * d['mean']:+.2f} [{100 * d['ci95'][0]:+.2f}, "
                  f"{100 * d['ci95'][1]:+.2f}]" for t, d in rows.items()))
    print(f"{cfg.task}: every step done in {(time.perf_counter() - start) / 60:.1f} min; the "
          f"table is {out / 'eval' / 'combined'}/results.json (and results.md, its plot)")
    return timings


__all__ = ["ResultsConfig", "compare_finetuned", "output_folder", "plan", "run_results"]
