"""Compact banks: written by parts, int8 features, logits computed by the head. Each holds
what the plain bank holds (to the precision of its form), passes the same checks, and the
envs run from it."""

from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from glimpse_gym.bagnet import bagnet_tiny
from glimpse_gym.bank import FeatureBank
from glimpse_gym.bank_arrays import Dequantized, HeadLogits
from glimpse_gym.bank_checks import meta_checksum
from glimpse_gym.bank_write import TIMING_FIELDS, write_bank
from glimpse_gym.datasets import make_dataset
from glimpse_gym.errors import BankError, UsageError
from glimpse_gym.fileio import state_dict_hash
from glimpse_gym.shards import ShardedArray
from tests.envs.vector_check import assert_same_as_sync

ARRAYS = ("features", "logits", "labels", "images")


def _model_and_checkpoint():
    torch.manual_seed(0)
    model = bagnet_tiny(num_classes=10).eval()
    ckpt = {"arch": "bagnet-tiny", "arch_kwargs": {"num_classes": 10},
            "model_hash": state_dict_hash(model.state_dict()),
            "normalization": {"mean": [0.1], "std": [0.3]}}
    return model, ckpt


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    """The digits val split (144 images) through a random bagnet-tiny: in one part, in
    parts of 50 images (50, 50, 44), channels-last, and in parts with int8 features, no
    logits, channels-last."""
    model, ckpt = _model_and_checkpoint()
    ds = make_dataset("digits", "val")
    root = tmp_path_factory.mktemp("compact")
    kw = {"checkpoint": ckpt, "batch_size": 32, "progress": False}
    return {"whole": write_bank(model, ds, root / "whole", **kw),
            "parts": write_bank(model, ds, root / "parts", shard_images=50, **kw),
            "last": write_bank(model, ds, root / "last", channels_last=True, **kw),
            "compact": write_bank(model, ds, root / "compact", shard_images=50,
                                  feature_dtype="int8", store_logits=False,
                                  channels_last=True, **kw)}


@pytest.fixture(scope="module")
def pair(banks):
    return banks["whole"], banks["parts"]


def test_parts_hold_the_same_arrays(pair) -> None:
    whole, parts = pair
    assert parts.meta["format"] == "glimpse-gym-bank/2" and parts.meta["shards"] == [50, 50, 44]
    assert whole.meta["format"] == "glimpse-gym-bank/1" and "shards" not in whole.meta
    assert sorted(p.name for p in parts.path.glob("features-*.npy")) == [
        f"features-0000{i}.npy" for i in range(3)]
    for name in ARRAYS:
        a, b = getattr(whole, name), getattr(parts, name)
        assert isinstance(b, ShardedArray) and b.shape == a.shape and b.dtype == a.dtype
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=name)
    same = {k: v for k, v in whole.meta["stats"].items() if k not in TIMING_FIELDS}
    assert same == {k: v for k, v in parts.meta["stats"].items() if k not in TIMING_FIELDS}


def test_channels_last_holds_the_same_arrays_cell_by_cell(banks) -> None:
    whole, last = banks["whole"], banks["last"]
    for name in ("features", "logits"):
        assert last.meta["arrays"][name]["layout"] == "channels-last"
        raw = np.load(last.path / f"{name}.npy", mmap_mode="r")
        n, c, h, w = getattr(whole, name).shape
        assert raw.shape == (n, h, w, c)  # a cell's C values contiguous in the file
        np.testing.assert_array_equal(raw, np.moveaxis(np.asarray(getattr(whole, name)), 1, -1))
        np.testing.assert_array_equal(getattr(last, name)[[5, 2], :, 3],
                                      getattr(whole, name)[[5, 2], :, 3])
    assert whole.meta["arrays"]["features"].get("layout") is None


