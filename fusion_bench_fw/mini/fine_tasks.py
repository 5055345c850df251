"""Class-rich versions of the four eval tasks: each class a pair of attributes, 21-40 classes.

Why: the real eval tasks have tens to hundreds of fine-grained classes (SUN397 397, Cars 196, GTSRB 43,
DTD 47), where many class prompts share words. A tower that over-merging has collapsed to one
embedding then sits near many prompts at once and its predictions stay uncertain, so entropy
minimisation (AdaMerging) is not drawn to the collapse. With the 8-10 coarse classes of the v4 eval
tasks the collapsed embedding is close to one prompt only and confidently wrong (issue 13's probe).
Each task keeps its role: scenes (SUN397), shapes (Cars), digits (GTSRB), textures (DTD).
"""

from __future__ import annotations

import numpy as np

from .digit_tasks import _digit_canvases, _ink_on_background, _sample_digits
from .drawing import _PALETTE, _XX, _YY, _background, _disk, _paint, _random_colour, _to_uint8
from .procedural_tasks import _SCENES, _TEXTURES, _rich_shape, _scene, _texture, _two_tone

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

SCENE_KINDS = tuple(s for s in _SCENES if s != "night")  # night is a light here
LIGHTS = ("day", "dusk", "night")
SHAPE_KINDS = ("circle", "ring", "triangle", "square", "pentagon", "hexagon", "star", "cross", "crescent", "semicircle")
FILLS = ("solid", "outlined", "striped")
INKS = ("red", "green", "blue", "yellow")
SCALES = {"fine": (3.0, 4.5), "medium": (6.0, 8.5), "coarse": (11.0, 16.0)}

# class names, in label order (label = first attribute's index * len(second) + second's index)
SCENE_CLASSES = tuple(f"{s} at {'daytime' if l == 'day' else l}" for s in SCENE_KINDS for l in LIGHTS)
SHAPE_CLASSES = tuple(f"{f} {s}" for s in SHAPE_KINDS for f in FILLS)
DIGIT_CLASSES = tuple(f"{c} {d}" for d in DIGIT_WORDS for c in INKS)
TEXTURE_CLASSES = tuple(f"{k} {t}" for t in _TEXTURES for k in SCALES)


def gen_scenes_lit(rng, n, split):
    """Seven scene layouts under three lights."""
    y = rng.integers(0, len(SCENE_CLASSES), size=n)
    x = np.stack([_scene(SCENE_KINDS[k // len(LIGHTS)], rng, LIGHTS[k % len(LIGHTS)]) for k in y])
    x += rng.normal(0, 8, size=x.shape)
    return _to_uint8(x), y.astype(np.int64)


def _fill(mask: np.ndarray, fill: str, cy, cx, r, kind, phase, rng) -> np.ndarray:
    if fill == "outlined":  # the shape minus a smaller copy of itself: a 2-3 pixel outline
        return mask * (1 - _rich_shape(kind, cy, cx, r - rng.uniform(2.0, 3.0), phase))
    if fill == "striped":
        th = rng.uniform(0, np.pi)
        bands = np.sin((_XX * np.cos(th) + _YY * np.sin(th)) * 2 * np.pi / rng.uniform(3.0, 4.0)) > 0
        return mask * bands.astype(np.float32)
    return mask


def gen_shapes_filled(rng, n, split):
    """Ten shapes, each solid, outlined or striped; any rotation, size and colour, with distractor blobs."""
    y = rng.integers(0, len(SHAPE_CLASSES), size=n)
    x = _background(rng, n)
    for i in range(n):
        for _ in range(rng.integers(0, 3)):
            _paint(x[i], _disk(*rng.uniform(2, 30, size=2), rng.uniform(1, 2.2)), _random_colour(rng, 60))
        kind, fill = SHAPE_KINDS[y[i] // len(FILLS)], FILLS[y[i] % len(FILLS)]
        r = rng.uniform(8, 13)
        cy, cx = rng.uniform(r * 0.8 + 1, 32 - r * 0.8 - 1, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        mask = _fill(_rich_shape(kind, cy, cx, r, phase), fill, cy, cx, r, kind, phase, rng)
        _paint(x[i], mask, _random_colour(rng, 110))
    return _to_uint8(x), y.astype(np.int64)


def gen_digits_inked(rng, n, split):
    """The sklearn digits in one of four ink colours: 40 classes ("red seven")."""
    d, digit = _sample_digits(rng, n, split)
    ink = rng.integers(0, len(INKS), size=n)
    colours = [np.array(_PALETTE[INKS[k]], np.float32) + rng.normal(0, 12, 3) for k in ink]
    x = _ink_on_background(rng, _digit_canvases(rng, d), colours)
    return _to_uint8(x), (digit * len(INKS) + ink).astype(np.int64)


def gen_textures_scaled(rng, n, split):
    """Ten textures at three scales (fine, medium, coarse period)."""
    scales = tuple(SCALES.values())
    y = rng.integers(0, len(TEXTURE_CLASSES), size=n)
    x = np.stack([_two_tone(rng, _texture(_TEXTURES[k // len(scales)], rng, scales[k % len(scales)])) for k in y])
    x += rng.normal(0, 10, size=x.shape)
    return _to_uint8(x), y.astype(np.int64)
