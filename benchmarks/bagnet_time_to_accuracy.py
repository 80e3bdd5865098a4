"""BagNet pretraining recipes compared in one run: images processed, wall time, test error.

Each recipe is ``glimpse pretrain-bagnet`` (per-cell + image-level cross-entropy, the task's
dataset) with some options changed; they run one after the other in this process, so a slow
spell of the machine shows in all of them alike. The first recipe is the reference: every
other row is reported as a ratio of its images processed and its training time to the
reference's, and whether it reaches the reference's test error (or better) with at most half
of its images. Each recipe's error is also compared with the reference's on the same test
images: the difference with its 95 % bootstrap interval over the images (the test set's
sampling noise; one training seed per recipe says nothing of the seed-to-seed spread).

    python benchmarks/bagnet_time_to_accuracy.py --task cluttered-mnist --root ../shared/data \\
        --recipe current:epochs=15 --recipe half:epochs=7

A recipe is ``NAME:KEY=VALUE,KEY=VALUE`` over the options of ``glimpse pretrain-bagnet``
(``epochs``, ``batch_size``, ``lr``, ``warmup``, ``weight_decay``, ``image_loss``,
``width``, ``feature_dim``, ``resample_canvases``, ...). A recipe whose folder already holds
its ``metrics.json`` is read back, not trained again (``--overwrite`` retrains).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from agents.stats import paired_difference
from glimpse_gym.bagnet import evaluate_bagnet, load_bagnet
from glimpse_gym.tasks import TASKS
from train.pretrain_bagnet import PretrainConfig, make_split, pretrain_bagnet
from train.results import BAGNET_EPOCHS


def parse_recipe(text: str) -> tuple[str, dict[str, Any]]:
    """``"half:epochs=7,batch_size=64"`` -> ``("half", {"epochs": 7, "batch_size": 64})``,
    each value converted to the type of the option's default."""
    name, colon, body = text.partition(":")
    if not colon or not name or "/" in name or "=" in name:
        raise ValueError(f"recipe {text!r}: expected NAME:KEY=VALUE,... (a NAME without '/' "
                         "or '=', then a colon)")
    fields = {f.name: f for f in dataclasses.fields(PretrainConfig)}
    overrides: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"recipe {text!r}: {item!r} is not KEY=VALUE with KEY an option "
                             "of pretrain-bagnet (e.g. epochs=7, batch_size=64, lr=0.004)")
        default = fields[key].default
        if isinstance(default, bool):
            overrides[key] = value.strip().lower() in ("1", "true", "yes")
        elif isinstance(default, (int, float)):
            overrides[key] = type(default)(value)
        elif default is None and key in ("width", "feature_dim", "max_train_images"):
            overrides[key] = int(value)
        else:
            overrides[key] = value
    return name, overrides


def run_recipe(base: PretrainConfig, name: str, overrides: dict[str, Any], out: Path,
               overwrite: bool) -> dict[str, Any]:
    """Train one recipe (or read its earlier metrics) -> its row."""
    folder = out / name
    if (folder / "metrics.json").is_file() and not overwrite:
        metrics = json.loads((folder / "metrics.json").read_text())
        print(f"{name}: read back from {folder / 'metrics.json'}")
    else:  # an interrupted recipe continues from its last epoch (its time accumulates)
        resume = (folder / "bagnet.pt").is_file() and not overwrite
        if resume:
            print(f"{name}: continuing {folder / 'bagnet.pt'}")
        cfg = dataclasses.replace(base, **overrides, out=str(folder / "bagnet.pt"),
                                  overwrite=not resume, resume=resume)
        metrics = pretrain_bagnet(cfg)
    return {"recipe": name, "overrides": overrides, "epochs": metrics["epoch"],
            "images": metrics["epoch"] * metrics["images_per_epoch"],
            "train_time_s": metrics["train_time_s"], "wall_time_s": metrics["wall_time_s"],
            "train_images_per_s": metrics.get("train_images_per_s"),
            "val_error": metrics["val"]["image_error"],
            "test_error": metrics.get("test", {}).get("image_error"),
            "checkpoint": str(folder / "bagnet.pt")}