def test_one_part_per_image_and_more_images_than_the_bank(tmp_path) -> None:
    model, ckpt = _model_and_checkpoint()
    ds = make_dataset("digits", "val")
    big = write_bank(model, ds, tmp_path / "big", checkpoint=ckpt, progress=False,
                     shard_images=1000)
    assert big.meta["format"] == "glimpse-gym-bank/1"  # one part: the plain format
    with pytest.raises(UsageError, match="at least 1"):
        write_bank(model, ds, tmp_path / "bad", checkpoint=ckpt, shard_images=0)
    with pytest.raises(UsageError, match="must be one of"):
        write_bank(model, ds, tmp_path / "bad", checkpoint=ckpt, feature_dtype="int4")
    assert not (tmp_path / "bad").exists()


def test_int8_features_are_the_float_features_to_half_a_step(banks) -> None:
    whole, compact = banks["whole"], banks["compact"]
    assert isinstance(compact.features, Dequantized) and compact.features.dtype == np.float32
    assert compact.features.raw.dtype == np.int8 and compact.features.shape == whole.features.shape
    scale = compact.features.scale
    assert scale.shape == (whole.features.shape[1],) and (scale > 0).all()
    # float16 storage rounds too: allow its step on top of half an int8 step
    exact = np.asarray(whole.features, np.float32)
    err = np.abs(np.asarray(compact.features) - exact)
    assert (err <= scale[None, :, None, None] / 2 + np.abs(exact) * 2**-10 + 1e-6).all()
    assert compact.meta["stats"]["int8_clipped"] == 0  # the scales saw all 144 images
    st_whole, st_compact = whole.storage(), compact.storage()
    assert abs(st_compact["arrays"]["features"] * 2 - st_whole["arrays"]["features"]) < 1024
    assert "logits" not in st_compact["arrays"] and st_compact["parts"] == 3


def test_values_past_the_calibrated_range_are_clipped_and_counted(banks, tmp_path,
                                                                monkeypatch) -> None:
    import glimpse_gym.bank_write

    monkeypatch.setattr(glimpse_gym.bank_write, "CALIBRATION_IMAGES", 4)
    model, ckpt = _model_and_checkpoint()
    bank = write_bank(model, make_dataset("digits", "val"), tmp_path / "b", checkpoint=ckpt,
                      feature_dtype="int8", progress=False)
    raw = np.asarray(bank.features.raw)
    exact = np.asarray(banks["whole"].features, np.float32)
    over = np.abs(exact) > 127.5 * bank.features.scale[None, :, None, None] * (1 + 1e-3)
    assert over.any() and (np.abs(raw[over]) == 127).all()
    assert bank.meta["stats"]["int8_clipped"] == pytest.approx(over.mean(), abs=1e-3)


def test_logits_computed_by_the_head_match_the_stored_ones(banks) -> None:
    whole, compact = banks["whole"], banks["compact"]
    assert isinstance(compact.logits, HeadLogits) and compact.logits.shape == whole.logits.shape
    full = np.asarray(compact.logits)
    np.testing.assert_allclose(full, whole.logits, atol=0.05)  # int8 features behind them
    for key in [3, slice(10, 60), [143, 0, 51], (7, slice(None), 2, 3), (5, 4),
                np.array([[1, 2], [3, 140]]), (np.array([[1], [2]]), 3),
                (np.array([1, 99]), slice(2, 5), 1), (slice(None), 0, slice(1, 3), 4)]:
        np.testing.assert_allclose(compact.logits[key], full[key], rtol=1e-6, atol=1e-6,
                                   err_msg=repr(key))
    with pytest.raises(IndexError, match="integers and slices"):
        compact.logits[0, [1, 2]]


def _with_layout(p, name, layout):
    arrays = json.loads((p / "meta.json").read_text())["arrays"]
    arrays[name]["layout"] = layout
    return arrays


def _copy(bank, tmp_path):
    target = tmp_path / "bank"
    shutil.copytree(bank.path, target)
    return target


