"""Shared fixtures: where the optional shared data lives, and tiny synthetic inputs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GLIMPSE_SHARED_DATA", REPO.parent / "shared" / "data"))
MNIST_ROOT = SHARED_DATA
OFFICIAL_JSON = SHARED_DATA / "bagnet" / "official_state_dicts.json"

torch.set_num_threads(min(2, torch.get_num_threads()))
# records of verified banks go to a throw-away cache, not the user's
# (removed when the session ends, as are the log folders SB3 makes when given none)
_TEST_TMP = tempfile.mkdtemp(prefix="glimpse-gym-test-cache-")
os.environ["GLIMPSE_GYM_CACHE"] = _TEST_TMP
os.environ["SB3_LOGDIR"] = os.path.join(_TEST_TMP, "sb3")
atexit.register(shutil.rmtree, _TEST_TMP, ignore_errors=True)


def has_mnist() -> bool:
    return (MNIST_ROOT / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists()


needs_mnist = pytest.mark.skipif(
    not has_mnist(), reason=f"MNIST not found under {MNIST_ROOT}/MNIST/raw (set "
    "GLIMPSE_SHARED_DATA to a folder holding MNIST/raw to run these tests)")
needs_official_json = pytest.mark.skipif(
    not OFFICIAL_JSON.exists(), reason=f"{OFFICIAL_JSON} not found (the official BagNet "
    "state_dict facts live in the project's shared data folder)")


@pytest.fixture(scope="session")
def multiscale_banks(tmp_path_factory):
    """Three-level multi-scale banks of the digits splits through a random bagnet-tiny:
    2x2, 6x6 and 10x10 cells (scales 0.5, 0.75, 1). Returns ``(root, {split: bank})``."""
    from glimpse_gym.bagnet import bagnet_tiny
    from glimpse_gym.datasets import make_dataset
    from glimpse_gym.fileio import state_dict_hash
    from glimpse_gym.multiscale import write_multiscale_bank

    torch.manual_seed(0)
    model = bagnet_tiny(num_classes=10).eval()
    ckpt = {"arch": "bagnet-tiny", "arch_kwargs": {"num_classes": 10},
            "model_hash": state_dict_hash(model.state_dict()),
            "normalization": {"mean": [0.1], "std": [0.3]}}
    root = tmp_path_factory.mktemp("multiscale-banks")
    return root, {split: write_multiscale_bank(model, make_dataset("digits", split), root / split,
                                               [0.5, 0.75, 1], checkpoint=ckpt, batch_size=256,
                                               progress=False)
                  for split in ("train", "val", "test")}
