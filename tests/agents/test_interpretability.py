"""Rankings of a grid's cells by attention maps and gradient saliency, and the deletion and
insertion curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.interpretability import (
    attention_map,
    attention_ranking,
    deletion_insertion,
    saliency_ranking,
    top_cells,
)
from glimpse_gym.bagnet import bagnet_tiny, image_logits, preprocess
from glimpse_gym.bagnet.common import cell_boxes
from glimpse_gym.datasets import make_dataset

MEAN, STD = [0.1], [0.3]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = bagnet_tiny(nam=True, nam_spatial=True, adcm=True, image_size=(32, 32)).eval()
    data = make_dataset("digits", "test")
    return model, data.images[:12].numpy(), data.labels[:12]


def test_top_cells_orders_by_score_and_breaks_ties_by_index() -> None:
    scores = torch.tensor([[[0.5, 2.0], [2.0, -1.0]]])
    assert top_cells(scores, 4).tolist() == [[1, 2, 0, 3]]


@pytest.mark.parametrize("block", ["nam", "nam_spatial", "adcm"])
def test_attention_maps_are_the_blocks_maps_on_the_grid(setup, block) -> None:
    model, images, _ = setup
    x = preprocess(torch.from_numpy(images), MEAN, STD)
    maps = attention_map(model, x, block)
    assert maps.shape == (12, 10, 10) and ((maps > 0) & (maps < 1)).all()
    with torch.no_grad():  # by hand: the blocks before run as at test time
        h = model.layers(x)
        if block != "nam":
            h = model.nam(h)
        if block == "adcm":
            h = model.nam_spatial(h)
        want = {"nam": lambda: model.nam.attention(h).mean(1),
                "nam_spatial": lambda: model.nam_spatial.attention(h).mean(1),
                "adcm": lambda: model.adcm.attention(model.what(h))[1][:, 0]}[block]()
    torch.testing.assert_close(maps, want)
    ranked = attention_ranking(model, images, MEAN, STD, block, tmax=5, batch=5)
    assert torch.equal(ranked, top_cells(want, 5))
    with pytest.raises(ValueError, match="has no adcm block"):
        attention_map(bagnet_tiny(), x, "adcm")


def test_saliency_is_the_gradient_summed_over_each_cells_box(setup) -> None:
    model, images, _ = setup
    ranked = saliency_ranking(model, images[:3], MEAN, STD, tmax=100)
    assert ranked.shape == (3, 100) and all(sorted(r) == list(range(100)) for r in ranked.tolist())
    x = preprocess(torch.from_numpy(images[:1]), MEAN, STD).requires_grad_(True)
    logits = image_logits(model(x).logits)
    logits[0, logits[0].argmax()].backward()
    g = x.grad[0].abs().sum(0)
    boxes = cell_boxes((10, 10), model.rf, model.stride)
    sums = torch.tensor([float(g[t:b, lf:r].sum()) for t, lf, b, r in boxes])
    assert ranked[0, 0].item() == int(sums.argmax())
    assert torch.equal(ranked[0], torch.sort(-sums, stable=True).indices)


def test_deletion_and_insertion_blank_what_they_say(setup) -> None:
    model, images, labels = setup
    boxes = cell_boxes((10, 10), model.rf, model.stride)
    cells = torch.arange(100).repeat(12, 1)  # row-major order for every image
    curves = deletion_insertion(model, MEAN, STD, images, labels, cells, boxes, tmax=100,
                                batch=5)
    assert set(curves) == {"deletion", "insertion", "clean", "area"}
    assert len(curves["deletion"]) == len(curves["insertion"]) == 100

    def accuracy(x: np.ndarray) -> float:
        with torch.no_grad():
            out = model(preprocess(torch.from_numpy(x), MEAN, STD))
        return float((image_logits(out.logits).argmax(1) == labels).double().mean())

    assert curves["clean"][0] == pytest.approx(accuracy(images))
    covered = np.zeros((32, 32), bool)  # every cell's box: rows and columns 0..30
    for t, lf, b, r in boxes:
        covered[t:b, lf:r] = True
    assert curves["deletion"][-1] == pytest.approx(accuracy(images * ~covered))
    assert curves["insertion"][-1] == pytest.approx(accuracy(images * covered))
    first = np.zeros((32, 32), bool)
    first[0:13, 0:13] = True  # cell 0's box
    assert curves["insertion"][0] == pytest.approx(accuracy(images * first))
    assert curves["deletion"][0] == pytest.approx(accuracy(images * ~first))
    assert curves["area"][0] == pytest.approx(13 * 13 / 32 ** 2)  # the share of the image
    assert curves["area"][-1] == pytest.approx(covered.mean())
