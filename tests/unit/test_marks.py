"""Counting digit-sized marks of ink: one for a digit (even with a stray dot or a broken stroke), two for two
digits side by side, on 28x28 rows and on large pictures alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digits.modelling import imaging, marks
from digits.training import datasets


def page(*strokes: tuple[tuple[int, int], ...], width: int = 20, dots: tuple[tuple[int, int], ...] = ()) -> np.ndarray:
    """A 280x280 white page with black polylines (and dots): what the drawing page sends."""
    image = Image.new("L", (280, 280), 255)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        draw.line(list(stroke), fill=0, width=width, joint="curve")
    for x, y in dots:
        draw.ellipse((x - 6, y - 6, x + 6, y + 6), fill=0)
    return np.asarray(image, dtype=np.float32)


def test_almost_every_real_digit_is_one_mark() -> None:
    pixels = datasets.load_sample().pixels[:2000].astype(np.float32)
    counts = np.array([marks.digit_sized(row.reshape(28, 28)) for row in pixels])
    assert np.mean(counts >= 2) <= 0.002, f"{np.sum(counts >= 2)} of 2000 sample digits counted as several"


def test_two_digits_side_by_side_are_two_marks_and_three_are_three() -> None:
    one = ((60, 40), (60, 240))
    seven = ((130, 40), (200, 40), (150, 240))
    four = ((230, 40), (215, 170), (275, 170))
    assert imaging.read_grey(page(one, seven)).marks == 2
    assert imaging.read_grey(page(one, seven, four, width=14)).marks == 3


@pytest.mark.parametrize(("name", "strokes", "dots"), [
    ("a 1 with a stray dot beside it", (((140, 30), (140, 250)),), ((230, 240),)),
    ("a 5 whose flag the pen lifted from", (((110, 40), (110, 130), (180, 140), (190, 220), (100, 250)),
                                            ((125, 40), (200, 40))), ()),
    ("a 4 drawn in two strokes", (((150, 30), (80, 160), (210, 160)), ((170, 90), (170, 260))), ()),
    ("an = sign's two bars, one above the other", (((60, 110), (220, 110)), ((60, 170), (220, 170))), ()),
])
def test_a_stray_dot_or_a_broken_stroke_is_not_a_second_digit(name: str, strokes: tuple[Any, ...],
                                                              dots: tuple[Any, ...]) -> None:
    assert imaging.read_grey(page(*strokes, dots=dots)).marks < 2, name


def test_no_ink_is_no_mark() -> None:
    assert marks.digit_sized(np.zeros((28, 28), dtype=np.float32)) == 0
