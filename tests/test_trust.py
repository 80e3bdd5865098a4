"""Files from somebody else: crafted files run no code through any loader, and a policy is
checked against the bank it is run on.

Every crafted file here is shown to be live first (the unsafe way of loading it, plain
``torch.load`` or SB3's ``PPO.load``, does run its command), so a loader that leaves the
marker file absent has really refused it.
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import glimpse_gym  # noqa: F401  (registers the ids)
from agents.loading import make_policy
from agents.sb3_io import MANIFEST, read_sb3
from glimpse_gym.bank import FeatureBank
from glimpse_gym.datasets import make_dataset
from glimpse_gym.envs import load_source
from glimpse_gym.errors import BankError, CheckpointError, DatasetError, GlimpseGymError
from glimpse_gym.pretrained import DEFAULT_CHECKPOINT
from train.cli import main
from train.extract_features import ExtractConfig, extract_features

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "crafted.py"
_spec = importlib.util.spec_from_file_location("crafted", SCRIPT)
crafted = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crafted)  # the crafted-file builders and the list of loaders


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained agents and the digits banks they were trained on."""
    root = tmp_path_factory.mktemp("runs")
    crafted.make_runs(root)
    return root


def _crafted_pt(path: Path, marker: Path) -> Path:
    return crafted.crafted_pt(path, marker)


def _crafted_zip(source: Path, path: Path, marker: Path, member: str = "data") -> Path:
    return crafted.crafted_zip(source, path, marker, member)


def test_the_crafted_files_are_live(runs, tmp_path) -> None:
    marker = tmp_path / "ran"
    torch.load(_crafted_pt(tmp_path / "c.pt", marker), weights_only=False)
    assert marker.exists()
    marker.unlink()
    from sb3_contrib import MaskablePPO
    with pytest.raises((TypeError, ValueError)):  # what it unpickled: the command's result
        MaskablePPO.load(_crafted_zip(runs / "ppo" / "last.zip", tmp_path / "c.zip", marker))
    assert marker.exists()  # SB3's own loading ran the command


def test_a_crafted_pt_runs_nothing_through_any_loader(runs, tmp_path, capsys) -> None:
    marker = tmp_path / "ran"
    pt = _crafted_pt(tmp_path / "crafted.pt", marker)
    outcomes = {}
    for name, load in crafted.pt_loaders(pt, marker, runs, tmp_path).items():
        try:
            result = load()
        except GlimpseGymError as exc:
            outcomes[name] = type(exc).__name__
            message = str(exc)
        else:
            outcomes[name] = result
            message = capsys.readouterr().err
        assert not marker.exists(), f"{name} ran the file's command"
        assert "asks to build posix.system" in message, (name, message)
    # the command line refuses in one line (exit status 2); the functions raise
    assert len(outcomes) == 14
    assert all(v in (2, "CheckpointError") for v in outcomes.values()), outcomes


@pytest.mark.parametrize("member", ["data", "policy.pth"])
def test_a_crafted_zip_runs_nothing_through_the_command_line(runs, tmp_path, member) -> None:
    marker = tmp_path / "ran"
    crafted = _crafted_zip(runs / "ppo" / "last.zip", tmp_path / "c.zip", marker, member)
    bank = str(runs / "banks" / "test")
    resume = tmp_path / "resume"
    resume.mkdir()
    _crafted_zip(runs / "ppo" / "last.zip", resume / "last.zip", marker, member)
    rcs = [main(["evaluate", "--bank", bank, "--policy", f"x={crafted}", "--out",
                 str(tmp_path / "e"), "--pictures", "0", "--max-images", "32"]),
           main(["train", "maskable-ppo", "--banks", str(runs / "banks"), "--out", str(resume),
                 "--resume", "--total-timesteps", "1", "--device", "cpu", "--no-progress",
                 "--num-envs", "4", "--eval-images", "8", "--glimpses", "3"])]
    assert not marker.exists()
    # a pickled data entry is never read: the file loads from its manifest and weights;
    # a pickled policy.pth is refused
    assert rcs == ([0, 0] if member == "data" else [2, 2])
    if member == "policy.pth":
        with pytest.raises(CheckpointError, match="cannot be read safely"):
            read_sb3(crafted)


