"""The twelve procedural task families (shapes, colours, textures, scenes, ...): look nothing alike."""

from __future__ import annotations

from typing import List

import numpy as np

from .digit_tasks import _upsample
from .drawing import _PALETTE, _SIMPLE_SHAPES, _XX, _YY, SIZE, _background, _disk, _paint, _random_colour, _shape_mask, _to_uint8

_SHAPES = ("circle", "ring", "triangle", "square", "star", "cross", "crescent", "semicircle")


def _polygon(n_sides: int, cy, cx, r, phase) -> np.ndarray:
    """Regular polygon with circumradius r, rotated by `phase` (radians)."""
    th = np.arctan2(_YY - cy, _XX - cx) - phase
    rho = np.hypot(_YY - cy, _XX - cx)
    sector = 2 * np.pi / n_sides
    local = np.mod(th, sector) - sector / 2
    return (rho * np.cos(local) <= r * np.cos(np.pi / n_sides)).astype(np.float32)


def _rich_shape(kind: str, cy, cx, r, phase) -> np.ndarray:
    """The fine-grained shape family: rotated polygons, stars, crescents..."""
    if kind == "triangle":
        return _polygon(3, cy, cx, r, phase)
    if kind == "square":
        return _polygon(4, cy, cx, r, phase)
    if kind == "pentagon":
        return _polygon(5, cy, cx, r, phase)
    if kind == "hexagon":
        return _polygon(6, cy, cx, r, phase)
    th = np.arctan2(_YY - cy, _XX - cx) - phase
    rho = np.hypot(_YY - cy, _XX - cx)
    if kind == "star":
        return (rho <= r * (0.55 + 0.45 * np.cos(5 * th) ** 8 * (np.cos(5 * th) > 0))).astype(np.float32)
    if kind == "cross":
        u = (_XX - cx) * np.cos(phase) + (_YY - cy) * np.sin(phase)
        v = -(_XX - cx) * np.sin(phase) + (_YY - cy) * np.cos(phase)
        w = r * 0.3
        return (((np.abs(u) <= w) & (np.abs(v) <= r)) | ((np.abs(v) <= w) & (np.abs(u) <= r))).astype(np.float32)
    if kind == "crescent":
        dy, dx = 0.45 * r * np.sin(phase), 0.45 * r * np.cos(phase)
        return ((rho <= r) & (np.hypot(_YY - cy - dy, _XX - cx - dx) > r * 0.8)).astype(np.float32)
    if kind == "semicircle":
        return ((rho <= r) & (np.cos(th) >= 0)).astype(np.float32)
    if kind == "ring":
        return ((rho <= r) & (rho >= r * 0.55)).astype(np.float32)
    if kind == "circle":
        return (rho <= r).astype(np.float32)
    raise ValueError(kind)


def gen_shapes(rng, n, split):
    """Eight shapes, any rotation, size and colour, with a couple of small distractor blobs."""
    y = rng.integers(0, len(_SHAPES), size=n)
    x = _background(rng, n)
    for i in range(n):
        for _ in range(rng.integers(0, 3)):
            _paint(x[i], _disk(*rng.uniform(2, SIZE - 2, size=2), rng.uniform(1, 2.2)), _random_colour(rng, 60))
        r = rng.uniform(7, 12)
        cy, cx = rng.uniform(r * 0.8 + 1, SIZE - r * 0.8 - 1, size=2)
        mask = _rich_shape(_SHAPES[y[i]], cy, cx, r, rng.uniform(0, 2 * np.pi))
        _paint(x[i], mask, _random_colour(rng, 110))
    return _to_uint8(x), y.astype(np.int64)


def gen_colors(rng, n, split):
    names = list(_PALETTE)
    y = rng.integers(0, len(names), size=n)
    x = 90 + rng.uniform(-30, 30, size=(n, 1, 1, 1)) + rng.normal(0, 8, size=(n, SIZE, SIZE, 3))
    for i in range(n):
        r = rng.uniform(5, 11)
        cy, cx = rng.uniform(r, SIZE - r, size=2)
        kind = _SIMPLE_SHAPES[rng.integers(0, len(_SIMPLE_SHAPES))]
        colour = np.array(_PALETTE[names[y[i]]], np.float32) + rng.normal(0, 15, 3)
        _paint(x[i], _shape_mask(kind, cy, cx, r), colour)
    return _to_uint8(x), y.astype(np.int64)


def _two_tone(rng, pattern: np.ndarray) -> np.ndarray:
    a, b = _random_colour(rng, 0, 120), _random_colour(rng, 130, 256)
    p = pattern[..., None]
    return a * (1 - p) + b * p


