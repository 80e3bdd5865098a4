"""A tiny pretrain -> extract run end to end, resume, and the command line."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train.pretrain_bagnet as pretrain_module
from glimpse_gym.bagnet import load_bagnet, load_checkpoint
from glimpse_gym.bank import FeatureBank
from glimpse_gym.errors import CheckpointError, UsageError
from train.cli import COMMANDS, build_parser, main
from train.config import field_docs
from train.extract_features import ExtractConfig, extract_features
from train.pretrain_bagnet import PretrainConfig, pretrain_bagnet


def tiny_config(tmp_path, **overrides) -> PretrainConfig:
    base = dict(dataset="digits", epochs=2, batch_size=32, max_train_images=96,
                out=str(tmp_path / "bagnet.pt"), device="cpu", progress=False, width=4,
                feature_dim=8, eval_batch_size=128)
    base.update(overrides)
    return PretrainConfig(**base)


def test_pretrain_then_extract_end_to_end(tmp_path) -> None:
    cfg = tiny_config(tmp_path)
    metrics = pretrain_bagnet(cfg)
    assert set(metrics) >= {"train", "val", "test", "train_images_per_s"}
    ckpt = load_checkpoint(cfg.out)
    assert "train_state" in ckpt and ckpt["train_state"]["epoch"] == 2
    assert ckpt["class_names"] == [str(d) for d in range(10)]
    assert len(ckpt["normalization"]["mean"]) == 1 and ckpt["image_shape"] == [1, 32, 32]
    assert ckpt["config"]["epochs"] == 2 and ckpt["config"]["dataset"] == "digits"
    # TensorBoard has the scalars the issue asks for
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/cell_acc", "train/image_acc", "val/loss", "val/cell_acc",
            "val/image_acc", "val/image_error", "test/image_error"} <= tags
    # extraction writes banks whose metadata ties them to this checkpoint
    banks = extract_features(ExtractConfig(checkpoint=cfg.out, out=str(tmp_path / "banks"),
                                           split=["val", "test"], device="cpu", progress=False))
    test = FeatureBank.load(tmp_path / "banks" / "test", verify=True,
                            expect={"dataset": "digits", "split": "test",
                                    "model_hash": ckpt["model_hash"]})
    assert test.num_images == metrics["test"]["num_images"]
    assert test.meta["stats"]["image_acc"] == pytest.approx(metrics["test"]["image_acc"])
    assert banks["val"].meta["dataset"]["options"]["seed"] == 0


def test_resume_continues_exactly_where_training_stopped(tmp_path, monkeypatch) -> None:
    straight = tiny_config(tmp_path / "a")
    pretrain_bagnet(straight)
    expected = load_checkpoint(straight.out)["state_dict"]

    interrupted = tiny_config(tmp_path / "b")
    real_save = pretrain_module.save_checkpoint
    calls = []

    def save_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the crash comes after epoch 1's checkpoint was written
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        pretrain_bagnet(interrupted)
    monkeypatch.setattr(pretrain_module, "save_checkpoint", real_save)
    assert load_checkpoint(interrupted.out)["train_state"]["epoch"] == 1
    pretrain_bagnet(dataclasses.replace(interrupted, resume=True))
    resumed = load_checkpoint(interrupted.out)["state_dict"]
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, msg=f"{key} differs after resume")


def test_resume_refuses_a_different_architecture(tmp_path) -> None:
    cfg = tiny_config(tmp_path, epochs=1, eval_test=False)
    pretrain_bagnet(cfg)
    with pytest.raises(CheckpointError, match="holds bagnet-tiny"):
        pretrain_bagnet(dataclasses.replace(cfg, width=8, resume=True))
    with pytest.raises(UsageError, match="nothing to continue.*none.pt"):
        pretrain_bagnet(dataclasses.replace(cfg, out=str(tmp_path / "none.pt"), resume=True))
    with pytest.raises(UsageError, match="holds an unfinished run"):
        pretrain_bagnet(cfg)  # the checkpoint is there: --resume or --overwrite
    pretrain_bagnet(dataclasses.replace(cfg, overwrite=True))


def test_damaged_checkpoint_names_the_path(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt is not a readable BagNet checkpoint "
                       r"\(not a torch checkpoint\)"):
        load_bagnet(bad)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_subcommand_help_explains_every_option(command, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command.split(), "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    module, cls_name = COMMANDS[command][:2]
    cls = getattr(__import__(module, fromlist=[cls_name]), cls_name)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        assert "--" + f.name.replace("_", "-") in text
        assert docs[f.name] and docs[f.name][:30] in text, f"{command} --{f.name} has no help"


def test_cli_parses_types_and_flags() -> None:
    args = build_parser().parse_args(["pretrain-bagnet", "--epochs", "3",
                                      "--no-resample-canvases", "--data-option", "pieces=2",
                                      "--data-option", "canvas_size=40"])
    cfg = args._config_cls(**{f.name: getattr(args, f.name)
                              for f in dataclasses.fields(args._config_cls)})
    assert cfg.epochs == 3 and cfg.resample_canvases is False
    assert cfg.data_option == ["pieces=2", "canvas_size=40"]


def test_custom_architecture_from_the_command_line(tmp_path) -> None:
    cfg = tiny_config(tmp_path, arch="custom", kernels="5,3,1", strides="1,2,1", widths="8,8,8",
                      epochs=1, eval_test=False)
    pretrain_bagnet(cfg)
    model, ckpt = load_bagnet(cfg.out)
    assert ckpt["arch"] == "custom" and (model.rf, model.stride) == (7, 2)
    assert model.grid_size(32, 32) == (13, 13)
    with pytest.raises(ValueError, match="--kernels"):
        pretrain_bagnet(tiny_config(tmp_path, arch="custom"))
