"""Shared fixtures: where the optional shared data lives, and tiny synthetic inputs."""

from __future__ import annotations

import os
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
os.environ["GLIMPSE_GYM_CACHE"] = tempfile.mkdtemp(prefix="glimpse-gym-test-cache-")


def has_mnist() -> bool:
    return (MNIST_ROOT / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists()


needs_mnist = pytest.mark.skipif(
    not has_mnist(), reason=f"MNIST not found under {MNIST_ROOT}/MNIST/raw (set "
    "GLIMPSE_SHARED_DATA to a folder holding MNIST/raw to run these tests)")
needs_official_json = pytest.mark.skipif(
    not OFFICIAL_JSON.exists(), reason=f"{OFFICIAL_JSON} not found (the official BagNet "
    "state_dict facts live in the project's shared data folder)")
