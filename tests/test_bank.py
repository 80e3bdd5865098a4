"""Feature banks: round trip, memory mapping, atomic writes and errors that name the file."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from glimpse_gym.bagnet import bagnet_tiny, image_logits, preprocess
from glimpse_gym.bank import FeatureBank
from glimpse_gym.bank_checks import meta_checksum
from glimpse_gym.bank_write import write_bank
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
    with pytest.raises(BankError, match="overwrite"):
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
        (lambda p: _truncate(p / "features.npy"), r"features.npy is damaged: \d+ bytes"),
        (lambda p: _truncate(p / "head.npz"), r"head.npz is damaged"),
        (lambda p: (p / "labels.npy").write_bytes(b"garbage"), r"labels.npy is damaged"),
        (lambda p: np.save(p / "labels.npy", np.zeros(3, np.int64)), r"labels.npy is damaged"),
        (lambda p: _flip(p / "features.npy"), r"features.npy is damaged: its sha256"),
        (lambda p: _flip(p / "logits.npy"), r"logits.npy is damaged: its sha256"),
        (lambda p: _flip(p / "images.npy"), r"images.npy is damaged: its sha256"),
        (lambda p: _bad_labels(p), r"labels.npy is damaged: its sha256"),
        (lambda p: _loop(p / "logits.npy"), r"logits.npy cannot be read"),
        (lambda p: _edit_meta(p, grid=[9, 9]), r"meta.json is damaged or was edited"),
        (lambda p: _edit_meta(p, format="other/1"), r"expected one of \('glimpse-gym-bank/1'"),
        (lambda p: _edit_meta(p, stats={"image_acc": 1.0}), r"meta.json is damaged or was"),
        (lambda p: _edit_meta(p, sign=False, meta_sha256=None), r"has no meta_sha256"),
        (lambda p: _edit_meta(p, sign=True, grid=[9, 9]), r"grid \[9, 9\] does not follow"),
        (lambda p: _edit_meta(p, sign=True, grid=None), r"grid must be a list"),
        (lambda p: _edit_model(p, stride=0), r"model.stride must be a positive integer"),
        (lambda p: _edit_model(p, rf=5), r"does not follow from image_shape"),
        (lambda p: _edit_meta(p, sign=True, image_shape=[1, 40, 40]), r"does not follow"),
        (lambda p: _edit_dataset(p, class_names=["a"]), r"1 class names for model.num_classes"),
        (lambda p: _edit_arrays(p, "labels"), r"arrays.labels is missing"),
        (lambda p: _edit_arrays(p, "features", file="../x.npy"), r"must name a file inside"),
    ],
    ids=["no-meta", "bad-meta", "no-logits", "no-head", "truncated", "truncated-head",
         "garbage", "short-labels", "flip-features", "flip-logits", "flip-images",
         "labels-range", "symlink-loop", "grid", "format", "stats", "unsigned", "signed-grid",
         "grid-null", "stride-0", "rf", "image-shape", "class-names", "no-labels-spec",
         "path-escape"],
)
def test_damage_raises_bank_error_naming_the_file(tiny_setup, tmp_path, damage, message) -> None:
    _, _, bank, _ = tiny_setup
    target = _damaged(bank.path, tmp_path)
    damage(target)
    with pytest.raises(BankError, match=message) as e:
        FeatureBank.load(target)
    assert str(target) in str(e.value)


def test_damage_after_a_verified_open_is_caught_at_the_next_open(tiny_setup, tmp_path) -> None:
    _, _, bank, _ = tiny_setup
    target = _damaged(bank.path, tmp_path)
    FeatureBank.load(target)  # the first open hashes every file and records it
    f = target / "features.npy"
    stat = f.stat()
    _flip(f)  # a write: a new modification time, so the file is hashed again
    with pytest.raises(BankError, match=r"features.npy is damaged: its sha256"):
        FeatureBank.load(target)
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same bytes count, old time:
    FeatureBank.load(target)  # only a full check can tell now
    with pytest.raises(BankError, match=r"features.npy is damaged: its sha256"):
        FeatureBank.load(target, verify=True)
    with pytest.raises(BankError, match="no feature bank at"):
        FeatureBank.load(tmp_path / "nowhere")


def test_bank_is_readable_by_others(tiny_setup) -> None:
    _, _, bank, _ = tiny_setup
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(bank.path.stat().st_mode) == 0o777 & ~umask


def test_stale_temporaries_of_killed_writers_are_removed(tiny_setup, tmp_path) -> None:
    model, ds, _, _ = tiny_setup
    from glimpse_gym.fileio import _host

    dead = 2**22 + 12345  # above the default pid_max: no such process
    here = _host()
    (tmp_path / f".b.tmp-{here}-{dead}-abc").mkdir()
    (tmp_path / f".b.tmp-{here}-{2**70}-x").mkdir()  # not a process id: kept, no error
    (tmp_path / f".b.tmp-{here}-{os.getpid()}-live").mkdir()  # a live writer's: kept
    (tmp_path / f".b.tmp-otherhost-{dead}-abc").mkdir()  # another machine's: kept
    write_bank(model, ds, tmp_path / "b", checkpoint=_checkpoint(model), progress=False,
               batch_size=256)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        f".b.tmp-{here}-{2**70}-x", f".b.tmp-{here}-{os.getpid()}-live",
        f".b.tmp-otherhost-{dead}-abc", "b"])


def _truncate(f: Path) -> None:
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


def _flip(f: Path, offset: int | None = None) -> None:
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2 if offset is None else offset] ^= 0x10
    f.write_bytes(bytes(raw))


def _loop(f: Path) -> None:
    f.unlink()
    f.symlink_to(f.name)


def _edit_meta(p: Path, sign: bool = False, **changes) -> None:
    meta = json.loads((p / "meta.json").read_text())
    meta.update(changes)
    if meta.get("meta_sha256") is None:
        meta.pop("meta_sha256", None)
    elif sign:  # a consistent checksum: only the field checks can tell
        meta["meta_sha256"] = meta_checksum(meta)
    (p / "meta.json").write_text(json.dumps(meta))


def _edit_model(p: Path, **changes) -> None:
    meta = json.loads((p / "meta.json").read_text())
    _edit_meta(p, sign=True, model={**meta["model"], **changes})


def _edit_dataset(p: Path, **changes) -> None:
    meta = json.loads((p / "meta.json").read_text())
    _edit_meta(p, sign=True, dataset={**meta["dataset"], **changes})


def _edit_arrays(p: Path, name: str, **changes) -> None:
    arrays = json.loads((p / "meta.json").read_text())["arrays"]
    if changes:
        arrays[name] = {**arrays[name], **changes}
    else:
        del arrays[name]
    _edit_meta(p, sign=True, arrays=arrays)


def _bad_labels(p: Path) -> None:
    labels = np.load(p / "labels.npy")
    labels[0] = 10
    np.save(p / "labels.npy", labels)


def test_overwrite_never_leaves_the_path_without_a_bank(tiny_setup, tmp_path) -> None:
    import threading

    model, ds, bank, _ = tiny_setup
    target = tmp_path / "b"
    shutil.copytree(bank.path, target)
    gaps, done = [], threading.Event()

    def reader() -> None:
        while not done.is_set():
            if not (target / "meta.json").exists():
                gaps.append(1)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(3):
            write_bank(model, ds, target, checkpoint=_checkpoint(model), overwrite=True,
                       progress=False, batch_size=256)
    finally:
        done.set()
        thread.join()
    assert gaps == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_overwrite_without_an_atomic_exchange_still_replaces(tiny_setup, tmp_path,
                                                              monkeypatch) -> None:
    import glimpse_gym.fileio

    model, ds, bank, _ = tiny_setup
    target = tmp_path / "b"
    shutil.copytree(bank.path, target)
    monkeypatch.setattr(glimpse_gym.fileio, "_rename_exchange", lambda a, b: False)
    other = bagnet_tiny(num_classes=10).eval()
    new = write_bank(other, ds, target, checkpoint=_checkpoint(other), overwrite=True,
                     progress=False, batch_size=256)
    assert new.meta["model"]["hash"] == state_dict_hash(other.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_a_failed_fallback_replacement_keeps_the_old_bank(tiny_setup, tmp_path,
                                                          monkeypatch) -> None:
    import glimpse_gym.fileio

    model, ds, bank, _ = tiny_setup
    target = tmp_path / "b"
    shutil.copytree(bank.path, target)
    before = json.loads((target / "meta.json").read_text())
    monkeypatch.setattr(glimpse_gym.fileio, "_rename_exchange", lambda a, b: False)
    rename = os.rename

    def killed_while_renaming_in(src, dst):
        if Path(dst) == target and ".tmp-" in Path(src).name:
            raise KeyboardInterrupt
        return rename(src, dst)

    monkeypatch.setattr(glimpse_gym.fileio.os, "rename", killed_while_renaming_in)
    with pytest.raises(KeyboardInterrupt):
        write_bank(bagnet_tiny(num_classes=10).eval(), ds, target,
                   checkpoint=_checkpoint(model), overwrite=True, progress=False)
    monkeypatch.undo()
    assert json.loads((target / "meta.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
