"""Crafted files (a pickle that runs a shell command when loaded), the loaders they are
fed to, and the tiny runs they are made from: shared by ``benchmarks/robustness.py`` and
``tests/test_trust.py``."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class Command:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_pt(path: Path, marker: Path, fmt: str = "glimpse-gym-bagnet/1") -> Path:
    """A ``.pt`` of format ``fmt`` whose unpickling runs ``touch MARKER``."""
    torch.save({"format": fmt, "state_dict": {}, "payload": Command(marker)}, path)
    return path


def crafted_zip(source: Path, path: Path, marker: Path, member: str = "data") -> Path:
    """A copy of the ``glimpse train ppo`` zip ``source`` whose pickled ``data`` entries
    (``member="data"``: SB3's policy class, space and schedule) or whose ``policy.pth`` run
    ``touch MARKER``, with the manifest's checksums made to match, as an attacker would."""
    from agents.sb3_io import MANIFEST, _manifest_checksum, _sha256

    with zipfile.ZipFile(source) as z:
        raw = {n: z.read(n) for n in z.namelist()}
    if member == "data":
        data = json.loads(raw["data"])
        for key in ("policy_class", "observation_space", "lr_schedule"):
            data[key] = {":serialized:": base64.b64encode(pickle.dumps(Command(marker))).decode()}
        raw["data"] = json.dumps(data).encode()
    else:
        buf = path.with_name(path.name + ".pth")
        torch.save({"payload": Command(marker)}, buf)
        raw["policy.pth"] = buf.read_bytes()
        buf.unlink()
    manifest = json.loads(raw[MANIFEST])
    manifest["files"] = {n: _sha256(b) for n, b in raw.items() if n != MANIFEST}
    manifest["checksum"] = _manifest_checksum(manifest)
    raw[MANIFEST] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, b in raw.items():
            z.writestr(n, b)
    return path


def pt_loaders(pt: Path, marker: Path, runs: Path, work: Path) -> dict[str, Callable[[], Any]]:
    """Every loader of a ``.pt`` the project exposes, each reading ``pt`` (or, for the
    ``--resume`` of a training command, a crafted checkpoint in its output folder)."""
    import gymnasium as gym

    from agents.loading import make_policy
    from agents.reinforce import load_reinforce
    from agents.saccader import load_saccader
    from glimpse_gym.bagnet import bagnet9, load_bagnet, load_checkpoint, load_official_weights
    from glimpse_gym.envs import load_source
    from train.cli import main

    bank = runs / "banks" / "test"
    source = load_source(bank)

    def resume(command: list[str], name: str, fmt: str) -> list[str]:
        out = work / f"resume-{name}"
        out.mkdir(exist_ok=True)
        crafted_pt(out / name, marker, fmt)
        return [*command, "--banks", str(runs / "banks"), "--out", str(out), "--resume",
                "--device", "cpu", "--no-progress"]

    return {
        "load_checkpoint": lambda: load_checkpoint(pt),
        "load_bagnet": lambda: load_bagnet(pt),
        "load_saccader": lambda: load_saccader(pt),
        "load_reinforce": lambda: load_reinforce(pt),
        "load_official_weights": lambda: load_official_weights(bagnet9(), pt),
        "make_policy (evaluate's policy factory)": lambda: make_policy(f"x={pt}", source),
        "gym.make(checkpoint=...)": lambda: gym.make("Glimpse-v0", checkpoint=str(pt),
                                                     split="val"),
        "glimpse evaluate --checkpoint": lambda: main(
            ["evaluate", "--bank", str(bank), "--checkpoint", str(pt), "--out",
             str(work / "e1")]),
        "glimpse evaluate --policy NAME=.pt": lambda: main(
            ["evaluate", "--bank", str(bank), "--policy", f"x={pt}", "--out", str(work / "e2")]),
        "glimpse extract-features --checkpoint": lambda: main(
            ["extract-features", "--checkpoint", str(pt), "--out", str(work / "b"),
             "--no-progress"]),
        "glimpse export-bagnet --checkpoint": lambda: main(
            ["export-bagnet", "--checkpoint", str(pt), "--out", str(work / "x.pt")]),
        "glimpse pretrain-bagnet --resume": lambda: main(
            ["pretrain-bagnet", "--out", str(pt), "--resume", "--no-progress"]),
        "glimpse train saccader --resume": lambda: main(resume(
            ["train", "saccader", "--stage", "locations"], "locations.pt",
            "glimpse-gym-saccader/1")),
        "glimpse train reinforce --resume": lambda: main(resume(
            ["train", "reinforce"], "last.pt", "glimpse-gym-reinforce/1")),
    }


def zip_loaders(runs: Path, work: Path, marker: Path) -> dict[str, Callable[[], Any]]:
    """The command line's readers of a PPO zip, each given a crafted one (both kinds)."""
    from train.cli import main

    bank = runs / "banks" / "test"
    loaders: dict[str, Callable[[], Any]] = {}
    for member in ("data", "policy.pth"):
        z = crafted_zip(runs / "ppo" / "last.zip", work / f"crafted-{member}.zip", marker,
                        member)
        out = work / f"resume-zip-{member}"
        out.mkdir(exist_ok=True)
        crafted_zip(runs / "ppo" / "last.zip", out / "last.zip", marker, member)
        loaders[f"glimpse evaluate --policy NAME=.zip ({member})"] = lambda z=z: main(
            ["evaluate", "--bank", str(bank), "--policy", f"x={z}", "--out",
             str(work / f"ez-{z.stem}"), "--pictures", "0", "--max-images", "16"])
        loaders[f"glimpse train maskable-ppo --resume ({member})"] = lambda o=out: main(
            ["train", "maskable-ppo", "--banks", str(runs / "banks"), "--out", str(o),
             "--resume", "--total-timesteps", "1", "--num-envs", "4", "--eval-images", "8",
             "--glimpses", "3", "--device", "cpu", "--no-progress"])
    return loaders


def make_runs(root: Path) -> None:
    """The bank, checkpoints and zip the trials damage (tiny, on the embedded digits)."""
    from train.extract_features import ExtractConfig, extract_features
    from train.ppo import PPOConfig, train_maskable_ppo
    from train.reinforce import ReinforceConfig, train_reinforce
    from train.saccader import SaccaderConfig, train_saccader

    extract_features(ExtractConfig(out=str(root / "banks"), progress=False, device="cpu"))
    banks = str(root / "banks")
    quiet = {"progress": False, "device": "cpu"}
    train_saccader(SaccaderConfig(banks=banks, out=str(root / "saccader"), where_channels=8,
                                  mixed_channels=8, location_epochs=1, policy_epochs=1,
                                  eval_glimpses="6", **quiet))
    train_reinforce(ReinforceConfig(banks=banks, out=str(root / "reinforce"), iterations=2,
                                    num_envs=32, eval_every=2, eval_images=64, hidden=16,
                                    **quiet))
    train_maskable_ppo(PPOConfig(banks=banks, out=str(root / "ppo"), num_envs=16,
                                 total_timesteps=192, n_steps=12, batch_size=96,
                                 eval_freq=10_000, eval_images=64, glimpses=3, channels=8,
                                 **quiet))