def test_a_zip_from_elsewhere_is_refused_with_the_trust_hint(runs, tmp_path) -> None:
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(runs / "ppo" / "last.zip") as z, zipfile.ZipFile(plain, "w") as w:
        for n in z.namelist():
            if n != MANIFEST:
                w.writestr(n, z.read(n))
    with pytest.raises(CheckpointError, match="PPO.load reads it"):
        read_sb3(plain)


def test_a_flipped_byte_in_a_zip_is_caught(runs, tmp_path) -> None:
    raw = bytearray((runs / "ppo" / "last.zip").read_bytes())
    caught = 0
    rng = np.random.default_rng(0)
    for offset in rng.integers(0, len(raw), 20):
        damaged = bytearray(raw)
        damaged[offset] ^= 1 << int(rng.integers(8))
        path = tmp_path / "d.zip"
        path.write_bytes(bytes(damaged))
        try:
            f = read_sb3(path)
        except CheckpointError:
            caught += 1
            continue
        clean = read_sb3(runs / "ppo" / "last.zip")  # loaded: then it must be the same
        assert f.manifest == clean.manifest
        for name, state in clean.params["policy"].items():
            assert torch.equal(state, f.params["policy"][name])
    assert caught >= 15


def test_crafted_arrays_are_refused(tmp_path) -> None:
    npz = tmp_path / "a.npz"
    np.savez(npz, images=np.array([crafted.Command(tmp_path / "ran")], dtype=object),
             labels=np.zeros(1, np.int64))
    with pytest.raises(DatasetError):
        make_dataset("arrays", "train", path=npz)
    assert not (tmp_path / "ran").exists()


def test_crafted_bank_array_is_refused(runs, tmp_path) -> None:
    import shutil
    bank = tmp_path / "bank"
    shutil.copytree(runs / "banks" / "test", bank)
    np.save(bank / "labels.npy", np.array([crafted.Command(tmp_path / "ran")], dtype=object),
            allow_pickle=True)
    with pytest.raises(BankError):
        FeatureBank.load(bank)
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("kind", ["saccader", "reinforce", "ppo"])
def test_a_policy_is_checked_against_the_bank(runs, tmp_path, kind, capsys) -> None:
    from glimpse_gym.bagnet import build_bagnet, save_checkpoint
    path = {"saccader": runs / "saccader" / "policy.pt",
            "reinforce": runs / "reinforce" / "best.pt", "ppo": runs / "ppo" / "last.zip"}[kind]
    make_policy(f"p={path}", load_source(runs / "banks" / "test"))  # its own bank: fine
    model = build_bagnet("custom", kernels=[5, 3, 1], strides=[1, 2, 1], widths=[8, 8, 8],
                         num_classes=10, in_channels=1)
    ckpt = tmp_path / "other.pt"
    save_checkpoint(ckpt, model, arch="custom",
                    arch_kwargs={"kernels": [5, 3, 1], "strides": [1, 2, 1],
                                 "widths": [8, 8, 8], "num_classes": 10, "in_channels": 1},
                    class_names=[str(i) for i in range(10)], mean=[0.1], std=[0.3],
                    image_shape=[1, 32, 32], dataset={"name": "digits", "options": {}})
    extract_features(ExtractConfig(checkpoint=str(ckpt), out=str(tmp_path / "banks"),
                                   split=["test"], progress=False, device="cpu"))
    bank = str(tmp_path / "banks" / "test")
    capsys.readouterr()
    rc = main(["evaluate", "--bank", bank, "--policy", f"p={path}", "--out",
               str(tmp_path / "e")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "was trained on a bank with 10x10 grid" in err and "this bank has 13x13 grid" in err


def test_the_shipped_weights_carry_a_checksum() -> None:
    assert len(torch.load(DEFAULT_CHECKPOINT, weights_only=True)["checksum"]) == 64
