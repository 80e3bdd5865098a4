"""Figures a reader can read: numbered glimpses, captions, and the error-against-T plot."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from glimpse_gym.envs.render import (
    NEUTRAL,
    PALETTE,
    RIGHT,
    STRIP,
    WRONG,
    caption_strip,
    draw_glimpses,
    outcome_caption,
)

IMAGE = np.full((1, 32, 32), 90, np.uint8)  # draws at scale 8: 256 x 256
BOXES = [(0, 0, 13, 13), (10, 16, 23, 29), (19, 2, 32, 15)]


def _has(pixels: np.ndarray, colour) -> bool:
    return bool((pixels.reshape(-1, 3) == np.asarray(colour, np.uint8)).all(axis=1).any())


def test_caption_adds_a_strip_above_an_unchanged_picture() -> None:
    plain = draw_glimpses(IMAGE, BOXES)
    assert plain.shape == (256, 256, 3) and plain.dtype == np.uint8
    text, colour = outcome_caption(3, 3)
    captioned = draw_glimpses(IMAGE, BOXES, caption=text, caption_colour=colour)
    strip = captioned.shape[0] - plain.shape[0]
    assert strip >= 16 and captioned.shape[1:] == plain.shape[1:]
    assert np.array_equal(captioned[strip:], plain)
    assert _has(captioned[:strip], RIGHT) and not _has(captioned[:strip], WRONG)


def test_outcome_caption_names_label_and_prediction_and_colours_them() -> None:
    assert outcome_caption(3, 5) == ("label: 3  pred: 5", WRONG)
    assert outcome_caption(3, 3) == ("label: 3  pred: 3", RIGHT)
    assert outcome_caption(3, None) == ("label: 3  pred: -", NEUTRAL)
    assert outcome_caption(3, -1)[1] == NEUTRAL  # the vector env's "no prediction yet"
    assert outcome_caption(0, 1, ["cat", "dog"]) == ("label: cat  pred: dog", WRONG)
    text, colour = outcome_caption(0, 1, ["cat", "dog"])
    strip = caption_strip(text, 256, colour)
    assert _has(strip, WRONG) and not _has(strip, RIGHT)


def test_a_long_caption_is_shrunk_to_fit_the_width() -> None:
    wide = caption_strip("label: automobile  pred: truck", 240)
    strip = caption_strip("label: automobile  pred: truck", 120)
    assert strip.shape[1] == 120 and strip.shape[0] < wide.shape[0]  # a smaller font
    for image in (wide, strip):
        assert (image[:, -2:] == np.asarray(STRIP, np.uint8)).all()  # nothing runs off the edge
        assert (image > 150).any()  # the text is there


@pytest.mark.parametrize("background", [0, 255])
def test_order_numbers_sit_in_a_readable_tag_inside_each_box(background) -> None:
    image = np.full((3, 32, 32), background, np.uint8)
    frame = draw_glimpses(image, BOXES)
    s = 8
    for k, (top, left, _, _) in enumerate(BOXES):
        line = s // 3
        tag = frame[top * s + line:top * s + line + 22, left * s + line:left * s + line + 22]
        fill = (tag == PALETTE[k]).all(axis=-1)
        ink = (tag == 0).all(axis=-1) | (tag == 255).all(axis=-1)
        assert fill.sum() > 80, k  # a solid tag of the glimpse's colour ...
        # ... whose number is drawn in black or white across at least 8 pixel rows
        rows = np.flatnonzero((ink & ~fill).any(axis=1) & fill.any(axis=1))
        assert len(rows) and rows.max() - rows.min() >= 8, k


def test_error_plot_shows_a_policy_at_zero_error(tmp_path) -> None:
    from train.evaluate import _plot

    table = {"random": {"error": {t: 0.8 / t for t in range(1, 7)}},
             "ordered-logits": {"error": dict.fromkeys(range(1, 7), 0.0)},
             "full-image": {"error": dict.fromkeys(range(1, 7), 0.0)}}
    fig = _plot(table, 6, tmp_path / "accuracy.png", "digits test")
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
    ax = fig.axes[0]
    bottom, top = ax.get_ylim()
    assert ax.get_yscale() != "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == set(table)
    for name, line in lines.items():
        ys = np.asarray(line.get_ydata(), float)
        # drawn inside the axes, not on (or below) its bottom edge
        assert (ys > bottom).all() and (ys < top).all(), name
    assert lines["full-image"].get_linestyle() == "--"
    zero = ax.transData.transform((1, 0))[1] - ax.transData.transform((1, bottom))[1]
    assert zero >= 2  # pixels between the 0 % line and the bottom of the axes


def test_pictures_caption_each_image_with_its_label_and_prediction(tmp_path) -> None:
    from train.evaluate import _pictures

    boxes = np.array([[0, 0, 13, 13], [0, 16, 13, 29], [16, 0, 29, 13], [16, 16, 29, 29]])
    source = SimpleNamespace(images=np.full((2, 1, 32, 32), 60, np.uint8),
                             cell_boxes=lambda: boxes, class_names=("zero", "one", "two"))
    cells = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    labels = torch.tensor([1, 2])
    predictions = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])  # after 3: right, wrong
    files = _pictures(source, cells, 3, "p", Path(tmp_path), 2, labels=labels,
                      predictions=predictions)
    assert files == ["glimpses-p.png", "glimpses-p.gif"]
    sheet = np.asarray(Image.open(tmp_path / "glimpses-p.png").convert("RGB"))
    assert sheet.shape[0] > 256  # the caption strip above the 256-pixel picture
    strip = sheet[: sheet.shape[0] - 256]
    assert _has(strip[:, :256], RIGHT) and not _has(strip[:, :256], WRONG)
    assert _has(strip[:, -256:], WRONG) and not _has(strip[:, -256:], RIGHT)
    with Image.open(tmp_path / "glimpses-p.gif") as gif:
        assert gif.n_frames == 4  # no glimpse, then one frame per glimpse
    # without labels: no caption
    _pictures(source, cells, 3, "q", Path(tmp_path), 1)
    assert Image.open(tmp_path / "glimpses-q.png").size == (256, 256)
