"""``glimpse evaluate-multiscale``: policies across scales against each level alone.

On a multi-scale bank's split (``--bank``, e.g. ``runs/banks/X-ms/test``) every ``--policy``
(``random``: uniformly among the cells that may be opened; ``NAME=PATH``: a TNet from
``glimpse train tnet``, a Saccader from ``glimpse train multiscale-saccader``, or a
MaskablePPO zip from ``glimpse train multiscale-ppo``) plays
``MultiScale-v0`` for 1..``--max-glimpses`` glimpses on every image. With ``--single-scale``
(default) each level below the first is evaluated alone too, as ``Glimpse-v0`` on its bank:
ordered logits and random cells, and that level's whole image (the finest level's is the full
image). Every row gets the error and the mean cost at
each T: pixels the BagNet processed, full-resolution pixels, BagNet FLOPs (a single-scale
glimpse: one receptive-field patch at full size; the full image: the whole image; ordered
logits needs that full pass to rank the cells, so it is a reference, not a saving). Writes
``results.json``, ``results.md`` and ``cost.png`` (error against full-resolution pixels).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.evaluation import compare
from agents.multiscale_eval import (
    OrderedLogitsAcross,
    RandomLegal,
    TNetPolicy,
    run_multiscale,
    summarise_multiscale,
)
from agents.multiscale_saccader import FORMAT as SACCADER_FORMAT
from agents.multiscale_saccader import MultiScaleSaccaderPolicy, load_multiscale_saccader
from agents.policies import FULL_IMAGE, OrderedLogitsPolicy, RandomPolicy, SB3Policy
from agents.sb3_io import load_sb3_policy, read_sb3
from agents.tnet import load_tnet
from glimpse_gym.envs import MultiScaleEnv, load_source
from glimpse_gym.errors import UsageError
from glimpse_gym.fileio import atomic_write, read_torch
from glimpse_gym.multiscale import MultiScaleBank
from train.run import RunOptions, prepare_out, setup, write_results


@dataclass
class MultiScaleEvalConfig(RunOptions):
    """Options of ``glimpse evaluate-multiscale``."""

    bank: str = "runs/banks/cluttered-mnist-100-ms/test"
    """a multi-scale bank split (extract-features --scales ...)"""
    policy: list[str] = field(default_factory=list)
    """random, ordered-logits (a reference that ranks the cells by the BagNet's logits, so it
    costs every level's full pass), or NAME=PATH for a checkpoint of train tnet or train
    multiscale-saccader (.pt) or a multiscale-ppo zip (repeatable; default: random)"""
    max_glimpses: int = 8
    """glimpses per episode (errors and costs at every T up to it)"""
    max_images: int | None = None
    """evaluate on the first N images only"""
    batch: int = 1024
    """episodes run at once"""
    single_scale: bool = True
    """also each level below the first alone (Glimpse-v0): ordered logits, random cells, that
    level's whole image"""
    combine: list[str] = field(default_factory=list)
    """combine earlier runs (their output folders, one per training seed; repeatable) into
    the mean and spread over seeds instead of running policies"""
    out: str = "runs/eval-multiscale"
    """output folder: results.json, results.md, cost.png"""


def _policies(cfg: MultiScaleEvalConfig, bank: MultiScaleBank, device: torch.device) -> list:
    policies = []
    for spec in cfg.policy or ["random"]:
        if spec == "random":
            policies.append(RandomLegal(cfg.seed))
        elif spec == "ordered-logits":
            policies.append(OrderedLogitsAcross())
        elif "=" in spec:
            name, path = spec.split("=", 1)
            if path.endswith(".zip"):  # glimpse train multiscale-ppo
                policy = _sb3_policy(name, path, bank, cfg.max_glimpses)
            elif _format(path) == SACCADER_FORMAT:  # glimpse train multiscale-saccader
                policy = MultiScaleSaccaderPolicy(load_multiscale_saccader(path, bank, device))
            else:  # glimpse train tnet
                policy = TNetPolicy(load_tnet(path, bank, device), bank)
            policy.name = name
            policies.append(policy)
        else:
            raise UsageError(f"unknown policy {spec!r}: use random, ordered-logits, or "
                             "NAME=PATH for a checkpoint of glimpse train tnet or "
                             "multiscale-saccader (.pt) or a MaskablePPO zip (glimpse train "
                             "multiscale-ppo)")
    return policies


def _format(path: str) -> Any:
    payload = read_torch(path, "checkpoint")
    return payload.get("format") if isinstance(payload, dict) else None


def _sb3_policy(name: str, path: str, bank: MultiScaleBank, glimpses: int) -> SB3Policy:
    """A MaskablePPO zip of ``glimpse train multiscale-ppo``, checked against ``bank``."""
    f = read_sb3(path)
    if not f.manifest.get("multiscale"):
        raise UsageError(f"--policy {name}={path}: not a MultiScale-v0 policy (train one with "
                         "'glimpse train multiscale-ppo')")
    model = bank.model_hash
    levels = [list(lv.grid) for lv in bank.levels]
    if f.manifest["trained_on"] != {"model_hash": model, "levels": levels}:
        raise UsageError(f"--policy {name}={path} was trained on {f.manifest['trained_on']}; "
                         f"this bank has BagNet {model} and levels {levels}")
    env = MultiScaleEnv(bank, glimpses=glimpses)
    return SB3Policy(load_sb3_policy(f, env.observation_space, env.action_space), name,
                     "partial")


def _single_scale(cfg: MultiScaleEvalConfig, bank: MultiScaleBank, n: int,
                  device: torch.device) -> dict[str, dict[str, Any]]:
    """Each level below the first alone in Glimpse-v0 (ordered logits, random cells, that
    level's whole image), with each row's costs; only the finest level's pixels are at full
    resolution."""
    last = len(bank.levels) - 1
    ts = range(1, cfg.max_glimpses + 1)
    rows = {}
    for index in range(1, last + 1):
        level = bank.levels[index]
        table = compare([OrderedLogitsPolicy(), RandomPolicy(cfg.seed)],
                        load_source(level.bank.path), max_glimpses=cfg.max_glimpses,
                        batch=cfg.batch, max_images=n, device=device)
        rf2, (h, w) = level.bank.rf ** 2, level.bank.meta["image_shape"][1:]
        for name, row in table.items():
            whole = name in (FULL_IMAGE, "ordered-logits")  # these need the level's full pass
            pixels = {t: float(h * w if whole else t * rf2) for t in ts}
            flops = {t: float(level.flops_image if whole else t * level.flops_cell) for t in ts}
            if index == last:
                label = FULL_IMAGE if name == FULL_IMAGE else f"{name} (finest level)"
            else:
                label = f"{name} (level {index}, scale {level.scale:g})"
            rows[label] = {"error": {t: row["error"][t] for t in ts}, "pixels": pixels,
                           "full_resolution_pixels": pixels if index == last
                           else dict.fromkeys(ts, 0.0), "flops": flops}
    return rows


def _full_pass(bank: MultiScaleBank, glimpses: int) -> dict[str, dict[int, float]]:
    """The costs of every level's pass over the whole image, at each T."""
    h, w = bank.image_shape[1:]
    cost = {"pixels": float(sum(np.prod(lv.bank.meta["image_shape"][1:]) for lv in bank.levels)),
            "full_resolution_pixels": float(h * w),
            "flops": float(sum(lv.flops_image for lv in bank.levels))}
    return {k: dict.fromkeys(range(1, glimpses + 1), v) for k, v in cost.items()}


def combine_multiscale(cfg: MultiScaleEvalConfig) -> dict[str, Any]:
    """Earlier runs (one per seed) combined: per policy and T, the error's
    :func:`agents.stats.summary` over the seeds and the mean costs."""
    from agents.stats import summary

    runs = []
    for spec in cfg.combine:
        path = Path(spec).expanduser()
        path = path / "results.json" if path.is_dir() else path
        try:
            runs.append(json.loads(path.read_text()))
            runs[-1]["policies"]  # noqa: B018 (the field must be there)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--combine {spec}: not the results.json of a 'glimpse "
                             f"evaluate-multiscale' run ({type(exc).__name__}: {exc})") from None
    if len({(r["bank"], r["num_images"]) for r in runs}) > 1:
        raise UsageError("--combine needs runs on the same bank and images")
    out = prepare_out(cfg.out, overwrite=cfg.overwrite)
    table: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(n for r in runs for n in r["policies"]):
        rows = [r["policies"][name] for r in runs if name in r["policies"]]
        ts = sorted(int(t) for t in rows[0]["error"])
        table[name] = {"seeds": len(rows),
                       "error_summary": {t: summary([r["error"][str(t)] for r in rows])
                                         for t in ts},
                       "error": {t: float(np.mean([r["error"][str(t)] for r in rows]))
                                 for t in ts},
                       **{k: {t: float(np.mean([r[k][str(t)] for r in rows])) for t in ts}
                          for k in ("pixels", "full_resolution_pixels", "flops")}}
    results = {"config": {"combine": list(cfg.combine), "out": cfg.out}, "bank": runs[0]["bank"],
               "num_images": runs[0]["num_images"], "runs": list(cfg.combine),
               "policies": table}
    return _write(out, results)


