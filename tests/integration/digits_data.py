"""Real MNIST digits the stack's first model did not train on, and ways to send them."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

from digits.training import datasets
from tests.stacks import FIRST_MODEL


def held_out(count: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Sample digits the stack's first model never saw: its retrain (FIRST_MODEL) keeps 4,000 of the 5,000, and
    refits the winner on all it keeps, validation digits included."""
    pixels, labels = datasets.left_out(datasets.load_sample(), seed=FIRST_MODEL["seed"], limit=FIRST_MODEL["limit"])
    return pixels[:count].astype(np.float32), labels[:count]


def as_png(pixels: npt.NDArray[np.float32], scale: int = 4) -> bytes:
    """An MNIST digit as a person's picture: dark ink on white, larger than 28x28."""
    picture = Image.fromarray((255 - pixels.reshape(28, 28)).astype(np.uint8))
    picture = picture.resize((28 * scale, 28 * scale), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()