def _edit(p, **changes):
    meta = json.loads((p / "meta.json").read_text())
    meta.update(changes)
    meta["meta_sha256"] = meta_checksum(meta)
    (p / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: (p / "logits-00002.npy").unlink(), r"logits-00002.npy is missing"),
    (lambda p: (p / "features-00001.npy").write_bytes(b"x" * 10), r"features-00001.npy is dam"),
    (lambda p: _edit(p, shards=[50, 50, 45]), r"shards must be a list of positive image"),
    (lambda p: _edit(p, shards=[50, 50, 44, 0]), r"shards must be a list"),
    (lambda p: _edit(p, format="glimpse-gym-bank/1"), r"format 'glimpse-gym-bank/1' is a bank"),
    (lambda p: _edit(p, arrays={**json.loads((p / "meta.json").read_text())["arrays"],
                                "labels": {"files": ["labels-00000.npy"], "dtype": "int64",
                                           "shape": [144]}}),
     r"arrays.labels.files must name one file inside the bank per shard"),
    (lambda p: _edit(p, arrays=_with_layout(p, "labels", "channels-last")),
     r"arrays.labels.layout 'channels-last' is not one of"),
    (lambda p: _edit(p, arrays=_with_layout(p, "features", "sideways")),
     r"arrays.features.layout 'sideways' is not one of"),
])
def test_damage_to_a_part_is_named(pair, tmp_path, damage, message) -> None:
    target = _copy(pair[1], tmp_path)
    damage(target)
    with pytest.raises(BankError, match=message):
        FeatureBank.load(target)


def _head(p, drop=None, **extra):
    with np.load(p / "head.npz") as npz:
        head = {k: npz[k] for k in npz.files if k != drop}
    np.savez(p / "head.npz", **head, **extra)
    meta = json.loads((p / "meta.json").read_text())
    meta["sizes"]["head.npz"] = (p / "head.npz").stat().st_size
    from glimpse_gym.fileio import file_sha256
    meta["checksums"]["head.npz"] = file_sha256(p / "head.npz")
    _edit(p, sizes=meta["sizes"], checksums=meta["checksums"])


@pytest.mark.parametrize(("name", "damage", "message"), [
    ("compact", lambda p: _head(p, drop="feature_scale"), r"int8 features need its feature_sc"),
    ("compact", lambda p: _head(p, drop="feature_scale", feature_scale=np.ones(3, np.float32)),
     r"feature_scale is \[3\], expected one scale per channel"),
    ("parts", lambda p: _head(p, feature_scale=np.ones(16, np.float32)),
     r"features are float16 and it has one"),
])
def test_an_int8_bank_needs_its_scales(banks, tmp_path, name, damage, message) -> None:
    target = _copy(banks[name], tmp_path)
    damage(target)
    with pytest.raises(BankError, match=message):
        FeatureBank.load(target)


def test_a_part_of_another_size_is_caught_before_reading(pair, tmp_path) -> None:
    target = _copy(pair[1], tmp_path)
    meta = json.loads((target / "meta.json").read_text())
    np.save(target / "labels-00001.npy", np.zeros(49, np.int64))  # one image short
    meta["sizes"]["labels-00001.npy"] = (target / "labels-00001.npy").stat().st_size
    _edit(target, sizes=meta["sizes"])
    with pytest.raises(BankError, match=r"labels-00001.npy is damaged: its sha256"):
        FeatureBank.load(target)