def evaluate_multiscale(cfg: MultiScaleEvalConfig) -> dict[str, Any]:
    """Run every policy (and the single-scale rows); write and return the results (with
    ``--combine``: :func:`combine_multiscale`)."""
    if cfg.combine:
        return combine_multiscale(cfg)
    device = setup(cfg.device, cfg.threads)
    bank = MultiScaleBank.load(cfg.bank)
    if cfg.max_glimpses < 1:
        raise UsageError(f"--max-glimpses must be at least 1, got {cfg.max_glimpses}")
    try:
        MultiScaleEnv(bank, glimpses=cfg.max_glimpses)  # checks T against the actions
    except ValueError as exc:
        raise UsageError(f"--max-glimpses: {exc}") from None
    out = prepare_out(cfg.out, overwrite=cfg.overwrite)
    n = bank.num_images if cfg.max_images is None else min(cfg.max_images, bank.num_images)
    table: dict[str, dict[str, Any]] = {}
    for policy in _policies(cfg, bank, device):
        run = run_multiscale(policy, bank, cfg.max_glimpses, batch=cfg.batch, max_images=n,
                             device=str(device))
        row = summarise_multiscale(run)
        env = MultiScaleEnv(bank, glimpses=cfg.max_glimpses)
        levels = env.action_level[run.actions.numpy()]
        row["glimpses_per_level"] = {int(lv): float((levels == lv).sum(1).mean())
                                     for lv in np.unique(levels)}
        if getattr(policy, "full_pass", False):  # ranks by every cell: every level's pass
            row.update(_full_pass(bank, cfg.max_glimpses))
        table[policy.name] = row
    if cfg.single_scale:
        table.update(_single_scale(cfg, bank, n, device))
    results = {"config": asdict(cfg), "bank": str(bank.path), "num_images": n,
               "levels": [{"scale": lv.scale, "grid": list(lv.grid)} for lv in bank.levels],
               "policies": table}
    return _write(out, results)