def outcomes_on_test(test: Any, checkpoint: str, batch_size: int = 512) -> Any:
    """Per image of the split ``test``, whether the checkpoint's image-level prediction is
    right."""
    model, ckpt = load_bagnet(checkpoint)
    norm = ckpt["normalization"]
    return evaluate_bagnet(model, test, norm["mean"], norm["std"], per_image=True,
                           batch_size=batch_size)["correct"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="cluttered-mnist", choices=sorted(TASKS),
                        help="the task whose dataset the BagNets are trained on")
    parser.add_argument("--root", default=None, help="folder holding the dataset's files")
    parser.add_argument("--recipe", action="append", default=None,
                        help="NAME:KEY=VALUE,... (repeatable; the first is the reference; "
                             "default: the task's recipe, then the same with half the epochs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-train-images", type=int, default=None,
                        help="train on the first N images only (a quick check of the script)")
    parser.add_argument("--out", default="runs/bench/bagnet-tta",
                        help="folder of the recipes' checkpoints and of results.json")
    parser.add_argument("--overwrite", action="store_true",
                        help="retrain recipes whose metrics.json exists (without it, a recipe "
                             "cut short continues from its last epoch)")
    args = parser.parse_args()
    task = TASKS[args.task]
    epochs = BAGNET_EPOCHS[task.name]
    texts = args.recipe or [f"current:epochs={epochs}", f"half:epochs={epochs // 2}"]
    try:
        recipes = [parse_recipe(t) for t in texts]
    except ValueError as e:
        parser.error(str(e))
    base = PretrainConfig(dataset=task.dataset, root=args.root, image_loss=1.0, seed=args.seed,
                          threads=args.threads, progress=False,
                          data_option=[f"{k}={v}" for k, v in task.data_options.items()],
                          max_train_images=args.max_train_images)
    out = Path(args.out)
    rows = [run_recipe(base, name, overrides, out, args.overwrite)
            for name, overrides in recipes]
    ref = rows[0]
    test = make_split(base, "test")  # built once: every recipe is read on the same images
    outcomes = [outcomes_on_test(test, row["checkpoint"], base.eval_batch_size) for row in rows]
    print(f"\n{task.name}, seed {args.seed}, {args.threads} threads; reference: {ref['recipe']}")
    print(f"{'recipe':12s} {'images':>10s} {'x ref':>6s} {'train time':>11s} {'x ref':>6s} "
          f"{'test error':>10s} {'val error':>9s} {'test - ref [95 % interval]':>27s}  "
          "at most half the images, error <= ref")
    for row, correct in zip(rows, outcomes, strict=True):
        row["images_ratio"] = row["images"] / ref["images"]
        row["time_ratio"] = row["train_time_s"] / ref["train_time_s"]
        row["meets"] = (row is not ref and row["images_ratio"] <= 0.5
                        and row["test_error"] is not None
                        and row["test_error"] <= ref["test_error"])
        diff = row["test_minus_ref"] = paired_difference(correct, outcomes[0])
        lo, hi = diff["ci95"]
        print(f"{row['recipe']:12s} {row['images']:10,d} {row['images_ratio']:6.2f} "
              f"{row['train_time_s'] / 60:9.1f} m {row['time_ratio']:6.2f} "
              f"{100 * row['test_error']:9.2f}% {100 * row['val_error']:8.2f}% "
              f"{100 * diff['mean']:+9.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"
              f"{' differs' if diff['differs'] else '        '}  "
              f"{'-' if row is ref else ('yes' if row['meets'] else 'no')}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"task": task.name, "seed": args.seed,
                                                  "rows": rows}, indent=1))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
