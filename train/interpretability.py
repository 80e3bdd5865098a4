"""``glimpse evaluate --interpretability``: do the cells each method ranks first carry the
evidence?

For every policy evaluated (its glimpses, in order), the gradient saliency of the full-image
BagNet (``--checkpoint``) and the attention maps of each ``--attention-checkpoint`` (a small
BagNet with NAM or ADCM blocks on the same grid), on the first ``--interpretability-images``
images: the full-image BagNet's accuracy with the receptive fields of the top T cells blanked
(deletion) and with only them kept (insertion), T = 1..Tmax
(:func:`agents.interpretability.deletion_insertion`). Written to ``results.json`` under
``interpretability`` and drawn in ``interpretability.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agents.evaluation import Occlusion
from agents.interpretability import (
    ATTENTION_BLOCKS,
    attention_ranking,
    deletion_insertion,
    saliency_ranking,
)
from glimpse_gym.bagnet import load_bagnet
from glimpse_gym.errors import UsageError
from glimpse_gym.pretrained import resolve_checkpoint


def attention_models(paths: list[str], source: Any, device: torch.device,
                     judge: str | None = None) -> list[tuple[str, Any, dict[str, Any]]]:
    """``(name, model, checkpoint)`` of each ``--attention-checkpoint``, checked against the
    bank's grid; one name per attention block the model has (``STEM:block``). A model other
    than ``judge`` (the BagNet that classifies the blanked images) gets a note: its maps are
    then tested on another model's decisions."""
    out = []
    for spec in paths:
        stem, path = _named(spec)
        model, ckpt = load_bagnet(resolve_checkpoint(path), device)
        blocks = [b for b in ATTENTION_BLOCKS if getattr(model, b, None) is not None]
        if not blocks:
            raise UsageError(f"--attention-checkpoint {path}: this BagNet has no NAM or ADCM "
                             "block (pretrain-bagnet --nam, --nam-spatial or --adcm)")
        grid = model.grid_size(*source.image_shape[1:])
        if tuple(grid) != tuple(source.grid):
            raise UsageError(f"--attention-checkpoint {path}: its grid on these images is "
                             f"{grid}, the bank's {tuple(source.grid)}: use a BagNet of the "
                             "bank's architecture")
        if judge is not None and Path(resolve_checkpoint(path)).resolve() != \
                Path(resolve_checkpoint(judge)).resolve():
            print(f"note: --attention-checkpoint {path} is not the BagNet that classifies "
                  f"(--checkpoint {judge}): its maps are tested on another model's decisions")
        out += [(f"{stem}:{b}", model, ckpt) for b in blocks]
    return out


def _named(spec: str) -> tuple[str, str]:
    """``NAME=PATH`` -> ``(NAME, PATH)``; a bare path is named by its file's stem."""
    name, sep, path = spec.partition("=")
    if sep and name and "/" not in name:
        return name, path
    return (Path(spec).stem if Path(spec).suffix else spec), spec


def interpretability_test(source: Any, occlusion: Occlusion, runs: dict[str, torch.Tensor],
                          attention: list[tuple[str, Any, dict[str, Any]]], tmax: int,
                          images: int, device: torch.device, progress: bool = True
                          ) -> dict[str, Any]:
    """The curves of every ranking on the first ``images`` images (see the module)."""
    if source.images is None:
        raise UsageError("--interpretability blanks image regions: the bank must store its "
                         "images (extract-features without --no-store-images)")
    m = min(images, source.num_images)
    pixels, labels = source.images[:m], torch.from_numpy(np.array(source.labels[:m]))
    model, mean, std = occlusion.model, occlusion.mean, occlusion.std
    rankings = {name: cells[:m] for name, cells in runs.items()}
    rankings["saliency"] = saliency_ranking(model, pixels, mean, std, tmax, device=device)
    for name, net, ckpt in attention:
        norm = ckpt["normalization"]
        rankings[name] = attention_ranking(net, pixels, norm["mean"], norm["std"],
                                           name.rsplit(":", 1)[1], tmax, device=device)
    curves = {}
    for name, cells in tqdm(rankings.items(), desc="deletion and insertion",
                            disable=not progress, leave=False):
        curves[name] = deletion_insertion(model, mean, std, pixels, labels, cells,
                                          source.cell_boxes(), tmax, device=device)
    return {"images": m, "tmax": tmax, "curves": curves}


KINDS = ("deletion", "insertion")


