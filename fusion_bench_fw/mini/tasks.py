"""The 20 image-classification tasks of the mini pool: generators, class names and prompts.

Why these tasks: the real TA20 pool mixes near-duplicate tasks (MNIST/KMNIST/EMNIST...) with
unrelated ones (Cars, DTD...), which is what makes merging many models hurt. We mirror that: eight
tasks relabel or distort the same sklearn 8x8 digits (the same pixels, conflicting labels), twelve
are procedural families that look nothing alike. Every generator is a pure function of a numpy
Generator, so a seed fixes the data bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import numpy as np

from .digit_tasks import (
    gen_digit_color, gen_digit_magnitude, gen_digit_parity, gen_digit_position, gen_digit_rotation, gen_digits, gen_digits_inverted, gen_digits_noisy,
)
from .drawing import _PALETTE, SIZE, Images, Labels
from .procedural_tasks import (
    _SCENES, _SHAPES, _TEXTURES, gen_brightness, gen_colors, gen_counts, gen_gradients, gen_line_count, gen_orientation, gen_position,
    gen_scenes, gen_shapes, gen_sizes, gen_stripe_width, gen_textures,
)

__all__ = ["EVAL_TASKS", "FINE_EVAL_TASKS", "SIZE", "SPECS", "TASKS", "TASK_ORDER", "TaskSpec", "format_template"]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    classnames: Tuple[str, ...]
    # prompt format strings with one `{c}` slot; turned into callables when registered
    templates: Tuple[str, ...]
    # generate(rng, n, split) -> (images, labels); split picks the digit source pool
    generate: Callable[[np.random.Generator, int, str], Tuple[Images, Labels]]


# ----------------------------------------------------------------------------- the task table

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

TASKS: Dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("digits", _DIGIT_WORDS,
                 ("a photo of the digit {c}.", "a handwritten {c}.", "the number {c}."), gen_digits),
        TaskSpec("digit_parity", ("even", "odd"),
                 ("an {c} digit.", "a photo of an {c} number."), gen_digit_parity),
        TaskSpec("digit_magnitude", ("small", "large"),
                 ("a {c} digit.", "a digit that is {c}."), gen_digit_magnitude),
        TaskSpec("digit_rotation", ("upright", "turned left", "upside down", "turned right"),
                 ("a digit {c}.", "a rotated digit, {c}."), gen_digit_rotation),
        TaskSpec("digits_inverted", _DIGIT_WORDS,
                 ("a dark {c} on white.", "an inverted digit {c}."), gen_digits_inverted),
        TaskSpec("digits_noisy", _DIGIT_WORDS,
                 ("a noisy photo of the digit {c}.", "a grainy {c}."), gen_digits_noisy),
        TaskSpec("digit_color", tuple(_PALETTE),
                 ("a {c} digit.", "a digit written in {c}."), gen_digit_color),
        TaskSpec("digit_position", ("top left", "top right", "bottom left", "bottom right"),
                 ("a small digit in the {c}.", "a digit at the {c}."), gen_digit_position),
        TaskSpec("shapes", _SHAPES,
                 ("a photo of a {c}.", "a {c} shape.", "a drawing of a {c}."), gen_shapes),
        TaskSpec("colors", tuple(_PALETTE),
                 ("a {c} object.", "something {c}."), gen_colors),
        TaskSpec("textures", _TEXTURES,
                 ("a {c} texture.", "a photo of a {c} pattern.", "a surface with {c}."), gen_textures),
        TaskSpec("orientation", ("horizontal", "vertical", "rising", "falling"),
                 ("a {c} line.", "a bar that is {c}."), gen_orientation),
        TaskSpec("counts", ("one", "two", "three", "four", "five"),
                 ("{c} dots.", "a picture of {c} dots.", "there are {c} spots."), gen_counts),
        TaskSpec("position", ("left", "right", "top", "bottom", "centre"),
                 ("a shape on the {c}.", "an object at the {c}."), gen_position),
        TaskSpec("sizes", ("tiny", "medium", "huge"),
                 ("a {c} shape.", "a {c} object."), gen_sizes),
        TaskSpec("scenes", _SCENES,
                 ("a photo of a {c}.", "a view of the {c}.", "a landscape: {c}."), gen_scenes),
        TaskSpec("gradients", ("brighter right", "brighter left", "brighter below", "brighter above"),
                 ("a gradient, {c}.", "a ramp {c}."), gen_gradients),
        TaskSpec("stripe_width", ("wide", "medium", "thin"),
                 ("{c} stripes.", "a pattern of {c} bands."), gen_stripe_width),
        TaskSpec("line_count", ("one", "two", "three"),
                 ("{c} lines.", "a picture with {c} lines."), gen_line_count),
        TaskSpec("brightness", ("dark", "dim", "bright"),
                 ("a {c} image.", "a {c} picture."), gen_brightness),
    ]
}

# The four tasks that play SUN397 / Cars / GTSRB / DTD; they learn well in fine-tuning and are far
# from solved zero-shot. The fixed task order starts with them (Table 3's pools take prefixes).
EVAL_TASKS: Tuple[str, ...] = ("scenes", "shapes", "digits", "textures")
TASK_ORDER: Tuple[str, ...] = EVAL_TASKS + tuple(t for t in TASKS if t not in EVAL_TASKS)


# Class-rich stand-ins for the eval tasks (fine_tasks.py says why), same roles; not in any builder version
# yet, so they stay out of TASKS, whose prompts the tokenizer is learnt from (a v3/v4 build stays the same)
from . import fine_tasks as _fine  # noqa: E402

FINE_TASKS: Dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("scenes_lit", _fine.SCENE_CLASSES,
                 ("a photo of a {c}.", "a view of a {c}.", "a landscape: {c}."), _fine.gen_scenes_lit),
        TaskSpec("shapes_filled", _fine.SHAPE_CLASSES,
                 ("a photo of a {c}.", "a {c} shape.", "a drawing of a {c}."), _fine.gen_shapes_filled),
        TaskSpec("digits_inked", _fine.DIGIT_CLASSES,
                 ("a photo of the digit {c}.", "a handwritten {c}.", "the number {c}."), _fine.gen_digits_inked),
        TaskSpec("textures_scaled", _fine.TEXTURE_CLASSES,
                 ("a {c} texture.", "a photo of a {c} pattern.", "a surface with {c}."), _fine.gen_textures_scaled),
    ]
}
# eval task -> its class-rich stand-in
FINE_EVAL_TASKS: Dict[str, str] = dict(zip(EVAL_TASKS, FINE_TASKS))
# every task a pool may name
SPECS: Dict[str, TaskSpec] = {**TASKS, **FINE_TASKS}


def format_template(template: str) -> Callable[[str], str]:
    """A prompt format string as the callable FusionBench's zero-shot heads expect."""
    return lambda c: template.format(c=c)
