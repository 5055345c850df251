"""Drawing helpers shared by the mini pool's task generators: palette, backgrounds, masks.

Every helper is a pure function of its arguments (and of a numpy Generator where it draws), so a
seed fixes the images bit for bit."""

from __future__ import annotations

import numpy as np

SIZE = 32  # image side in pixels

Images = np.ndarray  # uint8 [n, SIZE, SIZE, 3]
Labels = np.ndarray  # int64 [n]

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)

_PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (40, 60, 230),
    "yellow": (235, 220, 30),
    "purple": (150, 40, 200),
    "orange": (245, 140, 20),
}


def _random_colour(rng, low=60, high=256) -> np.ndarray:
    return rng.integers(low, high, size=3).astype(np.float32)


def _background(rng, n) -> np.ndarray:
    """Dark, slightly noisy backgrounds of random tint: [n, S, S, 3] float."""
    base = rng.uniform(0, 70, size=(n, 1, 1, 3))
    return base + rng.normal(0, 8, size=(n, SIZE, SIZE, 3))


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    """Alpha-blend `colour` into one [S, S, 3] canvas where mask (in [0, 1]) is set."""
    m = mask[..., None]
    canvas *= 1 - m
    canvas += m * colour


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _disk(cy, cx, r) -> np.ndarray:
    return (((_YY - cy) ** 2 + (_XX - cx) ** 2) <= r * r).astype(np.float32)


_SIMPLE_SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")


def _shape_mask(kind: str, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = _YY - cy, _XX - cx
    if kind == "circle":
        m = dy**2 + dx**2 <= r * r
    elif kind == "square":
        m = (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    elif kind == "triangle":
        m = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    elif kind == "cross":
        w = max(1.5, r * 0.3)
        m = ((np.abs(dy) <= w) & (np.abs(dx) <= r)) | ((np.abs(dx) <= w) & (np.abs(dy) <= r))
    elif kind == "ring":
        d2 = dy**2 + dx**2
        m = (d2 <= r * r) & (d2 >= (r * 0.55) ** 2)
    elif kind == "diamond":
        m = np.abs(dy) + np.abs(dx) <= r
    else:
        raise ValueError(kind)
    return m.astype(np.float32)
