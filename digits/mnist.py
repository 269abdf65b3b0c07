"""MNIST's shapes, the one home of the numbers every part of Digits agrees on.

A digit is a SIDE x SIDE grey image (0..255, light ink on dark, row-major), N_PIXELS values when flattened;
a model answers one of N_CLASSES digits. The field's centre is where MNIST put each digit's centre of mass.
This module imports nothing, so that any module (``digits.client`` included) may import it.
"""

from __future__ import annotations

from typing import Final

SIDE: Final = 28
SHAPE: Final = (SIDE, SIDE)
N_PIXELS: Final = SIDE * SIDE  # 784
N_CLASSES: Final = 10
# Where MNIST centred each digit's mass: pixel index (14, 14) (measured on the training set: 13.99, 14.00).
CENTRE: Final = SIDE / 2
# The 60,000 digits of MNIST's training files (the 10,000 test digits are never read).
TRAINING_DIGITS: Final = 60_000
# Their last 10,000 are the classic validation set (the 50k/10k split docs/model-quality.md and the jobs use).
CLASSIC_VALIDATION_DIGITS: Final = 10_000
