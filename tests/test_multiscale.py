"""Multi-scale banks: levels, geometry, the parent map, atomic writes and loud damage."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from glimpse_gym.bagnet import bagnet_tiny, preprocess
from glimpse_gym.datasets import make_dataset
from glimpse_gym.errors import BankError, UsageError
from glimpse_gym.fileio import json_checksum, state_dict_hash
from glimpse_gym.multiscale import (
    META,
    MultiScaleBank,
    bagnet_flops,
    check_scales,
    parents,
    resize_images,
    write_multiscale_bank,
)


def _checkpoint(model) -> dict:
    return {"arch": "bagnet-tiny", "arch_kwargs": {"num_classes": 10},
            "model_hash": state_dict_hash(model.state_dict()),
            "normalization": {"mean": [0.1], "std": [0.3]}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = bagnet_tiny(num_classes=10).eval()
    ds = make_dataset("digits", "val")
    out = tmp_path_factory.mktemp("ms") / "val"
    bank = write_multiscale_bank(model, ds, out, [0.5, 0.75, 1], checkpoint=_checkpoint(model),
                                 batch_size=128, progress=False)
    return model, ds, bank


def test_levels_hold_the_bagnet_at_each_scale(tiny) -> None:
    model, ds, bank = tiny
    assert [lv.grid for lv in bank.levels] == [(2, 2), (6, 6), (10, 10)]
    assert [lv.scale for lv in bank.levels] == [0.5, 0.75, 1.0]
    assert bank.num_images == len(ds) and np.array_equal(bank.labels, ds.labels.numpy())
    # the full-size level is the ordinary bank of the images, with them stored
    finest = bank.levels[-1].bank
    assert np.array_equal(finest.images, ds.images.numpy())
    assert all(lv.bank.images is None for lv in bank.levels[:-1])
    # a coarse level is the BagNet on the resized images
    small = resize_images(ds.images[:8], (16, 16))
    with torch.no_grad():
        logits = model(preprocess(small, [0.1], [0.3])).logits
    np.testing.assert_allclose(bank.levels[0].bank.logits[:8], logits.numpy(), atol=1e-5)


def test_boxes_are_in_full_resolution_pixels(tiny) -> None:
    model, _, bank = tiny
    coarse = bank.levels[0]  # 16x16 image, rf 13, stride 2: x2 in full pixels
    np.testing.assert_allclose(coarse.boxes[0], [0, 0, 26, 26])
    np.testing.assert_allclose(coarse.boxes[3], [4, 4, 30, 30])
    np.testing.assert_allclose(bank.levels[-1].boxes[0], [0, 0, model.rf, model.rf])
    spec = bank.meta["levels"][0]
    assert spec["rf_full"] == [26.0, 26.0] and spec["stride_full"] == [4.0, 4.0]


def test_every_cell_has_the_parent_with_the_nearest_centre(tiny) -> None:
    _, _, bank = tiny
    for i, (above, level) in enumerate(zip(bank.levels, bank.levels[1:], strict=False)):
        assert level.parent.shape == (level.num_cells,)
        centre = lambda b: np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)  # noqa: E731
        d = ((centre(level.boxes)[:, None] - centre(above.boxes)[None]) ** 2).sum(-1)
        assert np.all(d[np.arange(level.num_cells), level.parent] <= d.min(1) + 1e-9)
        # each cell's centre lies in its parent's tile: within half a stride of the parent's
        # centre on each axis, or beyond the outermost centre on that side (the border)
        stride = np.array(bank.meta["levels"][i]["stride_full"])
        mine, theirs = centre(level.boxes), centre(above.boxes)[level.parent]
        low, high = centre(above.boxes).min(0), centre(above.boxes).max(0)
        inside = np.abs(mine - theirs) <= stride / 2 + 1e-9
        border = ((mine < low) & (theirs == low)) | ((mine > high) & (theirs == high))
        assert np.all(inside | border)
    # on the 2x2 coarse grid the four quadrants of the 6x6 level split evenly
    assert np.bincount(bank.levels[1].parent).tolist() == [9, 9, 9, 9]
    assert bank.levels[1].children(0).tolist() == [0, 1, 2, 6, 7, 8, 12, 13, 14]


def test_ties_go_to_the_lower_index() -> None:
    coarse = np.array([[0, 0, 2, 2], [0, 2, 2, 4]], dtype=float)  # centres (1, 1) and (1, 3)
    fine = np.array([[0, 1, 2, 3]], dtype=float)  # centre (1, 2): equally near both
    assert parents(coarse, fine).tolist() == [0]


def test_flops_grow_with_the_image(tiny) -> None:
    model, _, bank = tiny
    flops = [lv.flops_image for lv in bank.levels]
    assert flops == sorted(flops) and flops[0] > 0
    assert bank.levels[0].flops_cell == bagnet_flops(model, 1, (model.rf, model.rf)) < flops[0]


def test_bad_scales_and_tiny_images_are_usage_errors(tiny, tmp_path) -> None:
    model, ds, _ = tiny
    for scales in ([1], [0.5, 0.25, 1], [0.5, 0.9], [0, 1], [0.5, 0.5, 1]):
        with pytest.raises(UsageError, match="--scales"):
            check_scales(scales)
    with pytest.raises(UsageError, match="smaller than the BagNet's receptive field"):
        write_multiscale_bank(model, ds, tmp_path / "b", [0.25, 1], checkpoint=_checkpoint(model),
                              progress=False)
    assert not (tmp_path / "b").exists()


def test_an_existing_bank_is_kept_unless_overwrite(tiny) -> None:
    model, ds, bank = tiny
    with pytest.raises(BankError, match="already exists"):
        write_multiscale_bank(model, ds, bank.path, [0.5, 1], checkpoint=_checkpoint(model),
                              progress=False)
    assert MultiScaleBank.load(bank.path).meta == bank.meta


def _copy(bank, tmp_path):
    import shutil
    target = tmp_path / "copy"
    shutil.copytree(bank.path, target)
    return target


def _edit_meta(path, change) -> None:
    meta = json.loads((path / META).read_text())
    change(meta)
    meta["meta_sha256"] = json_checksum(meta, "meta_sha256")
    (path / META).write_text(json.dumps(meta))


def test_damage_is_named(tiny, tmp_path) -> None:
    _, _, bank = tiny
    path = _copy(bank, tmp_path)
    text = (path / META).read_text()
    (path / META).write_text(text.replace('"scale": 0.5', '"scale": 0.6'))
    with pytest.raises(BankError, match="changed or damaged"):
        MultiScaleBank.load(path)
    (path / META).write_text(text)
    _edit_meta(path, lambda m: m["levels"][1]["parent"].reverse())
    with pytest.raises(BankError, match="parent map of level 1"):
        MultiScaleBank.load(path)
    (path / META).write_text(text)
    _edit_meta(path, lambda m: m["levels"][0].update(folder="../elsewhere"))
    with pytest.raises(BankError, match="plain name"):
        MultiScaleBank.load(path)
    (path / META).write_text(text)
    labels = path / "level0" / "labels.npy"
    labels.write_bytes(labels.read_bytes()[:-8])
    with pytest.raises(BankError, match="labels.npy"):
        MultiScaleBank.load(path)
    with pytest.raises(BankError, match="no multi-scale bank"):
        MultiScaleBank.load(tmp_path / "nothing")


def test_a_level_of_another_bagnet_is_refused(tiny, tmp_path) -> None:
    import shutil

    model, ds, bank = tiny
    torch.manual_seed(1)
    other = bagnet_tiny(num_classes=10).eval()
    elsewhere = write_multiscale_bank(other, ds, tmp_path / "other", [0.5, 0.75, 1],
                                      checkpoint=_checkpoint(other), progress=False)
    path = _copy(bank, tmp_path)
    shutil.rmtree(path / "level1")
    shutil.copytree(elsewhere.path / "level1", path / "level1")
    with pytest.raises(BankError, match="gives level 1 BagNet"):
        MultiScaleBank.load(path)
    # a bank whose multiscale.json names no level's BagNet: every level must be level 0's

    def forget(meta):
        for spec in meta["levels"]:
            del spec["model_hash"]
    _edit_meta(path, forget)
    with pytest.raises(BankError, match=f"gives level 1 BagNet {bank.model_hash}"):
        MultiScaleBank.load(path)
    _edit_meta(_copy(bank, tmp_path / "b"), forget)
    assert MultiScaleBank.load(tmp_path / "b" / "copy").model_hash == bank.model_hash


def test_a_level_may_have_a_bagnet_of_its_own(tiny, tmp_path) -> None:
    model, ds, bank = tiny
    torch.manual_seed(1)
    other = bagnet_tiny(num_classes=10).eval()
    mixed = write_multiscale_bank(model, ds, tmp_path / "mixed", [0.5, 0.75, 1],
                                  checkpoint=_checkpoint(model), progress=False,
                                  level_bagnets={1: (other, _checkpoint(other))})
    again = MultiScaleBank.load(mixed.path, verify=True)
    ours, theirs = _checkpoint(model)["model_hash"], _checkpoint(other)["model_hash"]
    assert [spec["model_hash"] for spec in again.meta["levels"]] == [ours, ours, theirs]
    assert again.model_hash == f"{ours}+{ours}+{theirs}" and bank.model_hash == ours
    # the coarse levels are the first BagNet's, the full size the other's
    np.testing.assert_array_equal(again.levels[0].bank.logits, bank.levels[0].bank.logits)
    with torch.no_grad():
        logits = other(preprocess(ds.images[:8], [0.1], [0.3])).logits
    np.testing.assert_allclose(again.levels[-1].bank.logits[:8], logits.numpy(), atol=1e-5)
    # a level replaced by the first BagNet's is refused: the meta names the level's BagNet
    import shutil
    shutil.rmtree(mixed.path / "level2")
    shutil.copytree(bank.path / "level2", mixed.path / "level2")
    with pytest.raises(BankError, match=f"gives level 2 BagNet {theirs}"):
        MultiScaleBank.load(mixed.path)
    eleven, rgb = bagnet_tiny(num_classes=11).eval(), bagnet_tiny(in_channels=3).eval()
    for own, match in (({1: (eleven, _checkpoint(eleven))}, "same classes"),
                       ({1: (rgb, _checkpoint(rgb))}, "same image channels"),
                       ({0.3: (other, _checkpoint(other))}, "not among the scales")):
        with pytest.raises(UsageError, match=match):
            write_multiscale_bank(model, ds, tmp_path / "bad", [0.5, 0.75, 1],
                                  checkpoint=_checkpoint(model), progress=False,
                                  level_bagnets=own)
    assert not (tmp_path / "bad").exists()


def test_pretraining_across_scales_then_a_multiscale_extraction(tmp_path, monkeypatch) -> None:
    import train.pretrain_bagnet as pretrain_module
    from glimpse_gym.bagnet import load_bagnet
    from tests.train.test_pretrain_extract import tiny_config
    from train.extract_features import ExtractConfig, extract_features

    sizes = []

    def spy(images, size, **kw):
        sizes.append(tuple(size))
        return resize_images(images, size, **kw)

    monkeypatch.setattr(pretrain_module, "resize_images", spy)
    cfg = tiny_config(tmp_path, scales="0.5,1", epochs=2)
    metrics = pretrain_module.pretrain_bagnet(cfg)
    # training batches came at both sizes (one scale per batch); evaluation at both too
    assert {(16, 16), (32, 32)} <= set(sizes)
    assert set(metrics["test_by_scale"]) == set(metrics["val_by_scale"]) == {"0.5", "1"}
    assert metrics["test_by_scale"]["1"]["image_error"] == metrics["test"]["image_error"]
    banks = extract_features(ExtractConfig(checkpoint=cfg.out, out=str(tmp_path / "ms"),
                                           split=["test"], scales="0.5,1", progress=False))
    bank = MultiScaleBank.load(tmp_path / "ms" / "test", verify=True)
    assert banks["test"].meta == bank.meta and [lv.grid for lv in bank.levels] == [(2, 2),
                                                                                  (10, 10)]
    coarse = bank.levels[0].bank.meta["stats"]["image_acc"]  # written with x0.5's statistics
    assert coarse == pytest.approx(1 - metrics["test_by_scale"]["0.5"]["image_error"])
    # the full-size level from another BagNet of the same classes and feature size
    from glimpse_gym.bagnet.checkpoint import save_checkpoint

    other, ck = load_bagnet(cfg.out)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    save_checkpoint(tmp_path / "other.pt", other, arch=ck["arch"], arch_kwargs=ck["arch_kwargs"],
                    class_names=ck["class_names"], mean=ck["normalization"]["mean"],
                    std=ck["normalization"]["std"], image_shape=ck["image_shape"],
                    dataset=ck["dataset"])
    mixed = extract_features(ExtractConfig(
        checkpoint=cfg.out, out=str(tmp_path / "mixed"), split=["test"], scales="0.5,1",
        level_checkpoint=[f"1={tmp_path / 'other.pt'}"], progress=False))["test"]
    hashes = [load_bagnet(p)[1]["model_hash"] for p in (cfg.out, tmp_path / "other.pt")]
    assert [lv.bank.meta["model"]["hash"] for lv in mixed.levels] == hashes
    assert hashes[0] != hashes[1] and mixed.model_hash == "+".join(hashes)
    stats = [lv.bank.meta["stats"]["image_acc"] for lv in (bank.levels[0], mixed.levels[0])]
    assert stats[0] == stats[1]
    with pytest.raises(UsageError, match="scale 1 twice"):
        extract_features(ExtractConfig(checkpoint=cfg.out, out=str(tmp_path / "no"),
                                       split=["test"], scales="0.5,1", progress=False,
                                       level_checkpoint=[f"1={tmp_path / 'other.pt'}"] * 2))
    with pytest.raises(UsageError, match="same feature size"):  # the default has D = 16
        extract_features(ExtractConfig(checkpoint=cfg.out, out=str(tmp_path / "no"),
                                       split=["test"], scales="0.5,1",
                                       level_checkpoint=["1=default"], progress=False))
    for bad in (["0.5"], ["x=default"], ["1="]):
        with pytest.raises(UsageError, match="SCALE=CHECKPOINT"):
            extract_features(ExtractConfig(checkpoint=cfg.out, out=str(tmp_path / "no"),
                                           split=["test"], scales="0.5,1",
                                           level_checkpoint=bad, progress=False))
    with pytest.raises(UsageError, match="needs --scales"):
        extract_features(ExtractConfig(checkpoint=cfg.out, out=str(tmp_path / "no"),
                                       level_checkpoint=["1=default"], progress=False))
    # the checkpoint carries each scale's own BatchNorm statistics, covered by its hash
    from glimpse_gym.bagnet.checkpoint import weights_hash
    from glimpse_gym.multiscale import at_scale

    model, ckpt = load_bagnet(cfg.out)
    half = ckpt["bn_by_scale"]["0.5"]
    assert set(ckpt["bn_by_scale"]) == {"0.5"} and half
    assert ckpt["model_hash"] == weights_hash(ckpt["state_dict"], ckpt["bn_by_scale"])
    assert ckpt["model_hash"] != weights_hash(ckpt["state_dict"])
    own = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(k for k in half if k.endswith("running_mean"))
    assert not torch.equal(half[name], own[name])
    with at_scale(model, ckpt["bn_by_scale"], 0.5):
        assert torch.equal(model.state_dict()[name], half[name])
    assert all(torch.equal(v, own[k]) for k, v in model.state_dict().items())
    # --resume on a finished run redoes only the statistics and the test, keeping the rest
    again = pretrain_module.pretrain_bagnet(replace(cfg, resume=True))
    assert again["epoch"] == 2 and again["test_by_scale"] == metrics["test_by_scale"]
    assert load_bagnet(cfg.out)[1]["model_hash"] == ckpt["model_hash"]
    with pytest.raises(UsageError, match="--scales"):
        pretrain_module.pretrain_bagnet(tiny_config(tmp_path / "bad", scales="0.2,1"))
