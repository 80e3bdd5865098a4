"""Drawing glimpses: receptive-field outlines, their order numbers, and an optional caption.

:func:`draw_glimpses` outlines each glimpse's receptive field in its own colour and puts its
order number (1, 2, ...) in a tag of that colour inside the box's top-left corner, dark text on
light colours and light text on dark ones, so the number reads on any image. With a
``caption`` it adds a dark strip above the image holding one line of text, e.g. the one
:func:`outcome_caption` makes: ``"label: 3  pred: 5"``, green when right and red when wrong.
Text uses Pillow's built-in font (scalable from Pillow 10.1 with FreeType, else its bitmap
font); no font file is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from glimpse_gym.envs.source import GlimpseSource

# distinct colours, cycled over glimpses
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                    [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255]], np.uint8)
RIGHT = (80, 220, 100)
"""Caption colour of a right prediction (green)."""
WRONG = (255, 85, 85)
"""Caption colour of a wrong prediction (red)."""
NEUTRAL = (235, 235, 235)
"""Caption colour when there is no prediction yet."""
STRIP = (24, 24, 24)
"""Background of the caption strip."""

Colour = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def render_scale(height: int, width: int, target: int = 256) -> int:
    """Integer upscaling that brings the longer side to about ``target`` pixels."""
    return max(1, target // max(height, width))


def to_rgb(image: np.ndarray, scale: int) -> np.ndarray:
    """``[C, H, W] uint8`` (C = 1 or 3) -> ``[H*scale, W*scale, 3] uint8``."""
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    rgb = np.ascontiguousarray(rgb.transpose(1, 2, 0))
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


@lru_cache(maxsize=32)
def font(size: int) -> Font:
    """Pillow's built-in font at ``size`` pixels, or its fixed bitmap font where it cannot scale."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1, or built without FreeType
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, face: Font) -> tuple[int, int, int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    return int(left), int(top), int(right - left), int(bottom - top)


def _ink(fill: Sequence[int]) -> Colour:
    """Black on light colours, white on dark ones (ITU-R BT.601 luma)."""
    luma = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _tag(draw: ImageDraw.ImageDraw, text: str, x: int, y: int, right: int, bottom: int,
         fill: Sequence[int], face: Font) -> None:
    """A filled, dark-outlined box holding ``text`` at ``(x, y)``, kept left of ``right`` and
    above ``bottom`` where it can be."""
    left, top, w, h = _text_size(draw, text, face)
    pad = max(1, h // 4)
    tw, th = w + 2 * pad + 2, h + 2 * pad + 2
    x = max(0, min(x, right - tw))
    y = max(0, min(y, bottom - th))
    draw.rectangle((x, y, x + tw - 1, y + th - 1), fill=tuple(int(c) for c in fill),
                   outline=(0, 0, 0))
    draw.text((x + 1 + pad - left, y + 1 + pad - top), text, font=face, fill=_ink(fill))


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, size: int) -> tuple[str, Font]:
    """The largest font from ``size`` down to 9 px that fits ``text`` in ``width``, and the
    text itself; where even the smallest is too wide, the longest of its fields (parts
    separated by two spaces) is cut, one character at a time, with an ellipsis."""
    for s in range(size, 8, -1):
        face = font(s)
        if _text_size(draw, text, face)[2] <= width:
            return text, face
    face = font(9)
    fields = text.split("  ")
    cut = [False] * len(fields)
    while _text_size(draw, text, face)[2] > width:
        k = max(range(len(fields)), key=lambda i: len(fields[i]))
        if len(fields[k]) <= 1:
            break
        fields[k], cut[k] = fields[k][:-1], True
        text = "  ".join(f + "…" if c else f for f, c in zip(fields, cut, strict=True))
    return text, face


def caption_strip(text: str, width: int, colour: Sequence[int] = NEUTRAL,
                  size: int | None = None) -> np.ndarray:
    """One line of ``text`` in ``colour`` on a dark strip ``width`` pixels wide.

    Args:
        text: the caption; shrunk (down to 9 px), then cut, to fit the width.
        width: the strip's width in pixels (the image's).
        colour: RGB of the text.
        size: font size in pixels (default: about 1/13 of the width, at least 11).

    Returns:
        ``[h, width, 3] uint8`` with ``h`` about 1.5 times the font size.
    """
    size = size or max(11, round(width / 13))
    height = round(size * 1.5)
    strip = Image.new("RGB", (width, height), STRIP)
    draw = ImageDraw.Draw(strip)
    pad = max(2, size // 3)
    text, face = _fit(draw, text, width - 2 * pad, size)
    left, top, _, h = _text_size(draw, text, face)
    draw.text((pad - left, (height - h) // 2 - top), text, font=face,
              fill=tuple(int(c) for c in colour))
    return np.asarray(strip)


def outcome_caption(label: int, prediction: int | None = None,
                    class_names: Sequence[str] | None = None) -> tuple[str, Colour]:
    """``("label: 3  pred: 5", colour)`` for :func:`draw_glimpses`' ``caption``.

    Args:
        label: the true class index.
        prediction: the predicted class index; ``None`` or negative when there is none yet
            (``pred: -``).
        class_names: names shown instead of the indices, where given.

    Returns:
        The text and its colour: :data:`RIGHT` (green), :data:`WRONG` (red), or
        :data:`NEUTRAL` without a prediction.
    """
    def name(k: int) -> str:
        return str(class_names[k]) if class_names is not None and 0 <= k < len(class_names) \
            else str(k)

    if prediction is None or prediction < 0:
        return f"label: {name(label)}  pred: -", NEUTRAL
    colour = RIGHT if prediction == label else WRONG
    return f"label: {name(label)}  pred: {name(prediction)}", colour


def draw_glimpses(image: np.ndarray, boxes: Sequence[tuple[int, int, int, int]],
                  scale: int | None = None, *, caption: str | None = None,
                  caption_colour: Sequence[int] = NEUTRAL) -> np.ndarray:
    """Outline each box ``(top, left, bottom, right)`` (image pixels, end exclusive) and number it.

    Args:
        image: ``[C, H, W] uint8``.
        boxes: the glimpses in order; glimpse k is outlined in ``PALETTE[k % 12]`` and its
            number k + 1 is written in a tag of that colour inside the box's top-left corner.
        scale: integer upscaling (default: about 256 pixels on the longer side).
        caption: one line drawn on a dark strip above the image (e.g. from
            :func:`outcome_caption`); none by default.
        caption_colour: RGB of the caption text.

    Returns:
        ``[S + H*scale, W*scale, 3] uint8``, where ``S`` is the caption strip's height (0
        without a caption). The outline of a box is the 1-pixel-wide (times the scale) border
        of the pixels it covers.
    """
    _, h, w = image.shape
    s = scale or render_scale(h, w)
    canvas = to_rgb(image, s)
    line = max(1, s // 3)
    pixel_boxes = [tuple(v * s for v in box) for box in boxes]
    for k, (t, lft, b, r) in enumerate(pixel_boxes):
        colour = PALETTE[k % len(PALETTE)]
        canvas[t:t + line, lft:r] = colour
        canvas[b - line:b, lft:r] = colour
        canvas[t:b, lft:lft + line] = colour
        canvas[t:b, r - line:r] = colour
    if pixel_boxes:
        picture = Image.fromarray(canvas)
        draw = ImageDraw.Draw(picture)
        face = font(max(10, round(max(canvas.shape[:2]) / 14)))
        for k, (t, lft, b, r) in enumerate(pixel_boxes):
            _tag(draw, str(k + 1), lft + line, t + line, r - line, b - line,
                 PALETTE[k % len(PALETTE)], face)
        canvas = np.asarray(picture).copy()
    if caption is not None:
        canvas = np.concatenate([caption_strip(caption, canvas.shape[1], caption_colour),
                                 canvas], axis=0)
    return canvas


def render_cells(source: GlimpseSource, index: int, cells: Sequence[int]) -> np.ndarray:
    """Image ``index`` of ``source`` with the receptive fields of ``cells`` outlined and
    numbered in order (what ``env.render()`` returns)."""
    if source.images is None:
        raise ValueError("this feature bank holds no images (extracted with "
                         "--no-store-images), so there is nothing to draw")
    boxes = source.cell_boxes()
    return draw_glimpses(np.asarray(source.images[index]), [tuple(boxes[c]) for c in cells])
