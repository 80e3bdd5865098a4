"""The 1x1 bottleneck: its shapes, a frozen backbone that stays as loaded, loading published
and project weights, and pretrain-bagnet -> a compact bank end to end."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from glimpse_gym.bagnet import (
    BottleneckBagNet,
    bagnet9,
    bagnet17,
    bagnet_tiny,
    build_bagnet,
    load_backbone,
    load_bagnet,
    load_checkpoint,
)
from glimpse_gym.bank import FeatureBank
from glimpse_gym.errors import CheckpointError, UsageError
from glimpse_gym.pretrained import default_checkpoint
from train.extract_features import ExtractConfig, extract_features
from train.pretrain_bagnet import PretrainConfig, pretrain_bagnet


def test_shapes_geometry_and_no_backbone_head() -> None:
    net = build_bagnet("bagnet9", num_classes=7, in_channels=1, bottleneck=16).eval()
    assert isinstance(net, BottleneckBagNet) and net.feature_dim == 16
    assert (net.rf, net.stride, net.num_classes) == (9, 8, 7)
    out = net(torch.zeros(2, 1, 41, 41))
    assert out.features.shape == (2, 16, 5, 5) and out.logits.shape == (2, 7, 5, 5)
    assert net.grid_size(41, 41) == (5, 5)
    weight, bias = net.head_parameters()
    assert weight.shape == (7, 16) and bias.shape == (7,)
    keys = net.state_dict().keys()
    assert not any(k.startswith(("backbone.fc.", "backbone.classifier.")) for k in keys)
    # logits = head(features), as a bank recomputes them
    manual = torch.einsum("kd,ndhw->nkhw", weight, out.features) + bias[None, :, None, None]
    torch.testing.assert_close(manual, out.logits)


def test_a_frozen_backbone_stays_as_it_was() -> None:
    torch.manual_seed(0)
    net = BottleneckBagNet(bagnet_tiny(num_classes=10), 4).freeze_backbone()
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    reduce_before = net.reduce.weight.detach().clone()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    net.train()
    assert not net.backbone.training  # BatchNorm statistics are not updated
    for _ in range(3):
        loss = net(torch.randn(8, 1, 32, 32)).logits.logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in net.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(net.reduce.weight, reduce_before)


def test_load_backbone_from_published_weights_and_refuse_others(tmp_path) -> None:
    torch.manual_seed(1)
    published = bagnet9()  # 1,000 classes and 3 channels, as the published file
    torch.save({f"module.{k}": v for k, v in published.state_dict().items()},
               tmp_path / "bagnet9.pth")
    net = load_backbone(build_bagnet("bagnet9", num_classes=10, bottleneck=8),
                        tmp_path / "bagnet9.pth")
    for k, v in net.backbone.state_dict().items():
        assert torch.equal(v, published.state_dict()[k]), k
    torch.save(bagnet17().state_dict(), tmp_path / "bagnet17.pth")
    with pytest.raises(CheckpointError, match="bagnet17.pth does not fit the backbone"):
        load_backbone(build_bagnet("bagnet9", num_classes=10, bottleneck=8),
                      tmp_path / "bagnet17.pth")
    with pytest.raises(CheckpointError, match="missing.pth"):
        load_backbone(build_bagnet("bagnet9", bottleneck=8), tmp_path / "missing.pth")


def _config(tmp_path, name: str, **kw) -> PretrainConfig:
    base = dict(dataset="digits", arch="bagnet-tiny", epochs=2, batch_size=32,
                max_train_images=128, out=str(tmp_path / name / "bagnet.pt"), device="cpu",
                progress=False, width=4, feature_dim=8, eval_batch_size=128, eval_test=False,
                lr=0.01)
    return PretrainConfig(**{**base, **kw})


def test_pretrain_a_bottleneck_on_a_frozen_backbone_then_a_compact_bank(tmp_path) -> None:
    """On the embedded default's trained backbone (a pretrain-bagnet checkpoint), 4 features
    learn to classify within 5 short epochs; the backbone stays exactly as loaded, and the
    checkpoint writes an int8 bank without logits."""
    backbone = default_checkpoint()
    cfg = _config(tmp_path, "compact", bottleneck=4, backbone_weights=str(backbone),
                  freeze_backbone=True, width=16, feature_dim=16, max_train_images=1024,
                  epochs=5, lr=0.03)
    metrics = pretrain_bagnet(cfg)
    model, ckpt = load_bagnet(cfg.out)
    assert isinstance(model, BottleneckBagNet) and ckpt["arch_kwargs"]["bottleneck"] == 4
    trained = load_checkpoint(backbone)["state_dict"]
    for k, v in model.backbone.state_dict().items():  # frozen: the loaded weights exactly
        assert torch.equal(v, trained[k]), k
    assert metrics["val"]["image_error"] < 0.3, metrics["val"]
    extract_features(ExtractConfig(checkpoint=cfg.out, out=str(tmp_path / "banks"),
                                   split=["val"], device="cpu", progress=False,
                                   feature_dtype="int8", store_logits=False))
    bank = FeatureBank.load(tmp_path / "banks" / "val")
    assert bank.features.shape[1] == 4 and bank.head_weight.shape == (10, 4)
    thawed = dataclasses.replace(cfg, freeze_backbone=False, resume=True, epochs=6)
    with pytest.raises(CheckpointError, match="--freeze-backbone True: pass the same"):
        pretrain_bagnet(thawed)


@pytest.mark.parametrize("kw", [dict(freeze_backbone=True), dict(backbone_weights="x.pt"),
                                dict(bottleneck=0)])
def test_backbone_options_need_a_bottleneck(tmp_path, kw) -> None:
    with pytest.raises(UsageError, match="bottleneck"):
        pretrain_bagnet(_config(tmp_path, "bad", **kw))