def _write(out: Path, results: dict[str, Any]) -> dict[str, Any]:
    """results.md, cost.png and results.json into ``out``; the table printed."""
    atomic_write(out / "results.md", lambda f: f.write(_markdown(results).encode()))
    _plot(results["policies"], out / "cost.png")
    print(_markdown(results))
    write_results(out, results, ["results.md", "cost.png"])
    return results


def _markdown(results: dict[str, Any]) -> str:
    table = results["policies"]
    ts = sorted({t for row in table.values() for t in row["error"]})
    lines = ["| test error (%) / full-resolution pixels at T = | " +
             " | ".join(str(t) for t in ts) + " |", "|---" * (len(ts) + 1) + "|"]
    for name, row in table.items():
        cells = []
        for t in ts:
            s = row.get("error_summary", {}).get(t)
            spread = f"{100 * s['std']:.2f}" if s else "0"
            error = (f"{100 * s['mean']:.2f} ± {spread}" if float(spread) > 0
                     else f"{100 * row['error'][t]:.2f}")
            cells.append(f"{error} / {row['full_resolution_pixels'][t]:,.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{results['num_images']:,} images of {results['bank']}.\n"


def _plot(table: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, row in table.items():
        ts = sorted(row["error"])
        x = [max(1.0, row["full_resolution_pixels"][t]) for t in ts]
        y = [100 * row["error"][t] for t in ts]
        ax.plot(x, y, "--" if name == FULL_IMAGE else "-o", label=name, markersize=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("full-resolution pixels processed per image (1 = none)")
    ax.set_ylabel("test error (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["MultiScaleEvalConfig", "evaluate_multiscale"]
