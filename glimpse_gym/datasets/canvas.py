"""Placing objects on a larger canvas, with clutter, as in Mnih et al. 2014 (RAM).

"Translated" MNIST puts each 28x28 digit at a uniformly random position on a blank canvas;
"cluttered translated" MNIST first scatters ``pieces`` random ``piece_size`` x ``piece_size``
crops of *other* images of the same split over the canvas. Pixels combine by maximum.
Everything is vectorised over images: one numpy gather/scatter per piece, no loop over images.
"""

from __future__ import annotations

import numpy as np

from glimpse_gym.errors import UsageError


def _paste_max(canvas: np.ndarray, patches: np.ndarray, top: np.ndarray, left: np.ndarray) -> None:
    """In place: ``canvas[n, top[n]:+h, left[n]:+w] = max(canvas, patches[n])`` for every n.

    Args:
        canvas: ``[N, S, S] uint8``.
        patches: ``[N, h, w] uint8``.
        top, left: ``[N]`` int, the patch's upper-left corner on the canvas.
    """
    n, h, w = patches.shape
    rows = top[:, None, None] + np.arange(h)[None, :, None]
    cols = left[:, None, None] + np.arange(w)[None, None, :]
    idx = np.arange(n)[:, None, None]
    canvas[idx, rows, cols] = np.maximum(canvas[idx, rows, cols], patches)


def compose_canvases(
    objects: np.ndarray,
    canvas_size: int,
    pieces: int,
    piece_size: int,
    clutter_pool: np.ndarray | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Place every object at a random position on a canvas with random clutter.

    Args:
        objects: ``[N, h, w] uint8`` images to place (one per canvas).
        canvas_size: side ``S`` of the square canvas; must be at least ``max(h, w)``.
        pieces: number of clutter crops per canvas (0 for a blank background).
        piece_size: side of each square clutter crop.
        clutter_pool: ``[M, h', w'] uint8`` images the crops are cut from (usually the same
            split). When it is ``objects`` itself, a canvas never takes clutter from its own
            object. Required when ``pieces > 0``.
        rng: the generator that draws every position and crop.

    Returns:
        ``[N, S, S] uint8`` canvases.
    """
    n, h, w = objects.shape
    if canvas_size < max(h, w):
        raise UsageError(f"canvas_size {canvas_size} is smaller than the objects ({h}x{w}); "
                         f"use canvas_size >= {max(h, w)}")
    canvas = np.zeros((n, canvas_size, canvas_size), dtype=np.uint8)
    if pieces > 0:
        if clutter_pool is None or len(clutter_pool) < 2:
            raise UsageError("clutter needs a pool of at least 2 images to cut pieces from")
        ph, pw = clutter_pool.shape[1:]
        if piece_size > min(ph, pw, canvas_size):
            raise UsageError(f"piece_size {piece_size} is larger than the pool images ({ph}x{pw}) "
                             f"or the canvas ({canvas_size})")
        same_pool = clutter_pool is objects
        for _ in range(pieces):
            src = rng.integers(0, len(clutter_pool), n)
            if same_pool:  # "other digits": never a crop of the canvas's own object
                clash = src == np.arange(n)
                src[clash] = (src[clash] + 1) % len(clutter_pool)
            sy = rng.integers(0, ph - piece_size + 1, n)
            sx = rng.integers(0, pw - piece_size + 1, n)
            ar = np.arange(piece_size)
            crops = clutter_pool[
                src[:, None, None], sy[:, None, None] + ar[None, :, None], sx[:, None, None] + ar
            ]
            ty = rng.integers(0, canvas_size - piece_size + 1, n)
            tx = rng.integers(0, canvas_size - piece_size + 1, n)
            _paste_max(canvas, crops, ty, tx)
    top = rng.integers(0, canvas_size - h + 1, n)
    left = rng.integers(0, canvas_size - w + 1, n)
    _paste_max(canvas, objects, top, left)
    return canvas


def layout_rng(seed: int, split: str, layout_seed: int) -> np.random.Generator:
    """The generator of one split's canvas layouts: fixed per (seed, split, layout_seed)."""
    split_code = {"train": 0, "val": 1, "test": 2}[split]
    return np.random.default_rng([seed, split_code, layout_seed, 0x61A7])
