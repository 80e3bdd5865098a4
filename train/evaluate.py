"""``glimpse evaluate``: compare glimpse policies on one split, at T = 1..Tmax.

Policies are named on the command line: the non-learned ``random``, ``centre`` and
``ordered-logits``, and trained agents as ``NAME=PATH`` (a ``glimpse train saccader`` or
``glimpse train reinforce`` checkpoint ``.pt``, or a PPO / MaskablePPO ``.zip``). The
full-image BagNet is always added as the upper bound. For each policy: accuracy (error) after
each T = 1..Tmax glimpses, coverage of the image by the glimpses' receptive fields, location
diversity (normalised entropy of the cells used over all images), and the occlusion test
(blank the regions under its first T glimpses, re-classify with the full-image BagNet, against
blanking as many random regions). Writes ``results.json``, ``results.csv``, ``accuracy.png``
(error against glimpses), and per policy ``glimpses-NAME.png`` (sample images with numbered
receptive fields) and ``glimpses-NAME.gif`` (the sequence, one glimpse per frame).
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agents.evaluation import Occlusion, baseline_table, compare
from agents.loading import make_policy
from agents.policies import FULL_IMAGE
from agents.stats import combine_results, differences
from glimpse_gym.bagnet import load_bagnet
from glimpse_gym.envs import load_source
from glimpse_gym.envs.render import draw_glimpses
from glimpse_gym.errors import CheckpointError, UsageError
from glimpse_gym.fileio import atomic_write
from glimpse_gym.pretrained import resolve_checkpoint
from train.interpretability import (
    attention_models,
    combine_test,
    curves_markdown,
    interpretability_test,
    plot_curves,
    print_curves,
)
from train.markdown import combined_markdown
from train.run import RunOptions, prepare_out, setup, write_results


@dataclass
class EvaluateConfig(RunOptions):
    """Options of ``glimpse evaluate``."""

    policy: list[str] = field(default_factory=list)
    """policies to compare: random, centre, ordered-logits, or NAME=PATH of a trained agent
    (.pt from train saccader / train reinforce, .zip from train ppo / maskable-ppo); default:
    the three non-learned ones"""
    bank: str | None = None
    """the feature bank to evaluate on (default: the embedded digits model on --split)"""
    split: str = "test"
    """split of the embedded default (when no --bank)"""
    max_glimpses: int = 12
    """Tmax: accuracy is reported at T = 1..Tmax"""
    checkpoint: str | None = None
    """BagNet checkpoint for the occlusion test (default: the embedded model when no --bank;
    with a --bank, no occlusion test unless given)"""
    occlusion_glimpses: int = 6
    """T of the occlusion test"""
    pictures: int = 8
    """sample images drawn per policy (0: none)"""
    max_images: int | None = None
    """evaluate on the first this many images only"""
    batch: int = 1024
    """episodes run at once"""
    out: str = "runs/eval"
    """output folder: results.json, results.csv, accuracy.png, glimpses-NAME.png/.gif"""
    seed: int = 0
    """seed of the random policy and the random occlusion"""
    combine: list[str] = field(default_factory=list)
    """instead of running policies, combine earlier evaluations (output folders or their
    results.json, one per training seed, repeatable): mean, standard deviation and 95 percent
    bootstrap interval per policy and T, the plot with the intervals drawn, and which
    differences from --reference the intervals support"""
    reference: str | None = None
    """with --combine: the policy the others are compared with (default: the first)"""
    interpretability: bool = False
    """also the interpretability test: the full-image BagNet's accuracy with the top T cells
    of each policy, of its gradient saliency and of each --attention-checkpoint's maps
    blanked (deletion) or kept alone (insertion), T = 1..Tmax (needs the occlusion test's
    BagNet and stored images)"""
    attention_checkpoint: list[str] = field(default_factory=list)
    """with --interpretability: a small BagNet with NAM or ADCM blocks (pretrain-bagnet --nam,
    --nam-spatial, --adcm) on the bank's grid, whose attention maps rank the cells; NAME=PATH
    names its rankings NAME:BLOCK (default: the file's stem) (repeatable)"""
    interpretability_images: int = 2000
    """with --interpretability: the first this many images"""


def _occlusion(cfg: EvaluateConfig, source: Any, device: torch.device) -> Occlusion | None:
    ckpt_name = cfg.checkpoint or (None if cfg.bank else "default")
    if ckpt_name is None or source.images is None:
        return None
    model, ckpt = load_bagnet(resolve_checkpoint(ckpt_name), device)
    bank_hash = source.description.get("model_hash")
    if bank_hash and bank_hash != ckpt.get("model_hash"):
        raise CheckpointError(f"--checkpoint {ckpt_name} (BagNet {ckpt.get('model_hash')}) is "
                              f"not the BagNet of this bank (BagNet {bank_hash})")
    norm = ckpt["normalization"]
    return Occlusion(model, norm["mean"], norm["std"])


def _pictures(source: Any, cells: torch.Tensor, glimpses: int, name: str, out: Path,
              count: int, *, labels: torch.Tensor | None = None,
              predictions: torch.Tensor | None = None,
              class_names: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Write ``glimpses-NAME.png`` and ``glimpses-NAME.gif``; return their file names.

    The PNG shows the first ``count`` images side by side, each with its first ``glimpses``
    receptive fields outlined and numbered; the GIF shows the first image, one glimpse per
    frame. With ``labels [N]`` each picture is captioned ``label: 3  pred: 5``, the prediction
    taken from ``predictions [N, Tmax]`` (``PolicyRun.predictions``) after the glimpses drawn
    (after k glimpses in the GIF's frame k), green when right and red when wrong;
    ``class_names`` (default: ``source.class_names``) name the classes.
    """
    from PIL import Image

    from glimpse_gym.envs.render import outcome_caption
    if source.images is None or count <= 0:
        return []
    boxes = source.cell_boxes()
    names = class_names if class_names is not None else getattr(source, "class_names", None)

    def picture(i: int, image: np.ndarray, seq: list[tuple[int, ...]]) -> np.ndarray:
        if labels is None:
            return draw_glimpses(image, seq)
        pred = (int(predictions[i, len(seq) - 1]) if predictions is not None and seq
                else None)
        text, colour = outcome_caption(int(labels[i]), pred, names)
        return draw_glimpses(image, seq, caption=text, caption_colour=colour)

    frames, finals = [], []
    for i in range(min(count, len(cells))):
        image = np.asarray(source.images[i])
        seq = [tuple(boxes[c]) for c in cells[i, :glimpses].tolist()]
        finals.append(picture(i, image, seq))
        if i == 0:
            frames = [picture(i, image, seq[:k]) for k in range(len(seq) + 1)]
    gap = np.full((finals[0].shape[0], 6, 3), 255, np.uint8)
    sheet = np.concatenate([part for f in finals for part in (f, gap)][:-1], axis=1)
    png, gif = out / f"glimpses-{name}.png", out / f"glimpses-{name}.gif"
    Image.fromarray(sheet).save(png)
    Image.fromarray(frames[0]).save(gif, save_all=True, duration=600, loop=0,
                                    append_images=[Image.fromarray(f) for f in frames[1:]])
    return [png.name, gif.name]


def _plot(table: dict[str, dict[str, Any]], tmax: int, path: Path, title: str,
          bands: dict[str, tuple[list[float], list[float]]] | None = None) -> Any:
    """Error (%) against glimpses T, one line per policy (the full image dashed); saved to
    ``path``, and the (closed) matplotlib Figure returned. ``bands`` (errors at T = 1..tmax,
    low and high, as fractions) are shaded around each policy's line.

    The y axis is linear from 0 to 1 % and logarithmic above ('symlog'), so a policy at 0 %
    error is drawn (just above the bottom of the axes) and small differences stay visible.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ts = list(range(1, tmax + 1))
    top = 1.0
    for name, row in table.items():
        errors = [100 * row["error"][t] for t in ts]
        top = max(top, *errors)
        style = "--" if name == FULL_IMAGE else "-o"
        line, = ax.plot(ts, errors, style, label=name, markersize=3, linewidth=1.5,
                        zorder=3 if name == FULL_IMAGE else 2)
        if bands and name in bands:
            lo, hi = ([100 * v for v in side] for side in bands[name])
            top = max(top, *hi)
            ax.fill_between(ts, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_yscale("symlog", linthresh=1.0, linscale=1.0)
    ax.set_ylim(-0.15, min(100.0, top) * 1.3)
    ticks = [t for t in (0, 0.5, 1, 2, 5, 10, 20, 50, 100) if t <= top * 1.3]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(FixedLocator([]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xticks(ts if tmax <= 16 else ts[::max(1, tmax // 12)])
    ax.set_xlabel("glimpses T")
    ax.set_ylabel("test error (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Run every policy (or, with ``--combine``, combine earlier runs); write and return the
    results."""
    if cfg.combine:
        return combine(cfg)
    start = time.perf_counter()
    device = setup(cfg.device, cfg.threads)
    source = load_source(cfg.bank, split=cfg.split)  # no bank: the embedded default
    specs = cfg.policy or ["random", "centre", "ordered-logits"]
    policies = [make_policy(s, source, cfg.seed) for s in specs]  # fail early on a bad spec
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise UsageError(f"policy names must be distinct, got {names}")
    occlusion = _occlusion(cfg, source, device)
    if cfg.attention_checkpoint and not cfg.interpretability:
        raise UsageError("--attention-checkpoint ranks cells for the interpretability test: "
                         "add --interpretability")
    attention = attention_models(cfg.attention_checkpoint, source, device,
                                 judge=cfg.checkpoint or (None if cfg.bank else "default"))
    if cfg.interpretability and occlusion is None:
        raise UsageError("--interpretability needs the full-image BagNet (--checkpoint, the "
                         "bank's) and a bank that stores its images")
    out = prepare_out(cfg.out, overwrite=cfg.overwrite)
    n = source.num_images if cfg.max_images is None else min(cfg.max_images, source.num_images)
    runs: dict[str, torch.Tensor] = {}

    def pictures(policy: Any, run: Any, row: dict[str, Any]) -> None:
        runs[policy.name] = run.cells
        row["pictures"] = _pictures(source, run.cells, cfg.occlusion_glimpses, policy.name,
                                    out, cfg.pictures, labels=run.labels,
                                    predictions=run.predictions)
        t = min(cfg.occlusion_glimpses, cfg.max_glimpses)
        tqdm.write(f"{policy.name}: error at T={t} {row['error'][t]:.2%}")

    table = compare(policies, source, max_glimpses=cfg.max_glimpses, batch=cfg.batch,
                    max_images=n, device=device, occlusion=occlusion,
                    occlusion_glimpses=cfg.occlusion_glimpses, seed=cfg.seed, on_run=pictures,
                    progress=cfg.progress)
    ts = range(1, cfg.max_glimpses + 1)
    results = {"config": asdict(cfg), "bank": source.description, "num_images": n,
               "policies": table, "wall_time_s": time.perf_counter() - start}
    lines = io.StringIO(newline="")
    w = csv.writer(lines)
    w.writerow(["policy", "T", "error", "accuracy", "coverage", "diversity", "head"])
    for name, row in table.items():
        for t in ts:
            w.writerow([name, t, f"{row['error'][t]:.6f}", f"{row['accuracy'][t]:.6f}",
                        f"{row['coverage'][t]:.6f}",
                        f"{row['diversity'][t]:.6f}" if "diversity" in row else "", row["head"]])
    atomic_write(out / "results.csv", lambda f: f.write(lines.getvalue().encode()))
    _plot(table, cfg.max_glimpses, out / "accuracy.png",
          f"{source.description.get('dataset', 'digits')} {cfg.split}: {n} images")
    print_table(results)
    extra = []
    if cfg.interpretability:
        results["interpretability"] = found = interpretability_test(
            source, occlusion, runs, attention, cfg.max_glimpses,
            min(cfg.interpretability_images, n), device, cfg.progress)
        plot_curves(found, out / "interpretability.png",
                    f"{source.description.get('dataset', 'digits')}: {found['images']} images")
        print_curves(found)
        extra.append("interpretability.png")
    write_results(out, results, ["results.csv", "accuracy.png", *extra,
                                 *(f for row in table.values() for f in row.get("pictures", []))])
    return results


def _read_run(spec: str) -> dict[str, Any]:
    path = Path(spec).expanduser()
    path = path / "results.json" if path.is_dir() else path
    try:
        run = json.loads(path.read_text())
        run["policies"] and run["config"]  # noqa: B018 (the fields must be there)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--combine {spec}: not the results.json of a 'glimpse evaluate' run "
                         f"({type(exc).__name__}: {exc})") from None
    return run


def combine(cfg: EvaluateConfig) -> dict[str, Any]:
    """Combine the evaluations of several seeds: :func:`agents.stats.combine_results` and
    :func:`agents.stats.differences` written to ``results.json`` / ``results.csv`` (and the
    docs' Markdown table, ``results.md``), the plot
    with the 95 % intervals shaded, and the table printed as mean ± std."""
    runs = [_read_run(s) for s in cfg.combine]
    where = {(r["bank"].get("dataset"), r["bank"].get("split"), r["num_images"]) for r in runs}
    if len(where) > 1:
        raise UsageError(f"--combine needs runs on the same dataset, split and images; got "
                         f"{sorted(map(str, where))}")
    out = prepare_out(cfg.out, overwrite=cfg.overwrite)
    table = combine_results(runs)
    first = runs[0]
    tmax = min(max(int(t) for t in row["error"]) for row in table.values())
    t_ref = min(int(first["config"]["occlusion_glimpses"]), tmax)
    reference = cfg.reference or next(iter(table))
    if reference not in table:
        raise UsageError(f"--reference {reference!r} is none of the policies {list(table)}")
    results = {"config": asdict(cfg), "bank": first["bank"], "num_images": first["num_images"],
               "runs": [str(s) for s in cfg.combine], "policies": table,
               "reference": reference, "T": t_ref,
               "differences": differences(table, reference),
               "config_of_first_run": first["config"]}
    lines = io.StringIO(newline="")
    w = csv.writer(lines)
    w.writerow(["policy", "T", "seeds", "error_mean", "error_std", "error_ci95_low",
                "error_ci95_high", "coverage_mean"])
    for name, row in table.items():
        for t, e in row["error"].items():
            w.writerow([name, t, e["n"], f"{e['mean']:.6f}", f"{e['std']:.6f}",
                        f"{e['ci95'][0]:.6f}", f"{e['ci95'][1]:.6f}",
                        f"{row['coverage'][t]['mean']:.6f}"])
    atomic_write(out / "results.csv", lambda f: f.write(lines.getvalue().encode()))
    ts = range(1, tmax + 1)
    means = {n: {"error": {t: r["error"][t]["mean"] for t in ts}} for n, r in table.items()}
    bands = {n: ([r["error"][t]["ci95"][0] for t in ts], [r["error"][t]["ci95"][1] for t in ts])
             for n, r in table.items()}
    seeds = max(row["seeds"] for row in table.values())
    _plot(means, tmax, out / "accuracy.png", f"{first['bank'].get('dataset')} "
          f"{first['bank'].get('split')}: mean of {seeds} seeds, 95 % interval shaded", bands)
    markdown, extra = combined_markdown(results), []
    curves = combine_test(runs, results, out, str(first["bank"].get("dataset")))
    if curves:
        markdown += "\n" + curves_markdown(curves)
        extra.append("interpretability.png")
    atomic_write(out / "results.md", lambda f: f.write(markdown.encode()))
    print_combined(results)
    if curves:
        print_curves(curves)
    write_results(out, results, ["results.csv", "results.md", "accuracy.png", *extra])
    return results


def print_combined(results: dict[str, Any], columns: tuple[int, ...] = (1, 2, 4, 6, 8, 12)
                   ) -> None:
    """A combined run as a text table of mean ± std, then the differences at T."""
    table = results["policies"]
    some = next(iter(table.values()))
    cols = [t for t in columns if t in some["error"]]
    t_ref = results["T"]
    print(f"\ntest error (%) on {results['num_images']} images, mean ± std over seeds; "
          f"coverage and occlusion drop at T={t_ref}")
    head = "".join(f"{'T=' + str(t):>14s}" for t in cols)
    print(f"{'policy':16s}{'seeds':>6s}{head}{'coverage':>10s}{'occl. drop':>14s}")
    for name, row in table.items():
        errs = "".join(f"{_pm(row['error'][t]):>14s}" for t in cols if t in row["error"])
        occ = row.get("occlusion", {}).get("drop_policy")
        cov = row["coverage"].get(t_ref, {}).get("mean", float("nan"))
        print(f"{name:16s}{row['seeds']:6d}{errs}{cov:10.3f}{_pm(occ) if occ else '':>14s}")
    print(f"\nerror differences at T={t_ref} (percentage points, 95 % bootstrap interval):")
    diffs = results["differences"]
    for pair, d in diffs.get(t_ref, diffs.get(str(t_ref), {})).items():
        verdict = "differ" if d["differs"] else "no difference shown"
        print(f"  {pair:32s} {100 * d['mean']:+7.2f}  [{100 * d['ci95'][0]:+.2f}, "
              f"{100 * d['ci95'][1]:+.2f}]  {verdict}")


def _pm(s: dict[str, Any]) -> str:
    return f"{100 * s['mean']:.2f}±{100 * s['std']:.2f}"


def print_table(results: dict[str, Any], columns: tuple[int, ...] = (1, 2, 4, 6, 8, 12)) -> None:
    """The comparison as a text table: error at each T, coverage and occlusion drop at T."""
    table = results["policies"]
    tmax = max(int(t) for t in next(iter(table.values()))["error"])
    cols = [t for t in columns if t <= tmax]
    some = next(iter(table.values()))
    key = (lambda t: t) if isinstance(next(iter(some["error"])), int) else str
    occ_t = results["config"]["occlusion_glimpses"]
    print(f"\ntest error (%) on {results['num_images']} images; coverage and occlusion drop "
          f"at T={occ_t}")
    head = "".join(f"{'T=' + str(t):>8s}" for t in cols)
    print(f"{'policy':20s}{head}{'coverage':>10s}{'occl. drop':>12s}{'random drop':>12s}")
    for name, row in table.items():
        errs = "".join(f"{100 * row['error'][key(t)]:8.2f}" for t in cols)
        cov = row["coverage"].get(key(min(occ_t, tmax)))
        occ = row.get("occlusion")
        drops = (f"{100 * occ['drop_policy']:12.2f}{100 * occ['drop_random']:12.2f}"
                 if occ else f"{'':12s}{'':12s}")
        print(f"{name:20s}{errs}{cov:10.3f}{drops}")


def print_baselines(source: Any, glimpses: int, seed: int = 0,
                    device: str | torch.device = "cpu") -> dict[str, float]:
    """Print :func:`agents.evaluation.baseline_table` for a source (e.g. a bank's test
    split) with a line saying what it is; return the table."""
    table = baseline_table(source, glimpses, seed=seed, device=device)
    t = min(glimpses, source.grid[0] * source.grid[1])
    d = source.description
    print(f"\n{d.get('dataset')} {d.get('split')} split: {source.num_images} images, "
          f"{source.grid[0]}x{source.grid[1]} grid, receptive field {source.rf} px, stride "
          f"{source.stride} px; accuracy from T = {t} cells")
    print(f"{'policy':20s} {'accuracy':>9s} {'error':>8s}")
    for name, acc in table.items():
        print(f"{name:20s} {acc:9.2%} {1 - acc:8.2%}")
    return table


__all__ = ["EvaluateConfig", "combine", "evaluate", "make_policy", "print_baselines", "print_table"]