@pytest.mark.parametrize("observation", ["partial", "full", "glimpses"])
@pytest.mark.parametrize("form", ["parts", "last", "compact"])
def test_the_envs_run_from_parts_as_from_one_part(banks, observation, form) -> None:
    """Glimpse-v0 on a bank of parts equals it on the bank in one part; on the compact bank
    (int8, no logits) the native vector env still equals SyncVectorEnv of it."""
    whole, parts = banks["whole"], banks[form]
    envs = [gym.make("Glimpse-v0", bank=str(b.path), observation=observation, glimpses=3)
            for b in (whole, parts)]
    outs = [e.reset(seed=3) for e in envs]
    exact = form != "compact"  # int8 features differ from the float16 ones
    for step in range(4 if exact else 0):
        (obs_a, *rest_a), (obs_b, *rest_b) = outs
        for key in obs_a:
            np.testing.assert_array_equal(obs_a[key], obs_b[key], err_msg=f"{key} @ {step}")
        info_a, info_b = rest_a[-1], rest_b[-1]
        assert info_a["index"] == info_b["index"]
        np.testing.assert_array_equal(info_a["action_mask"], info_b["action_mask"])
        assert rest_a[:-1] == rest_b[:-1]  # reward and flags
        if step < 3:
            action = int(np.flatnonzero(info_a["action_mask"])[-1])
            outs = [e.step(action) for e in envs]
    if exact:
        assert "correct" in info_a and info_a["correct"] == info_b["correct"]
    n = 5
    sync = SyncVectorEnv([lambda: gym.make("Glimpse-v0", bank=str(parts.path),
                                           observation=observation, glimpses=3)
                          for _ in range(n)], autoreset_mode=AutoresetMode.NEXT_STEP)
    native = gym.make_vec("Glimpse-v0", num_envs=n, bank=str(parts.path),
                          observation=observation, glimpses=3)
    assert_same_as_sync(sync, native, AutoresetMode.NEXT_STEP)


@pytest.mark.parametrize("observation", ["partial", "full", "glimpses", "index"])
@pytest.mark.parametrize("form", ["whole", "parts", "last", "compact"])
def test_the_vector_env_read_from_disk_equals_sync_vector_env(banks, observation,
                                                               form) -> None:
    """``in_memory=False``: each step's cells read from the memory-mapped bank, step for step
    what SyncVectorEnv of the single env gives, in every form of the bank."""
    n, path = 5, str(banks[form].path)
    sync = SyncVectorEnv([lambda: gym.make("Glimpse-v0", bank=path, observation=observation,
                                           glimpses=3) for _ in range(n)],
                         autoreset_mode=AutoresetMode.SAME_STEP)
    native = gym.make_vec("Glimpse-v0", num_envs=n, bank=path, observation=observation,
                          glimpses=3, in_memory=False, autoreset_mode=AutoresetMode.SAME_STEP)
    assert native.in_memory is False
    assert_same_as_sync(sync, native, AutoresetMode.SAME_STEP)


def test_the_vector_env_with_a_head_read_from_disk(banks) -> None:
    from glimpse_gym.envs import GlimpseVectorEnv

    rng = np.random.default_rng(0)
    head = (rng.standard_normal((10, 16)).astype(np.float32), np.zeros(10, np.float32))
    kw = {"num_envs": 4, "bank": str(banks["parts"].path), "observation": "partial",
          "glimpses": 3, "head": head}
    a, b = GlimpseVectorEnv(**kw), GlimpseVectorEnv(**kw, in_memory=False)
    assert a.in_memory and not b.in_memory
    for env in (a, b):
        env.reset(seed=1)
    for t in range(3):
        out_a, out_b = a.step(np.full(4, t)), b.step(np.full(4, t))
        np.testing.assert_array_equal(out_a[0]["features"], out_b[0]["features"])
        np.testing.assert_array_equal(out_a[4]["prediction"], out_b[4]["prediction"])


def test_a_bank_that_does_not_fit_is_read_from_disk_unless_asked(banks, monkeypatch) -> None:
    import glimpse_gym.envs.tables as tables
    from glimpse_gym.envs import GlimpseVectorEnv

    monkeypatch.setattr(tables, "available_memory", lambda: 100_000)  # 100 kB free
    path = str(banks["whole"].path)
    assert GlimpseVectorEnv(num_envs=2, bank=path).in_memory is False
    with pytest.raises(MemoryError, match="in_memory=False"):
        GlimpseVectorEnv(num_envs=2, bank=path, in_memory=True)
    monkeypatch.setattr(tables, "available_memory", lambda: 10**12)
    assert GlimpseVectorEnv(num_envs=2, bank=path).in_memory is True
