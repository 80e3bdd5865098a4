"""NAM's spatial branch and ADCM: formulas, eval behaviour, and dropout that follows the
attention (checked against binomial spreads)."""

from __future__ import annotations

import pytest
import torch

from glimpse_gym.bagnet import bagnet_small
from glimpse_gym.bagnet.attention import ADCM, NAMSpatialAttention


def test_nam_spatial_formula_penalty_and_its_one_grid() -> None:
    torch.manual_seed(0)
    nam = NAMSpatialAttention(3, 4).eval()
    with torch.no_grad():
        nam.bn.weight.copy_(torch.linspace(-1.0, 2.0, 12))
        nam.bn.running_mean.copy_(torch.linspace(0.0, 1.0, 12))
    x = torch.randn(2, 5, 3, 4)
    lam = nam.bn.weight.abs()
    # position p of image n, channel c: (x - mean_p) / sqrt(var_p + eps) * lambda_p + beta_p
    norm = (x.flatten(2) - nam.bn.running_mean.view(1, 1, -1)) / torch.sqrt(
        nam.bn.running_var.view(1, 1, -1) + nam.bn.eps)
    a = (norm * nam.bn.weight.view(1, 1, -1) + nam.bn.bias.view(1, 1, -1)) * (lam / lam.sum())
    torch.testing.assert_close(nam(x), torch.sigmoid(a).view_as(x) * x)
    assert nam.penalty().item() == pytest.approx(lam.sum().item())
    with pytest.raises(ValueError, match="built for a 3x4 grid, got 4x4"):
        nam(torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match="needs image_size"):
        bagnet_small(nam_spatial=True)


def test_a_bagnet_with_every_block_has_its_shapes_and_penalties() -> None:
    model = bagnet_small(nam=True, nam_spatial=True, adcm=True, image_size=(60, 60)).eval()
    out = model(torch.zeros(3, 1, 60, 60))
    assert out.features.shape == (3, 32, 11, 11) and out.logits.shape == (3, 10, 11, 11)
    expected = model.nam.bn.weight.abs().sum() + model.nam_spatial.bn.weight.abs().sum()
    assert model.regularizer().item() == pytest.approx(expected.item())
    assert bagnet_small(adcm=True).regularizer().item() == 0.0


def test_adcm_is_the_identity_in_eval_and_unbiased_in_training() -> None:
    torch.manual_seed(0)
    adcm = ADCM(8)
    x = torch.rand(4, 8, 5, 5) + 0.5
    assert torch.equal(adcm.eval()(x), x)
    k_c, k_p = adcm.attention(x)
    assert k_c.shape == (4, 8) and k_p.shape == (4, 1, 5, 5)
    assert ((k_c > 0) & (k_c < 1)).all() and ((k_p > 0) & (k_p < 1)).all()
    adcm.train()
    mean = torch.stack([adcm(x) for _ in range(400)]).mean(0)  # inverted dropout
    assert (mean / x).mean().item() == pytest.approx(1.0, abs=0.05)
    assert (adcm(x) == 0).any()  # something is dropped in training


def _binomial_ok(kept: torch.Tensor, p: torch.Tensor, n: int) -> bool:
    spread = torch.sqrt(p * (1 - p) / n)
    return bool(((kept - p).abs() <= 5 * spread + 1e-3).all())


def test_channels_are_kept_as_often_as_their_attention_says() -> None:
    torch.manual_seed(1)
    adcm = ADCM(4, min_keep=0.05).train()
    want = torch.tensor([0.1, 0.4, 0.8, 0.97])
    with torch.no_grad():  # the MLP answers its bias whatever the pooling: k_c = want
        for layer in adcm.mlp:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
        adcm.mlp[0].bias.zero_()
        adcm.mlp[2].bias.copy_(torch.logit((want - 0.05) / 0.95) / 3)  # keep = 0.05 + 0.95 a
        adcm.position.weight.zero_()
        adcm.position.bias.fill_(20.0)  # every position kept
    n = 4000
    out = adcm(torch.ones(n, 4, 2, 2))
    kept = (out[:, :, 0, 0] != 0).float().mean(0)
    assert _binomial_ok(kept, want, n), kept
    assert (kept.diff() > 0).all()  # more attention, kept more often
    torch.testing.assert_close(out[:, 3, 0, 0][out[:, 3, 0, 0] != 0],
                               torch.full_like(out[:, 3, 0, 0][out[:, 3, 0, 0] != 0],
                                               1 / 0.97), rtol=1e-4, atol=1e-4)