def combine_curves(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The interpretability tests of several seeds' evaluations as one: per ranking that
    every run has, the :func:`agents.stats.summary` over the runs of each T's accuracy and of
    its mean over T = 1..Tmax (the area under the curve, divided by Tmax). None unless every
    run has the test, on the same images and Tmax."""
    from agents.stats import summary

    found = [r.get("interpretability") for r in runs]
    if not all(found) or len({(f["images"], f["tmax"]) for f in found}) != 1:
        return None
    names = [n for n in found[0]["curves"] if all(n in f["curves"] for f in found)]
    curves = {}
    for name in names:
        rows = [f["curves"][name] for f in found]
        kinds = KINDS + (("area",) if all("area" in r for r in rows) else ())
        curves[name] = {kind: [summary([r[kind][t] for r in rows])
                               for t in range(found[0]["tmax"])] for kind in kinds}
        curves[name].update({f"{kind}_mean": summary([float(np.mean(r[kind])) for r in rows])
                             for kind in KINDS})
    return {"images": found[0]["images"], "tmax": found[0]["tmax"], "seeds": len(found),
            "curves": curves}


def combine_test(runs: list[dict[str, Any]], results: dict[str, Any], out: Path,
                 dataset: str) -> dict[str, Any] | None:
    """``evaluate --combine``'s part: the runs' tests combined (:func:`combine_curves`) into
    ``results["interpretability"]`` and ``OUT/interpretability.png``; a note when only some
    runs have the test."""
    curves = combine_curves(runs)
    tested = sum("interpretability" in r for r in runs)
    if curves is None and tested:
        print(f"note: {tested} of the {len(runs)} runs have the interpretability test (or "
              "they differ in images or Tmax): it is not combined")
    if curves:
        results["interpretability"] = curves
        plot_curves(curves, out / "interpretability.png", f"{dataset}: {curves['images']} "
                    f"images, mean of {curves['seeds']} seeds")
    return curves


def _mean(point: Any) -> float:
    """A curve's point: a number (one run) or a summary over seeds (its mean)."""
    return point["mean"] if isinstance(point, dict) else point


def plot_curves(result: dict[str, Any], path: Path, title: str) -> None:
    """Deletion and insertion accuracy against T, one line per ranking (over seeds: the mean,
    its 95 % interval shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = range(1, result["tmax"] + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, kind in zip(axes, KINDS, strict=True):
        for name, row in result["curves"].items():
            line, = ax.plot(ts, [100 * _mean(a) for a in row[kind]], marker=".", label=name)
            if isinstance(row[kind][0], dict):
                ax.fill_between(ts, [100 * a["ci95"][0] for a in row[kind]],
                                [100 * a["ci95"][1] for a in row[kind]],
                                color=line.get_color(), alpha=0.15)
        ax.set_title(f"{kind}: the top T cells' regions " +
                     ("blanked" if kind == "deletion" else "kept alone"))
        ax.set_xlabel("T (cells)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("full-image BagNet accuracy (%)")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_curves(result: dict[str, Any], columns: tuple[int, ...] = (1, 2, 4, 6, 8, 12)
                 ) -> None:
    """The curves as a text table at a few T (over seeds: the means)."""
    ts = [t for t in columns if t <= result["tmax"]]
    over = f", mean of {result['seeds']} seeds" if "seeds" in result else ""
    print(f"\nfull-image BagNet accuracy (%) on {result['images']} images{over}: top T cells "
          "blanked (deletion) | kept alone (insertion)")
    print(f"{'ranking':24s}" + "".join(f"{f'T={t}':>8s}" for t in ts) + " |"
          + "".join(f"{f'T={t}':>8s}" for t in ts))
    for name, row in result["curves"].items():
        print(f"{name:24s}" + "".join(f"{100 * _mean(row['deletion'][t - 1]):8.2f}" for t in ts)
              + " |" + "".join(f"{100 * _mean(row['insertion'][t - 1]):8.2f}" for t in ts))


def curves_markdown(result: dict[str, Any], columns: tuple[int, ...] = (1, 2, 4, 6, 8, 12)
                    ) -> str:
    """A combined test (:func:`combine_curves`) as a Markdown table: accuracy (%) with the
    top T cells blanked and kept alone, mean ± std over the seeds, and each curve's mean
    over T = 1..Tmax."""
    from train.markdown import _value

    ts = [t for t in columns if t <= result["tmax"]]
    cols = " | ".join(f"T = {t}" for t in ts)
    lines = [f"| ranking | deletion: {cols} | mean T = 1..{result['tmax']} | insertion: {cols} "
             f"| mean T = 1..{result['tmax']} |", "|---" * (2 * len(ts) + 3) + "|"]
    for name, row in result["curves"].items():
        cells = [_value(row["deletion"][t - 1]) for t in ts] + [_value(row["deletion_mean"])]
        cells += [_value(row["insertion"][t - 1]) for t in ts] + [_value(row["insertion_mean"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"The full-image BagNet's accuracy (%) on the first {result['images']:,} "
              f"images with the receptive fields of each ranking's top T cells blanked "
              f"(deletion: lower means the cells held more of the evidence) or with only them "
              f"kept (insertion: higher is better); mean ± std over {result['seeds']} seeds."]
    return "\n".join(lines) + "\n"


__all__ = ["attention_models", "combine_curves", "combine_test", "curves_markdown",
           "interpretability_test", "plot_curves", "print_curves"]
