"""The eight digit tasks: sklearn's bundled 8x8 handwritten digits relabelled or distorted (the same
pixels under conflicting labels, like MNIST/KMNIST/EMNIST in the real TA20 pool)."""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, Tuple

import numpy as np

from .drawing import _PALETTE, SIZE, _background, _paint, _random_colour, _to_uint8

@lru_cache(maxsize=1)
def _digit_pools() -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """sklearn's 1797 8x8 digits in [0, 1], split once: first 1300 train, last 497 test.

    sklearn orders the digits roughly by writer, so the tail is a fair held-out set.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    return {"train": (x[:1300], y[:1300]), "test": (x[1300:], y[1300:])}


def _upsample(img8: np.ndarray, side: int) -> np.ndarray:
    """Bilinear k x k (8 x 8 for the digits) -> side x side (pure numpy, deterministic)."""
    k = img8.shape[0]
    pos = (np.arange(side, dtype=np.float32) + 0.5) * k / side - 0.5
    pos = np.clip(pos, 0, k - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, k - 1)
    w = pos - lo
    rows = img8[lo] * (1 - w)[:, None] + img8[hi] * w[:, None]
    return rows[:, lo] * (1 - w)[None, :] + rows[:, hi] * w[None, :]


def _sample_digits(rng, n, split):
    x, y = _digit_pools()[split]
    idx = rng.choice(len(x), size=n, replace=n > len(x))
    return x[idx], y[idx]


def _place(glyph: np.ndarray, oy: int, ox: int) -> np.ndarray:
    canvas = np.zeros((SIZE, SIZE), np.float32)
    h, w = glyph.shape
    canvas[oy : oy + h, ox : ox + w] = glyph
    return canvas


def _digit_canvases(rng, digits8, side=26) -> np.ndarray:
    """Each digit upsampled to `side` px and placed at a random offset: [n, S, S] in [0, 1]."""
    out = np.empty((len(digits8), SIZE, SIZE), np.float32)
    for i, d in enumerate(digits8):
        oy, ox = rng.integers(0, SIZE - side + 1, size=2)
        out[i] = _place(_upsample(d, side), oy, ox)
    return out


def _ink_on_background(rng, masks, colours=None) -> np.ndarray:
    n = len(masks)
    canvas = _background(rng, n)
    for i in range(n):
        colour = colours[i] if colours is not None else _random_colour(rng, 150)
        _paint(canvas[i], masks[i], colour)
    return canvas


def gen_digits(rng, n, split):
    d, y = _sample_digits(rng, n, split)
    return _to_uint8(_ink_on_background(rng, _digit_canvases(rng, d))), y


def gen_digit_parity(rng, n, split):
    d, y = _sample_digits(rng, n, split)
    return _to_uint8(_ink_on_background(rng, _digit_canvases(rng, d))), y % 2


def gen_digit_magnitude(rng, n, split):
    d, y = _sample_digits(rng, n, split)
    return _to_uint8(_ink_on_background(rng, _digit_canvases(rng, d))), (y >= 5).astype(np.int64)


def gen_digit_rotation(rng, n, split):
    d, _ = _sample_digits(rng, n, split)
    k = rng.integers(0, 4, size=n)
    rotated = np.stack([np.rot90(img, kk) for img, kk in zip(d, k)])
    return _to_uint8(_ink_on_background(rng, _digit_canvases(rng, rotated))), k.astype(np.int64)


def gen_digits_inverted(rng, n, split):
    d, y = _sample_digits(rng, n, split)
    masks = _digit_canvases(rng, d)
    bg = 190 + rng.uniform(0, 60, size=(n, 1, 1, 3)) + rng.normal(0, 8, size=(n, SIZE, SIZE, 3))
    ink = rng.uniform(0, 80, size=(n, 1, 1, 3))
    m = masks[..., None]
    return _to_uint8(bg * (1 - m) + ink * m), y


def gen_digits_noisy(rng, n, split):
    d, y = _sample_digits(rng, n, split)
    x = _ink_on_background(rng, _digit_canvases(rng, d))
    x += rng.normal(0, 55, size=x.shape)
    return _to_uint8(x), y


def gen_digit_color(rng, n, split):
    d, _ = _sample_digits(rng, n, split)
    names = list(_PALETTE)
    k = rng.integers(0, len(names), size=n)
    colours = [np.array(_PALETTE[names[kk]], np.float32) + rng.normal(0, 12, 3) for kk in k]
    return _to_uint8(_ink_on_background(rng, _digit_canvases(rng, d), colours)), k.astype(np.int64)


_QUADRANTS = [(0, 0), (0, 1), (1, 0), (1, 1)]


def gen_digit_position(rng, n, split):
    d, _ = _sample_digits(rng, n, split)
    k = rng.integers(0, 4, size=n)
    masks = np.empty((n, SIZE, SIZE), np.float32)
    for i in range(n):
        qy, qx = _QUADRANTS[k[i]]
        oy = qy * 16 + rng.integers(0, 3)
        ox = qx * 16 + rng.integers(0, 3)
        masks[i] = _place(_upsample(d[i], 14), oy, ox)
    return _to_uint8(_ink_on_background(rng, masks)), k.astype(np.int64)