def test_positions_are_kept_as_often_as_their_attention_says() -> None:
    torch.manual_seed(2)
    adcm = ADCM(2, min_keep=0.05).train()
    logits = torch.tensor([[-2.0, -0.5, 0.0], [0.5, 1.5, 3.0]])  # a keep logit per position
    with torch.no_grad():
        for layer in adcm.mlp:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.fill_(10.0)  # every channel kept
        adcm.reduce.weight.zero_()
        adcm.reduce.bias.zero_()
        adcm.reduce.weight[0, 0, 0, 0] = 1.0  # reduce channel 0 reads input channel 0
        adcm.position.weight.zero_()
        adcm.position.weight[0, 0, 1, 1] = 1.0  # the centre tap only
        adcm.position.bias.zero_()
    n = 4000
    x = torch.ones(n, 2, 2, 3)
    x[:, 0] = logits
    kept = (adcm(x)[:, 1] != 0).float().mean(0)
    want = 0.05 + 0.95 * torch.sigmoid(logits)  # min_keep + (1 - min_keep) * attention
    assert _binomial_ok(kept, want, n), kept
    order = logits.flatten().argsort()
    assert (kept.flatten()[order].diff() > 0).all()
    assert float(adcm.floor(torch.tensor(0.0))) == pytest.approx(0.05)


@pytest.mark.parametrize(("target", "true_gradient"), [(3.0, -8.0), (0.0, -4.0), (None, 0.0)])
def test_the_keep_probability_gets_the_gradient_of_the_expected_loss(target, true_gradient
                                                                      ) -> None:
    # one feature x = 1 dropped with keep k = 0.5: E[L] = k L(x / k) + (1 - k) L(0), so for
    # L = (out - 3)^2, dE/dk = -8 (keeping it more often helps: the loss wants it larger);
    # for L = out^2, -4; for L = -out, 0 (the expected output is x whatever k). The
    # straight-through mask gives -4, -4 and 0: the true sign. (A detached mask would give
    # +4, -8 and +2: a push to drop the feature the first loss wants larger.)
    from glimpse_gym.bagnet.attention import _drop

    torch.manual_seed(0)
    keep = torch.full((200_000,), 0.5, requires_grad=True)
    out = _drop(torch.ones(200_000), keep)
    loss = -out if target is None else (out - target) ** 2
    loss.sum().backward()
    mean = keep.grad.mean().item()
    assert mean == pytest.approx({3.0: -4.0, 0.0: -4.0, None: 0.0}[target], abs=0.1)
    assert mean * true_gradient > 0 or true_gradient == 0


@pytest.mark.parametrize("kw", [dict(adcm=True), dict(nam=True, nam_spatial=True)],
                         ids=["adcm", "nam-both"])
def test_pretrain_with_soft_attention_then_a_bank(tmp_path, kw) -> None:
    from glimpse_gym.bagnet import load_bagnet
    from glimpse_gym.bank import FeatureBank
    from train.extract_features import ExtractConfig, extract_features
    from train.pretrain_bagnet import PretrainConfig, pretrain_bagnet

    cfg = PretrainConfig(dataset="digits", epochs=1, batch_size=32, max_train_images=64,
                         out=str(tmp_path / "b.pt"), progress=False, eval_test=False,
                         width=4, feature_dim=8, **kw)
    pretrain_bagnet(cfg)
    model, ckpt = load_bagnet(cfg.out)
    assert (model.adcm is not None) == ("adcm" in kw)
    assert (model.nam_spatial is not None) == ("nam_spatial" in kw)
    if "nam_spatial" in kw:
        assert ckpt["arch_kwargs"]["image_size"] == [32, 32]
    extract_features(ExtractConfig(checkpoint=cfg.out, out=str(tmp_path / "banks"),
                                   split=["val"], progress=False))
    assert FeatureBank.load(tmp_path / "banks" / "val").features.shape[1] == 8


def test_soft_attention_is_for_the_small_bagnets(tmp_path) -> None:
    from glimpse_gym.errors import UsageError
    from train.pretrain_bagnet import PretrainConfig, pretrain_bagnet

    with pytest.raises(UsageError, match="not of bagnet9"):
        pretrain_bagnet(PretrainConfig(dataset="digits", arch="bagnet9", adcm=True,
                                       out=str(tmp_path / "b.pt"), progress=False))


def test_adcm_drops_the_what_features_just_before_the_linear_classifier() -> None:
    # the features (what the banks store) never pass through ADCM; in training the logits
    # are those of dropped features, and their mean over masks is the eval logits exactly
    torch.manual_seed(3)
    model = bagnet_small(adcm=True).eval()
    x = torch.rand(2, 1, 60, 60)
    with torch.no_grad():
        clean = model(x)
        model.adcm.train()  # only ADCM in training mode: the batch norms keep their statistics
        runs = [model(x) for _ in range(600)]
    for run in runs[:3]:
        torch.testing.assert_close(run.features, clean.features)
    assert not torch.equal(runs[0].logits, clean.logits)
    mean = torch.stack([r.logits for r in runs]).mean(0)
    spread = torch.stack([r.logits for r in runs]).std(0) / 600 ** 0.5
    assert ((mean - clean.logits).abs() <= 5 * spread + 1e-4).all()