def _texture(kind: str, rng, period=(5, 9)) -> np.ndarray:
    """A [S, S] pattern in [0, 1] of one texture family, at a random angle, phase and a scale drawn
    from `period` (pixels; blotches and speckles scale their grain with it)."""
    th = rng.uniform(0, np.pi)
    u = _XX * np.cos(th) + _YY * np.sin(th) + rng.uniform(0, 20)
    v = -_XX * np.sin(th) + _YY * np.cos(th) + rng.uniform(0, 20)
    p = rng.uniform(*period)  # period in pixels
    grain = period != (5, 9)  # the coarse textures' grain follows the period only off the default
    if kind == "stripes":
        return (np.sin(u * 2 * np.pi / p) > 0).astype(np.float32)
    if kind == "checkerboard":
        return ((np.floor(u / (p / 2 + 1)) + np.floor(v / (p / 2 + 1))) % 2).astype(np.float32)
    if kind == "dots":
        fu, fv = u % p - p / 2, v % p - p / 2
        return (fu**2 + fv**2 <= (p * 0.28) ** 2).astype(np.float32)
    if kind == "waves":
        return (np.sin(u * 2 * np.pi / p + 2.5 * np.sin(v * rng.uniform(0.25, 0.5))) > 0).astype(np.float32)
    if kind == "blotches":
        cells = max(2, round(SIZE / p)) if grain else 6
        coarse = rng.uniform(0, 1, size=(cells, cells)).astype(np.float32)
        return (_upsample(np.pad(coarse, 1, mode="edge"), SIZE) > 0.5).astype(np.float32)
    if kind == "grid":
        return ((u % p < 1.6) | (v % p < 1.6)).astype(np.float32)
    if kind == "zigzag":
        tri = np.abs((v / p) % 2 - 1) * p * 0.8
        return (np.sin((u + tri) * 2 * np.pi / p) > 0).astype(np.float32)
    if kind == "rings":
        cy, cx = rng.uniform(0, SIZE, size=2)
        return (np.sin(np.hypot(_YY - cy, _XX - cx) * 2 * np.pi / p) > 0).astype(np.float32)
    if kind == "bricks":
        row = np.floor(v / (p * 0.6))
        shift = (row % 2) * p * 0.6
        mortar = ((v % (p * 0.6)) < 1.2) | (((u + shift) % (p * 1.2)) < 1.2)
        return (~mortar).astype(np.float32)
    if kind == "speckles":
        if grain:  # speckle size follows the period: noise on a coarser grid, upsampled
            cells = max(4, round(2 * SIZE / p))
            return (_upsample(rng.uniform(0, 1, size=(cells, cells)).astype(np.float32), SIZE) > rng.uniform(0.75, 0.85)).astype(np.float32)
        return (rng.uniform(0, 1, size=(SIZE, SIZE)) > rng.uniform(0.8, 0.9)).astype(np.float32)
    raise ValueError(kind)


_TEXTURES = ("stripes", "checkerboard", "dots", "waves", "blotches", "grid", "zigzag", "rings", "bricks", "speckles")


def gen_textures(rng, n, split):
    y = rng.integers(0, len(_TEXTURES), size=n)
    x = np.stack([_two_tone(rng, _texture(_TEXTURES[k], rng)) for k in y])
    x += rng.normal(0, 10, size=x.shape)
    return _to_uint8(x), y.astype(np.int64)


def gen_orientation(rng, n, split):
    angles = (0.0, 90.0, 45.0, 135.0)
    y = rng.integers(0, 4, size=n)
    x = _background(rng, n)
    for i in range(n):
        th = np.deg2rad(angles[y[i]] + rng.uniform(-8, 8))
        cy, cx = rng.uniform(12, 20, size=2)
        # distance to a line through (cy, cx) with direction th
        dist = np.abs(-(_XX - cx) * np.sin(th) + (_YY - cy) * np.cos(th))
        along = np.abs((_XX - cx) * np.cos(th) + (_YY - cy) * np.sin(th))
        mask = ((dist <= rng.uniform(1.2, 2.5)) & (along <= rng.uniform(9, 15))).astype(np.float32)
        _paint(x[i], mask, _random_colour(rng, 130))
    return _to_uint8(x), y.astype(np.int64)


