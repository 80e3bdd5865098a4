"""Small BagNets: shapes, dtypes, documented geometry and the true receptive field."""

from __future__ import annotations

import pytest
import torch

from glimpse_gym.bagnet import (
    SmallBagNet,
    bagnet9,
    bagnet_small,
    bagnet_tiny,
    build_bagnet,
    receptive_field,
)
from glimpse_gym.errors import UnknownNameError


def test_receptive_field_formula() -> None:
    assert receptive_field([(3, 1)] * 3) == (7, 1)
    assert receptive_field([(3, 2), (3, 1), (3, 2), (3, 1)]) == (19, 4)
    assert receptive_field([(1, 2), (1, 1)]) == (1, 2)


@pytest.mark.parametrize(
    ("factory", "size", "rf", "stride", "grid"),
    [(bagnet_small, 60, 19, 4, (11, 11)), (bagnet_tiny, 32, 13, 2, (10, 10)),
     (bagnet_small, 100, 19, 4, (21, 21))],
)
def test_documented_geometry_and_output_shapes(factory, size, rf, stride, grid) -> None:
    model = factory(num_classes=10).eval()
    assert (model.rf, model.stride, model.grid_size(size, size)) == (rf, stride, grid)
    out = model(torch.rand(3, 1, size, size))
    assert out.features.shape == (3, model.feature_dim, *grid)
    assert out.logits.shape == (3, 10, *grid)
    assert out.features.dtype == out.logits.dtype == torch.float32
    # the logits are the linear head applied to the features
    torch.testing.assert_close(model.head(out.features), out.logits)
    w, b = model.head_parameters()
    manual = torch.einsum("kd,ndhw->nkhw", w, out.features) + b[None, :, None, None]
    torch.testing.assert_close(manual, out.logits, rtol=1e-5, atol=1e-5)


def _gradient_box(model, size: int, row: int, col: int, channels: int) -> tuple[int, ...]:
    """Bounding box of input pixels with a non-zero gradient of cell (row, col)'s output."""
    torch.manual_seed(0)
    model = model.double().eval()
    x = torch.randn(1, channels, size, size, dtype=torch.float64, requires_grad=True)
    out = model(x)
    (out.features[0, :, row, col].sum() + out.logits[0, :, row, col].sum()).backward()
    nz = (x.grad[0].abs().sum(0) > 0).nonzero()
    return (nz[:, 0].min().item(), nz[:, 1].min().item(),
            nz[:, 0].max().item() + 1, nz[:, 1].max().item() + 1)


@pytest.mark.parametrize(
    ("model", "size", "channels"),
    [(bagnet_small(), 60, 1), (bagnet_tiny(), 32, 1), (bagnet_small(nam=True), 60, 1),
     (bagnet_small(nam=True, nam_spatial=True, image_size=(60, 60)), 60, 1),
     (bagnet_small(adcm=True), 60, 1), (bagnet_tiny(adcm=True), 32, 1),
     (SmallBagNet(3, 3, (5, 3, 1), (2, 2, 1), (32, 32, 32), 16), 40, 3), (bagnet9(), 64, 3)],
    ids=["small", "tiny", "small-nam", "small-nam-spatial", "small-adcm", "tiny-adcm",
         "custom", "bagnet9"],
)
def test_true_receptive_field_equals_documented(model, size: int, channels: int) -> None:
    gh, gw = model.grid_size(size, size)
    for row, col in [(0, 0), (gh // 2, gw - 1), (gh - 1, gw // 3)]:
        assert _gradient_box(model, size, row, col, channels) == model.cell_box(row, col)


def test_nam_block_formula_use_and_penalty() -> None:
    model = bagnet_small(nam=True).eval()
    nam = model.nam
    assert nam is not None
    with torch.no_grad():
        nam.bn.weight.copy_(torch.linspace(-2.0, 5.0, nam.bn.weight.numel()))
    x = torch.randn(2, nam.bn.num_features, 5, 5)
    gamma = nam.bn.weight.abs()
    expected = torch.sigmoid(nam.bn(x) * (gamma / gamma.sum()).view(1, -1, 1, 1)) * x
    torch.testing.assert_close(nam(x), expected)
    assert model.regularizer().item() == pytest.approx(gamma.sum().item())
    assert bagnet_small().regularizer().item() == 0.0
    calls = []
    nam.register_forward_hook(lambda *args: calls.append(1))
    model(torch.rand(1, 1, 60, 60))
    assert calls == [1]


def test_bad_configs_raise() -> None:
    with pytest.raises(ValueError, match="one length"):
        SmallBagNet(10, 1, (3, 3), (1,), (8, 8))
    with pytest.raises(UnknownNameError, match="bagnet-small"):
        build_bagnet("resnet50")
