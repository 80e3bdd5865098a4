"""``glimpse ablation``: what a soft-attention block in the BagNet does, over seeds.

For one task it runs ``glimpse results`` once per ``--attention`` (plain, nam, nam-spatial,
adcm; default all four) with a BagNet per seed (``--bagnet-per-seed``), the agents given
(default: the Saccader and MaskablePPO) and the interpretability test, each into
``OUT/TASK-ATTENTION`` (every step skipped when its output is there, so a run cut short
continues, and two runs with different ``--attention`` may share the cores). Then it writes
``OUT/TASK/``:

- ``results.json`` / ``results.md``: per block, over the seeds, the BagNet's full-image test
  error, per-cell accuracy, parameters and training cost (CPU time per training image, and
  wall time); each agent's test error at the task's T; the interpretability test's deletion
  and insertion accuracy at T = 1, at the task's T and their means over T = 1..Tmax for
  every ranking (the agents' glimpses, ordered logits, random cells, gradient saliency and
  the block's own attention maps), with the share of the image the cells cover; and
  differences with their 95 % bootstrap intervals: each block against plain, and, seed by
  seed on the same BagNet, each attention map against each agent's glimpses (:func:`paired`);
- ``ablation.png``: the errors per block with each seed's point, and the interpretability
  test's mean accuracies per ranking and block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.stats import difference, summary
from glimpse_gym.errors import UsageError
from glimpse_gym.fileio import atomic_write
from glimpse_gym.tasks import TASKS
from train.markdown import _value
from train.results import ATTENTION, ResultsConfig, run_results


@dataclass
class AblationConfig:
    """Options of ``glimpse ablation``."""

    task: str = "cluttered-mnist"
    """the task: cluttered-mnist, cluttered-mnist-100 or cluttered-fashion"""
    attention: list[str] = field(default_factory=list)
    """the BagNets' soft-attention blocks compared (repeatable; default: plain, nam,
    nam-spatial and adcm)"""
    seeds: list[int] = field(default_factory=list)
    """seeds: seed k trains its own BagNet and agents (repeatable; default: 0, 1 and 2)"""
    bagnet_epochs: int | None = None
    """epochs of every BagNet (default: the task's published recipe)"""
    agents: list[str] = field(default_factory=list)
    """agents trained on each BagNet (repeatable; default: saccader and maskable-ppo)"""
    agent_option: list[str] = field(default_factory=list)
    """NAME=OPTION: an option of one agent's trainer (e.g. saccader=--policy-epochs=2)
    (repeatable)"""
    interpretability_images: int = 2000
    """test images of the interpretability test"""
    root: str = "../shared/data"
    """folder holding the dataset's files (torchvision layout)"""
    out: str = "runs/ablation"
    """output folder: OUT/TASK-ATTENTION per block, the comparison in OUT/TASK"""
    threads: int = 2
    """torch CPU threads of each step"""
    overwrite: bool = False
    """redo every step, even those whose output is there"""
    dry_run: bool = False
    """print the commands and stop"""


def _configs(cfg: AblationConfig) -> dict[str, ResultsConfig]:
    if cfg.task not in TASKS:
        raise UsageError(f"unknown task {cfg.task!r}; valid: {', '.join(TASKS)}")
    blocks = cfg.attention or list(ATTENTION)
    bad = [b for b in blocks if b not in ATTENTION]
    if bad or len(set(blocks)) != len(blocks):
        raise UsageError(f"--attention: give distinct blocks of {', '.join(ATTENTION)}, got "
                         f"{blocks}")
    return {b: ResultsConfig(
        task=cfg.task, root=cfg.root, seeds=cfg.seeds, bagnet="train", bagnet_per_seed=True,
        bagnet_epochs=cfg.bagnet_epochs, agents=cfg.agents or ["saccader", "maskable-ppo"],
        out=str(Path(cfg.out) / f"{cfg.task}-{b}"), overwrite=cfg.overwrite,
        threads=cfg.threads, attention=b, agent_option=cfg.agent_option,
        interpretability=True, interpretability_images=cfg.interpretability_images,
        dry_run=cfg.dry_run) for b in blocks}


def run_ablation(cfg: AblationConfig) -> dict[str, Any]:
    """Run (or print) every block's steps, then compare the blocks; return the comparison."""
    configs = _configs(cfg)
    for block, rc in configs.items():
        print(f"== {cfg.task}, {block} BagNets ==", flush=True)
        run_results(rc)
    if cfg.dry_run:
        return {}
    found = summarise(cfg.task, {b: Path(rc.out) for b, rc in configs.items()},
                      cfg.seeds or [0, 1, 2])
    write_summary(found, Path(cfg.out) / cfg.task)
    return found


def _bagnet_row(folder: Path, seeds: list[int]) -> dict[str, Any]:
    from glimpse_gym.bagnet import load_bagnet

    metrics = [json.loads((folder / f"bagnet-s{s}" / "metrics.json").read_text())
               for s in seeds]
    if any("test" not in m for m in metrics):
        raise UsageError(f"{folder}: a BagNet has no test metrics (pretrain-bagnet "
                         "--no-eval-test, or an unfinished run)")
    model, _ = load_bagnet(folder / f"bagnet-s{seeds[0]}" / "bagnet.pt", "cpu")
    row = {"parameters": sum(p.numel() for p in model.parameters()),
           "epochs": metrics[0]["epoch"],
           "threads": sorted({m.get("threads", 0) for m in metrics}),
           "full_image_error": summary([m["test"]["image_error"] for m in metrics]),
           "cell_accuracy": summary([m["test"]["cell_acc"] for m in metrics]),
           "train_time_s": summary([m["train_time_s"] for m in metrics])}
    cpu = [m.get("train_cpu_s", float("nan")) for m in metrics]
    if all(c == c for c in cpu):  # CPU time per training image: the cost, whatever shares
        row["train_cpu_ms_per_image"] = summary(  # the cores (wall time is not)
            [1000 * c / (m["epoch"] * m["images_per_epoch"]) for c, m in zip(cpu, metrics,
                                                                          strict=True)])
    return row


LABEL = {"1": "at T = 1", "": "at T = {t}", "mean": "mean"}
COMPARED = ("deletion_1", "deletion", "deletion_mean", "insertion_1", "insertion",
            "insertion_mean")
"""The interpretability test's figures compared between rankings: at T = 1, at the task's T
and the mean over T = 1..Tmax, of both curves."""


def summarise(task: str, folders: dict[str, Path], seeds: list[int]) -> dict[str, Any]:
    """The comparison of the blocks' ``glimpse results`` folders (see the module)."""
    t = TASKS[task].glimpses
    blocks: dict[str, Any] = {}
    for block, folder in folders.items():
        combined = folder / "eval" / "combined" / "results.json"
        if not combined.is_file():
            raise UsageError(f"{combined} is missing: the block's runs are not finished")
        table = json.loads(combined.read_text())
        if "interpretability" not in table:
            raise UsageError(f"{combined} has no interpretability test: some seed's "
                             "evaluation ran without it; run the ablation again (it redoes "
                             "those evaluations)")
        blocks[block] = {
            "bagnet": _bagnet_row(folder, seeds),
            "error": {n: row["error"][str(t)] for n, row in table["policies"].items()},
            "interpretability": {
                n: {"deletion": c["deletion"][t - 1], "insertion": c["insertion"][t - 1],
                    "deletion_1": c["deletion"][0], "insertion_1": c["insertion"][0],
                    "deletion_mean": c["deletion_mean"], "insertion_mean": c["insertion_mean"],
                    **({"area": c["area"][t - 1]} if "area" in c else {})}
                for n, c in table["interpretability"]["curves"].items()},
            "images": table["interpretability"]["images"],
            "tmax": table["interpretability"]["tmax"]}
    versus_plain: dict[str, Any] = {}
    if "plain" in blocks:
        base = blocks["plain"]
        for block, row in blocks.items():
            if block == "plain":
                continue
            pairs = {m: difference(row["bagnet"][m]["values"], base["bagnet"][m]["values"])
                     for m in ("full_image_error", "cell_accuracy", "train_cpu_ms_per_image")
                     if m in row["bagnet"] and m in base["bagnet"]}
            pairs.update({f"error:{n}": difference(e["values"], base["error"][n]["values"])
                          for n, e in row["error"].items() if n in base["error"]
                          and n not in ("random", "centre", "full-image")})
            versus_plain[block] = pairs
    maps_versus_glimpses: dict[str, Any] = {}
    for block, row in blocks.items():
        curves = row["interpretability"]
        maps = [n for n in curves if n.startswith("attention:")]
        agents = [n for n in curves if n in row["error"] and not n.startswith(
            ("ordered", "random", "centre", "full"))]
        maps_versus_glimpses[block] = {
            f"{m} - {a}": {k: paired(curves[m][k]["values"], curves[a][k]["values"])
                           for k in COMPARED}
            for m in maps + ["saliency"] for a in agents}
    return {"task": task, "T": t, "seeds": seeds, "blocks": blocks,
            "versus_plain": versus_plain, "maps_versus_glimpses": maps_versus_glimpses,
            "folders": {b: str(f) for b, f in folders.items()}}


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """``a - b`` seed by seed (both read the same seed's BagNet and images): the
    :func:`agents.stats.summary` of the per-seed differences, ``differs`` when its 95 %
    bootstrap interval excludes 0 (with 3 seeds: exactly when all three differences have one
    sign) and ``same_sign``, how many seeds' differences have the mean's sign."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    found = summary(d)
    lo, hi = found["ci95"]
    found["differs"] = bool((lo > 0 or hi < 0) and len(d) > 1)
    found["same_sign"] = sum((x > 0) == (found["mean"] > 0) and x != 0 for x in d)
    return found


def _diff(d: dict[str, Any], scale: float = 100.0, bold: bool = False) -> str:
    """``mean [lo, hi]``; a difference the interval does not show is said so, or (``bold``,
    for tables) one it shows is set in bold."""
    text = (f"{scale * d['mean']:+.2f} [{scale * d['ci95'][0]:+.2f}, "
            f"{scale * d['ci95'][1]:+.2f}]")
    if bold:
        return f"**{text}**" if d["differs"] else text
    return text if d["differs"] else f"{text}, no difference shown"


def ablation_markdown(found: dict[str, Any]) -> str:
    """The comparison as the Markdown tables the docs use."""
    t, blocks = found["T"], found["blocks"]
    agents = [n for n in next(iter(blocks.values()))["error"] if n not in ("centre", "full-image")]
    lines = ["| BagNet | parameters | full-image error (%) | per-cell accuracy (%) | training, "
             "CPU ms per image | training, wall (min) | "
             + " | ".join(f"{a} (%)" for a in agents) + " |", "|---" * (6 + len(agents)) + "|"]
    threads = set()
    for block, row in blocks.items():
        b = row["bagnet"]
        threads.update(b["threads"])
        minutes = {k: v / 60 if k in ("mean", "std") else v for k, v in b["train_time_s"].items()}
        lines.append(f"| {block} | {b['parameters']:,} | {_value(b['full_image_error'])} | "
                     f"{_value(b['cell_accuracy'])} | "
                     f"{_value(b.get('train_cpu_ms_per_image'), 1, 2)} | "
                     f"{_value(minutes, 1, 1)} | "
                     + " | ".join(_value(row["error"].get(a)) for a in agents) + " |")
    seeds = len(found["seeds"])
    over = f"{seeds} seed" + ("s" if seeds > 1 else "")
    lines += ["", f"Mean ± std over {over} (seed k: BagNet and agents); the policies' "
              f"test error after T = {t} glimpses on the {found['task']} test set (the full "
              f"image: the BagNet itself). Training cost: CPU time per training image and "
              f"wall time, with {', '.join(map(str, sorted(threads)))} torch thread(s)"
              + (" (mixed: not comparable)" if len(threads) > 1 else "") + "."]
    label = {"full_image_error": "full-image error", "cell_accuracy": "per-cell accuracy",
             "train_cpu_ms_per_image": "training CPU ms per image"}
    for block, pairs in found["versus_plain"].items():
        lines.append(f"- {block} - plain (points; CPU ms), 95 % interval: " + "; ".join(
            f"{label.get(m, m.replace('error:', ''))} "
            f"{_diff(d, 1 if m == 'train_cpu_ms_per_image' else 100)}"
            for m, d in pairs.items()))
    any_row = next(iter(blocks.values()))
    tmax = any_row["tmax"]
    lines += ["", f"| BagNet | ranking | deletion, T = 1 | T = {t} | mean T = 1..{tmax} | "
              f"insertion, T = 1 | T = {t} | mean T = 1..{tmax} | area at T = {t} |",
              "|---" * 9 + "|"]
    for block, row in blocks.items():
        for name, c in row["interpretability"].items():
            lines.append(f"| {block} | {name} | " + " | ".join(
                _value(c.get(k)) for k in (*COMPARED, "area")) + " |")
    lines += ["", f"The BagNet's own full-image accuracy (%) on the first "
              f"{any_row['images']:,} test images with the receptive fields of each ranking's "
              f"top T cells blanked (deletion: lower means those cells held more of the "
              f"evidence) or kept alone (insertion: higher is better), and the share of "
              f"the image (%) those cells' receptive fields cover; mean ± std over "
              f"{over}."]
    lines += ["", "| BagNet | map - agent | " + " | ".join(
        f"{k.split('_')[0]}, {LABEL[k.partition('_')[2]].format(t=t)}" for k in COMPARED)
        + " |", "|---" * (2 + len(COMPARED)) + "|"]
    for block, pairs in found["maps_versus_glimpses"].items():
        for pair, ds in pairs.items():
            lines.append(f"| {block} | {pair} | " + " | ".join(
                _diff(ds[k], bold=True) for k in COMPARED) + " |")
    lines += ["", "Each map (and the saliency) minus each agent's glimpses, seed by seed on "
              "the same BagNet: points, with the 95 % bootstrap interval of the mean of the "
              "per-seed differences; in bold where it excludes 0 (with 3 seeds: exactly when "
              "all three agree in sign)."]
    return "\n".join(lines) + "\n"


def plot_ablation(found: dict[str, Any], path: Path) -> None:
    """Errors per block with each seed's point; each ranking's deletion and insertion at
    T = 1, where the rankings differ most (by T = 4 every good one has the evidence)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    blocks = found["blocks"]
    names = list(blocks)
    agents = list(next(iter(blocks.values()))["error"])
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.4))
    series = {"full image (BagNet)": [blocks[b]["bagnet"]["full_image_error"] for b in names]}
    series.update({a: [blocks[b]["error"][a] for b in names] for a in agents
                   if a not in ("random", "centre", "full-image")})
    rankings = list(dict.fromkeys(n for b in names for n in blocks[b]["interpretability"]))
    colour = {n: f"C{i % 10}" for i, n in enumerate(rankings)}  # one colour per name
    colour["full image (BagNet)"] = "0.5"
    width = 0.8 / len(series)
    for i, (label, rows) in enumerate(series.items()):
        x = np.arange(len(names)) + (i - (len(series) - 1) / 2) * width
        axes[0].bar(x, [100 * r["mean"] for r in rows], width, label=label, alpha=0.7,
                    color=colour.get(label))
        for xi, r in zip(x, rows, strict=True):
            axes[0].plot([xi] * len(r["values"]), [100 * v for v in r["values"]], "k.", ms=3)
    axes[0].set_xticks(range(len(names)), names)
    axes[0].set_ylabel(f"test error (%), agents at T = {found['T']}")
    axes[0].set_ylim(0, 1.3 * axes[0].get_ylim()[1])
    axes[0].legend(fontsize=7, ncol=2, loc="upper left")
    for ax, kind in zip(axes[1:], ("deletion_1", "insertion_1"), strict=True):
        width = 0.8 / len(rankings)
        for i, name in enumerate(rankings):
            rows = [blocks[b]["interpretability"].get(name) for b in names]
            x = np.arange(len(names)) + (i - (len(rankings) - 1) / 2) * width
            ax.bar([xi for xi, r in zip(x, rows, strict=True) if r],
                   [100 * r[kind]["mean"] for r in rows if r], width, label=name,
                   yerr=[100 * r[kind]["std"] for r in rows if r], alpha=0.8,
                   color=colour[name])
        ax.set_xticks(range(len(names)), names)
        ax.set_title(f"{kind.split('_')[0]}: the top cell's receptive field "
                     + ("blanked (lower: more evidence)" if kind.startswith("del")
                        else "kept alone (higher: more evidence)"), fontsize=9)
        ax.set_ylabel("full-image BagNet accuracy (%), T = 1")
    axes[2].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    seeds = len(found["seeds"])
    fig.suptitle(f"{found['task']}: {seeds} seed{'s' if seeds > 1 else ''} per BagNet "
                 "(bars: mean, black: each seed or the std)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_summary(found: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(found, indent=1).encode()
    atomic_write(out / "results.json", lambda f: f.write(text))
    markdown = ablation_markdown(found)
    atomic_write(out / "results.md", lambda f: f.write(markdown.encode()))
    plot_ablation(found, out / "ablation.png")
    print(markdown)
    print(f"wrote: {out}/results.json, results.md, ablation.png")


__all__ = ["AblationConfig", "ablation_markdown", "paired", "run_ablation", "summarise",
           "write_summary"]