def gen_counts(rng, n, split):
    y = rng.integers(0, 5, size=n)
    x = _background(rng, n)
    for i in range(n):
        colour = _random_colour(rng, 130)
        centres: List[np.ndarray] = []
        while len(centres) < y[i] + 1:
            c = rng.uniform(4, SIZE - 4, size=2)
            if all(np.sum((c - o) ** 2) > 64 for o in centres):
                centres.append(c)
        for cy, cx in centres:
            _paint(x[i], _disk(cy, cx, rng.uniform(2.2, 3.2)), colour)
    return _to_uint8(x), y.astype(np.int64)


def gen_position(rng, n, split):
    centres = ((16, 6), (16, 26), (6, 16), (26, 16), (16, 16))  # left, right, top, bottom, centre
    y = rng.integers(0, 5, size=n)
    x = _background(rng, n)
    for i in range(n):
        cy, cx = np.array(centres[y[i]]) + rng.uniform(-2.5, 2.5, size=2)
        kind = _SIMPLE_SHAPES[rng.integers(0, len(_SIMPLE_SHAPES))]
        _paint(x[i], _shape_mask(kind, cy, cx, rng.uniform(4, 6)), _random_colour(rng, 120))
    return _to_uint8(x), y.astype(np.int64)


def gen_sizes(rng, n, split):
    radii = ((2.5, 4.5), (6.5, 8.5), (11.0, 14.0))
    y = rng.integers(0, 3, size=n)
    x = _background(rng, n)
    for i in range(n):
        r = rng.uniform(*radii[y[i]])
        cy, cx = rng.uniform(min(r, 15), max(SIZE - r, 17), size=2)
        kind = _SIMPLE_SHAPES[rng.integers(0, 3)]
        _paint(x[i], _shape_mask(kind, cy, cx, r), _random_colour(rng, 120))
    return _to_uint8(x), y.astype(np.int64)


_SCENES = ("city", "forest", "mountains", "lake", "beach", "road", "night", "field")


def _triangle_up(apex_y, apex_x, base_y, half_width) -> np.ndarray:
    frac = (_YY - apex_y) / max(base_y - apex_y, 1e-3)
    return ((frac >= 0) & (frac <= 1) & (np.abs(_XX - apex_x) <= frac * half_width)).astype(np.float32)


# sky and ground colour ranges, and a tint, of each light
_LIGHTS = {"day": ((90, 256), (30, 200), (1.0, 1.0, 1.0)), "dusk": ((70, 170), (10, 90), (1.45, 0.85, 0.75)),
           "night": ((0, 40), (0, 50), (1.0, 1.0, 1.0))}


