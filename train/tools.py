"""Small subcommands: list datasets, inspect a bank, export a checkpoint for shipping."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from glimpse_gym.bagnet import load_checkpoint
from glimpse_gym.bagnet.checkpoint import FORMAT, weights_hash
from glimpse_gym.bank import FeatureBank
from glimpse_gym.datasets import DATASETS, dataset_options
from glimpse_gym.fileio import save_payload


@dataclass
class DatasetsConfig:
    """Options of ``glimpse datasets``."""

    verbose: bool = False
    """also list every dataset's options and their defaults"""


def list_datasets_cmd(cfg: DatasetsConfig) -> None:
    """Print the dataset registry."""
    for name, spec in DATASETS.items():
        print(f"{name:18s} {spec.summary}")
        if cfg.verbose:
            for key, default in dataset_options(name).items():
                print(f"{'':20s}{key}={default!r}")


@dataclass
class BankInfoConfig:
    """Options of ``glimpse bank-info``."""

    bank: str = "runs/banks/digits/test"
    """feature bank directory"""
    verify: bool = False
    """check every file's sha256 against meta.json"""
    glimpses: int = 0
    """also print the accuracy from T cells chosen at random / by ordered logits / by the
    true label's logits (an oracle), T = this value (0: skip)"""


def bank_info(cfg: BankInfoConfig) -> None:
    """Load (and check) a bank and print its metadata."""
    bank = FeatureBank.load(cfg.bank, verify=cfg.verify)
    summary = {k: bank.meta[k] for k in ("dataset", "model", "grid", "image_shape", "stats")}
    summary["dataset"] = {k: v for k, v in summary["dataset"].items() if k != "class_names"}
    summary["storage"] = bank.storage()
    print(json.dumps(summary, indent=1))
    st = summary["storage"]
    print(f"{bank.num_images:,} images in {st['parts']} part{'s' * (st['parts'] > 1)}: "
          f"{human_bytes(st['total'])} on disk, {human_bytes(st['per_image'])} per image ("
          + ", ".join(f"{k} {human_bytes(v / max(bank.num_images, 1))}"
                      for k, v in st["arrays"].items()) + ")")
    print(f"ok: {bank.path}" + (" (checksums verified)" if cfg.verify else ""))
    if cfg.glimpses:
        from glimpse_gym.envs.source import source_from_bank
        from train.evaluate import print_baselines

        print_baselines(source_from_bank(bank), cfg.glimpses)


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 kB'`` (powers of 1000, as disks are sold).

    >>> human_bytes(512), human_bytes(73_728), human_bytes(94.4e9)
    ('512 B', '73.7 kB', '94.4 GB')
    """
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


@dataclass
class ExportConfig:
    """Options of ``glimpse export-bagnet``."""

    checkpoint: str = "runs/bagnet/checkpoint.pt"
    """training checkpoint to export"""
    out: str = "bagnet.pt"
    """where to write the slim checkpoint (model, config, normalisation, metrics; no optimizer)"""
    half: bool = False
    """store the weights in float16: half the size, cast back to float32 when loaded (how
    the package's shipped task weights are stored)"""


def export_bagnet(cfg: ExportConfig) -> None:
    """Drop the optimizer state from a checkpoint, keeping everything needed to use it (also
    writes a checkpoint that has no checksum again with one)."""
    ckpt = load_checkpoint(cfg.checkpoint, require_checksum=False)  # weights still checked
    ckpt.pop("train_state", None)
    ckpt["format"] = FORMAT
    if cfg.half:
        ckpt["state_dict"] = {k: v.half() if v.is_floating_point() else v
                              for k, v in ckpt["state_dict"].items()}
        ckpt["model_hash"] = weights_hash(ckpt["state_dict"], ckpt.get("bn_by_scale"))
    save_payload(ckpt, cfg.out)
    print(f"wrote {cfg.out} ({Path(cfg.out).stat().st_size / 1e6:.2f} MB, "
          f"model hash {ckpt['model_hash']})")
