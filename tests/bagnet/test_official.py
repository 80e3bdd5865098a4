"""The official BagNet-9/17/33 match the published architecture key for key and numerically."""

from __future__ import annotations

import json
import zlib

import pytest
import torch

from glimpse_gym.bagnet import bagnet9, bagnet17, bagnet33, load_official_weights
from glimpse_gym.errors import CheckpointError
from tests.conftest import OFFICIAL_JSON, needs_official_json

FACTORIES = {"bagnet9": bagnet9, "bagnet17": bagnet17, "bagnet33": bagnet33}
EXPECTED_RF = {"bagnet9": 9, "bagnet17": 17, "bagnet33": 33}


def reference_state_dict(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """The deterministic weights that official_state_dicts.json's ``_how`` describes."""
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.long)
            continue
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        r = torch.randn(shape, generator=g, dtype=torch.float64)
        if key.endswith("running_var"):
            t = 1 + 0.1 * r.abs()
        elif key.endswith("running_mean") or key.endswith("bias"):
            t = 0.1 * r
        elif len(shape) == 1:
            t = 1 + 0.1 * r
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            t = r * (2.0 / fan_in) ** 0.5
        state[key] = t.float()
    return state


@pytest.fixture(scope="module")
def facts() -> dict:
    return json.loads(OFFICIAL_JSON.read_text())


@needs_official_json
@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_dict_keys_and_shapes_match_official(facts: dict, name: str) -> None:
    ours = {k: list(v.shape) for k, v in FACTORIES[name]().state_dict().items()}
    assert ours == facts[name]["state_dict"]


@needs_official_json
@pytest.mark.parametrize("name", list(FACTORIES))
def test_reference_check_reproduced(facts: dict, name: str, tmp_path) -> None:
    ref = facts[name]["reference_check"]
    path = tmp_path / f"{name}.pth"
    torch.save(reference_state_dict(facts[name]["state_dict"]), path)
    model = load_official_weights(FACTORIES[name](), path).eval()  # strict=True inside
    x = torch.sin(0.01 * torch.arange(3 * 96 * 96, dtype=torch.float32)).reshape(1, 3, 96, 96)
    with torch.no_grad():
        logits = model(x).logits.permute(0, 2, 3, 1).double()  # official layout [N, H, W, K]
    assert list(logits.shape) == ref["per_location_logits_shape_at_96"]
    assert logits.sum().item() == pytest.approx(ref["sum"], rel=1e-4)
    assert logits.abs().mean().item() == pytest.approx(ref["mean_abs"], rel=1e-4)
    assert logits[0, 0, 0, :5].tolist() == pytest.approx(ref["first5_at_location_0_0"], rel=1e-4)
    assert logits[0, -1, -1, :5].tolist() == pytest.approx(ref["first5_at_last_location"],
                                                           rel=1e-4)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_geometry(name: str) -> None:
    model = FACTORIES[name](num_classes=7)
    assert (model.rf, model.stride) == (EXPECTED_RF[name], 8)
    for size in (96, 101):
        out = model.eval()(torch.zeros(1, 3, size, size))
        assert tuple(out.logits.shape[2:]) == model.grid_size(size, size)
        assert out.logits.shape[1] == 7 and out.features.shape[1] == 2048


@needs_official_json
@pytest.mark.parametrize("name", list(FACTORIES))
def test_grid_at_224_matches_official(facts: dict, name: str) -> None:
    h, w = FACTORIES[name]().grid_size(224, 224)
    assert [1, h, w, 1000] == facts[name]["per_location_logits_shape_at_224"]


def test_load_official_weights_rejects_wrong_keys(tmp_path) -> None:
    path = tmp_path / "bad.pth"
    state = bagnet9().state_dict()
    state.pop("fc.bias")
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="fc.bias"):
        load_official_weights(bagnet9(), path)
    with pytest.raises(CheckpointError, match="nowhere.pth"):
        load_official_weights(bagnet9(), tmp_path / "nowhere.pth")