def _scene(kind: str, rng, light=None) -> np.ndarray:
    """A scene recognised by its layout; colours are random so they do not give the class away.
    `light` ("day", "dusk", "night") sets the sky and ground; unset, the "night" scene is the dark one."""
    img = np.empty((SIZE, SIZE, 3), np.float32)
    horizon = int(rng.integers(9, 22))
    sky, ground, tint = _LIGHTS[light or ("night" if kind == "night" else "day")]
    img[:horizon] = _random_colour(rng, *sky) * tint
    img[horizon:] = _random_colour(rng, *ground) * tint
    if kind == "city":
        x = int(rng.integers(-2, 2))
        while x < SIZE:
            w, h = int(rng.integers(3, 7)), int(rng.integers(4, horizon + 3))
            img[max(0, horizon - h) : horizon + 2, max(0, x) : x + w] = _random_colour(rng, 40, 200)
            x += w + int(rng.integers(0, 2))
    elif kind == "forest":
        for _ in range(int(rng.integers(5, 9))):
            cx, h = rng.uniform(0, SIZE), rng.uniform(7, 14)
            base = horizon + rng.uniform(0, 5)
            _paint(img, _triangle_up(base - h, cx, base, h * 0.4), _random_colour(rng, 20, 160))
    elif kind == "mountains":
        for _ in range(int(rng.integers(2, 4))):
            cx, h = rng.uniform(2, SIZE - 2), rng.uniform(8, horizon + 2)
            _paint(img, _triangle_up(horizon - h, cx, horizon + 1, h * 1.1), _random_colour(rng, 40, 180))
    elif kind == "lake":
        cy = rng.uniform(horizon + 4, SIZE - 3)
        mask = (((_YY - cy) / rng.uniform(2.5, 4.5)) ** 2 + ((_XX - rng.uniform(10, 22)) / rng.uniform(8, 13)) ** 2) <= 1
        _paint(img, mask.astype(np.float32), _random_colour(rng, 40, 220))
    elif kind == "beach":
        sea = horizon + int(rng.integers(3, 7))
        img[horizon:sea] = _random_colour(rng, 40, 220)
        _paint(img, _disk(rng.uniform(2, horizon - 2), rng.uniform(3, 29), rng.uniform(2, 3.5)), _random_colour(rng, 180))
    elif kind == "road":
        vx, half = rng.uniform(10, 22), rng.uniform(9, 15)
        frac = (_YY - horizon) / (SIZE - horizon)
        road = (frac >= 0) & (np.abs(_XX - vx) <= 1 + frac * half)
        _paint(img, road.astype(np.float32), _random_colour(rng, 20, 150))
        dashes = road & (np.abs(_XX - vx) <= 0.4 + frac * 0.8) & ((_YY.astype(int) // 3) % 2 == 0)
        _paint(img, dashes.astype(np.float32), _random_colour(rng, 160))
    elif kind == "night":
        stars = (rng.uniform(0, 1, (SIZE, SIZE)) > 0.94) & (_YY < horizon)
        _paint(img, stars.astype(np.float32), _random_colour(rng, 180))
        _paint(img, _disk(rng.uniform(2, max(3, horizon - 3)), rng.uniform(4, 28), rng.uniform(2, 3.5)), _random_colour(rng, 190))
    elif kind == "field":
        for _ in range(int(rng.integers(12, 30))):
            cy, cx = rng.uniform(horizon + 1, SIZE), rng.uniform(0, SIZE)
            _paint(img, _disk(cy, cx, rng.uniform(0.7, 1.4)), _random_colour(rng, 80))
    else:
        raise ValueError(kind)
    return img


def gen_scenes(rng, n, split):
    y = rng.integers(0, len(_SCENES), size=n)
    x = np.stack([_scene(_SCENES[k], rng) for k in y])
    x += rng.normal(0, 8, size=x.shape)
    return _to_uint8(x), y.astype(np.int64)


def gen_gradients(rng, n, split):
    ramps = (_XX, SIZE - 1 - _XX, _YY, SIZE - 1 - _YY)  # brighter right, left, bottom, top
    y = rng.integers(0, 4, size=n)
    x = np.empty((n, SIZE, SIZE, 3), np.float32)
    for i in range(n):
        ramp = ramps[y[i]] / (SIZE - 1)
        colour = _random_colour(rng, 120)
        x[i] = (ramp * rng.uniform(0.7, 1.0) + rng.uniform(0, 0.15))[..., None] * colour
    x += rng.normal(0, 12, size=x.shape)
    return _to_uint8(x), y.astype(np.int64)


def gen_stripe_width(rng, n, split):
    periods = ((14, 20), (7, 9), (3, 4.2))  # wide, medium, thin
    y = rng.integers(0, 3, size=n)
    x = np.empty((n, SIZE, SIZE, 3), np.float32)
    for i in range(n):
        th = rng.uniform(0, np.pi)
        u = _XX * np.cos(th) + _YY * np.sin(th)
        pattern = (np.sin(u * 2 * np.pi / rng.uniform(*periods[y[i]]) + rng.uniform(0, 6.3)) > 0)
        x[i] = _two_tone(rng, pattern.astype(np.float32))
    x += rng.normal(0, 10, size=x.shape)
    return _to_uint8(x), y.astype(np.int64)


def gen_line_count(rng, n, split):
    y = rng.integers(0, 3, size=n)
    x = _background(rng, n)
    for i in range(n):
        vertical = rng.uniform() < 0.5
        coord = _XX if vertical else _YY
        slots = rng.choice(np.arange(4, 29, 6), size=y[i] + 1, replace=False)
        mask = np.zeros((SIZE, SIZE), np.float32)
        for s in slots:
            mask = np.maximum(mask, (np.abs(coord - s - rng.uniform(-1, 1)) <= 1.2).astype(np.float32))
        _paint(x[i], mask, _random_colour(rng, 130))
    return _to_uint8(x), y.astype(np.int64)


def gen_brightness(rng, n, split):
    levels = ((15, 60), (95, 150), (190, 245))  # dark, medium, bright mean intensity
    y = rng.integers(0, 3, size=n)
    x = np.empty((n, SIZE, SIZE, 3), np.float32)
    for i in range(n):
        pattern = _texture(_TEXTURES[rng.integers(0, len(_TEXTURES))], rng)
        mean = rng.uniform(*levels[y[i]])
        tint = rng.uniform(0.75, 1.25, size=3)
        x[i] = (mean + 30 * (pattern - 0.5))[..., None] * tint
    x += rng.normal(0, 8, size=x.shape)
    return _to_uint8(x), y.astype(np.int64)
