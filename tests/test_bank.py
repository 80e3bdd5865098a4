"""Feature banks: round trip, memory mapping, atomic writes and errors that name the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from glimpse_gym.bagnet import bagnet_tiny, image_logits, preprocess
from glimpse_gym.bank import FeatureBank, write_bank
from glimpse_gym.datasets import make_dataset
from glimpse_gym.errors import BankError
from glimpse_gym.fileio import state_dict_hash


def _checkpoint(model) -> dict:
    return {"arch": "bagnet-tiny", "arch_kwargs": {"num_classes": 10},
            "model_hash": state_dict_hash(model.state_dict()),
            "normalization": {"mean": [0.1], "std": [0.3]}}


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    torch.manual_seed(0)
    model = bagnet_tiny(num_classes=10).eval()
    ds = make_dataset("digits", "val")
    root = tmp_path_factory.mktemp("banks")
    bank = write_bank(model, ds, root / "val", checkpoint=_checkpoint(model), batch_size=64,
                      progress=False)
    return model, ds, bank, root


def test_round_trip_shapes_dtypes_and_values(tiny_setup) -> None:
    model, ds, bank, _ = tiny_setup
    n = len(ds)
    h, w = model.grid_size(32, 32)
    assert isinstance(bank.features, np.memmap) and isinstance(bank.logits, np.memmap)
    assert bank.features.shape == (n, model.feature_dim, h, w) and bank.features.dtype == np.float16
    assert bank.logits.shape == (n, 10, h, w) and bank.logits.dtype == np.float32
    assert bank.labels.dtype == np.int64 and np.array_equal(bank.labels, ds.labels.numpy())
    assert bank.images.dtype == np.uint8 and np.array_equal(bank.images, ds.images.numpy())
    with torch.no_grad():
        out = model(preprocess(ds.images[:8], [0.1], [0.3]))
    np.testing.assert_allclose(bank.logits[:8], out.logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bank.features[:8], out.features.numpy(), rtol=1e-3, atol=1e-3)
    # the stored head recomputes the logits from the stored features
    recomputed = np.einsum("kd,ndhw->nkhw", bank.head_weight, bank.features[:8].astype(np.float32))
    recomputed += bank.head_bias[None, :, None, None]
    np.testing.assert_allclose(recomputed, bank.logits[:8], rtol=1e-2, atol=1e-2)
    meta = bank.meta
    assert meta["grid"] == [h, w] and meta["image_shape"] == [1, 32, 32]
    assert meta["model"]["hash"] == state_dict_hash(model.state_dict())
    assert (meta["model"]["rf"], meta["model"]["stride"]) == (model.rf, model.stride)
    predicted = image_logits(torch.from_numpy(np.array(bank.logits))).argmax(1).numpy()
    acc = (predicted == bank.labels).mean()
    assert meta["stats"]["image_acc"] == pytest.approx(acc)
    boxes = bank.cell_boxes()
    assert boxes.shape == (h * w, 4) and tuple(boxes[w + 1]) == model.cell_box(1, 1)


def test_expect_mismatch_names_every_field(tiny_setup) -> None:
    _, _, bank, _ = tiny_setup
    FeatureBank.load(bank.path, expect={"dataset": "digits", "split": "val", "grid": [10, 10]})
    with pytest.raises(BankError, match="dataset: bank has 'digits', expected 'cifar10'") as e:
        FeatureBank.load(bank.path, expect={"dataset": "cifar10", "model_hash": "abc"})
    assert "model_hash" in str(e.value) and str(bank.path) in str(e.value)


def test_refuses_to_overwrite_and_leaves_no_temporary_on_failure(tiny_setup, tmp_path) -> None:
    model, ds, bank, root = tiny_setup
    with pytest.raises(FileExistsError, match="overwrite"):
        write_bank(model, ds, bank.path, checkpoint=_checkpoint(model), progress=False)
    wrong = make_dataset("arrays", "train", images=np.zeros((8, 3, 32, 32), np.uint8),
                         labels=np.zeros(8, np.int64))
    with pytest.raises(ValueError, match="1-channel"):
        write_bank(model, wrong, tmp_path / "x", checkpoint=_checkpoint(model), progress=False)
    assert list(tmp_path.iterdir()) == []

    class Boom(Exception):
        pass

    def exploding(*args, **kwargs):
        raise Boom

    broken = bagnet_tiny(num_classes=10).eval()
    broken.forward = exploding  # fail midway, after the temporary folder exists
    with pytest.raises(Boom):
        write_bank(broken, ds, tmp_path / "half", checkpoint=_checkpoint(model), progress=False)
    assert list(tmp_path.iterdir()) == []  # no half bank, no temporary


def test_overwrite_replaces_atomically(tiny_setup, tmp_path) -> None:
    model, ds, bank, _ = tiny_setup
    target = tmp_path / "b"
    shutil.copytree(bank.path, target)
    other = bagnet_tiny(num_classes=10).eval()
    new = write_bank(other, ds, target, checkpoint=_checkpoint(other), overwrite=True,
                     progress=False)
    assert new.meta["model"]["hash"] == state_dict_hash(other.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def _damaged(bank_path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bank"
    shutil.copytree(bank_path, target)
    return target


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "meta.json").unlink(), r"meta.json is missing"),
        (lambda p: (p / "meta.json").write_text("{not json"), r"meta.json is damaged"),
        (lambda p: (p / "logits.npy").unlink(), r"logits.npy is missing"),
        (lambda p: (p / "head.npz").unlink(), r"head.npz is missing"),
        (lambda p: _truncate(p / "features.npy"), r"features.npy is damaged"),
        (lambda p: (p / "labels.npy").write_bytes(b"garbage"), r"labels.npy is damaged"),
        (lambda p: np.save(p / "labels.npy", np.zeros(3, np.int64)),
         r"labels.npy is int64\[3\], but meta.json says int64\[144\]"),
        (lambda p: _edit_meta(p, grid=[9, 9]), r"grid 10x10 but meta.json says \[9, 9\]"),
        (lambda p: _edit_meta(p, format="other/1"), r"expected 'glimpse-gym-bank/1'"),
        (lambda p: _bad_labels(p), r"labels outside 0..9"),
    ],
    ids=["no-meta", "bad-meta", "no-logits", "no-head", "truncated", "garbage", "short-labels",
         "grid", "format", "labels-range"],
)
def test_damage_raises_bank_error_naming_the_file(tiny_setup, tmp_path, damage, message) -> None:
    _, _, bank, _ = tiny_setup
    target = _damaged(bank.path, tmp_path)
    damage(target)
    with pytest.raises(BankError, match=message):
        FeatureBank.load(target)


def test_verify_catches_flipped_bytes(tiny_setup, tmp_path) -> None:
    _, _, bank, _ = tiny_setup
    target = _damaged(bank.path, tmp_path)
    raw = bytearray((target / "features.npy").read_bytes())
    raw[-3] ^= 0xFF
    (target / "features.npy").write_bytes(bytes(raw))
    FeatureBank.load(target)  # same shape and dtype: only the checksum can tell
    with pytest.raises(BankError, match=r"features.npy is damaged: its sha256"):
        FeatureBank.load(target, verify=True)
    with pytest.raises(BankError, match="no feature bank at"):
        FeatureBank.load(tmp_path / "nowhere")


def _truncate(f: Path) -> None:
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


def _edit_meta(p: Path, **changes) -> None:
    meta = json.loads((p / "meta.json").read_text())
    meta.update(changes)
    (p / "meta.json").write_text(json.dumps(meta))


def _bad_labels(p: Path) -> None:
    labels = np.load(p / "labels.npy")
    labels[0] = 10
    np.save(p / "labels.npy", labels)
