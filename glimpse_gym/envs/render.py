"""Drawing glimpses: receptive-field outlines and their order numbers on the image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# 3x5 bitmap digits, one string of 15 bits (rows top to bottom) per digit
_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001001001", "8": "111101111101111",
    "9": "111101111001111",
}
# distinct colours, cycled over glimpses
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                    [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255]], np.uint8)


def render_scale(height: int, width: int, target: int = 256) -> int:
    """Integer upscaling that brings the longer side to about ``target`` pixels."""
    return max(1, target // max(height, width))


def to_rgb(image: np.ndarray, scale: int) -> np.ndarray:
    """``[C, H, W] uint8`` (C = 1 or 3) -> ``[H*scale, W*scale, 3] uint8``."""
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    rgb = np.ascontiguousarray(rgb.transpose(1, 2, 0))
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


def _text(canvas: np.ndarray, text: str, top: int, left: int, colour: np.ndarray,
          size: int) -> None:
    for i, ch in enumerate(text):
        bits = np.array([int(b) for b in _FONT[ch]], bool).reshape(5, 3)
        glyph = np.kron(bits, np.ones((size, size), bool))
        y, x = top, left + i * 4 * size
        h = min(glyph.shape[0], canvas.shape[0] - y)
        w = min(glyph.shape[1], canvas.shape[1] - x)
        if h > 0 and w > 0:
            canvas[y:y + h, x:x + w][glyph[:h, :w]] = colour


def draw_glimpses(image: np.ndarray, boxes: Sequence[tuple[int, int, int, int]],
                  scale: int | None = None) -> np.ndarray:
    """Outline each box ``(top, left, bottom, right)`` (image pixels, end exclusive) and number it.

    Args:
        image: ``[C, H, W] uint8``.
        boxes: the glimpses in order; glimpse k is drawn in ``PALETTE[k % 12]`` with the
            number k + 1 inside its top-left corner.
        scale: integer upscaling (default: about 256 pixels on the longer side).

    Returns:
        ``[H*scale, W*scale, 3] uint8``. The outline of a box is the 1-pixel-wide (times the
        scale) border of the pixels it covers.
    """
    _, h, w = image.shape
    s = scale or render_scale(h, w)
    canvas = to_rgb(image, s)
    line = max(1, s // 3)
    for k, (top, left, bottom, right) in enumerate(boxes):
        colour = PALETTE[k % len(PALETTE)]
        t, lft, b, r = top * s, left * s, bottom * s, right * s
        canvas[t:t + line, lft:r] = colour
        canvas[b - line:b, lft:r] = colour
        canvas[t:b, lft:lft + line] = colour
        canvas[t:b, r - line:r] = colour
        _text(canvas, str(k + 1), t + line + 1, lft + line + 1, colour, max(1, s // 4))
    return canvas
