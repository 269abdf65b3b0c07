"""Real MNIST digits the stack's first model did not train on, and ways to send them."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

from digits import datasets
from digits.jobs import RetrainSpec


def held_out(count: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Validation digits of the first retrain job (default spec on the sample): never trained on."""
    spec = RetrainSpec()
    split = datasets.split(datasets.load_sample(), seed=spec.seed, validation_fraction=spec.validation_fraction)
    return split.x_val[:count], split.y_val[:count]


def as_png(pixels: npt.NDArray[np.float32], scale: int = 4) -> bytes:
    """An MNIST digit as a person's picture: dark ink on white, larger than 28x28."""
    picture = Image.fromarray((255 - pixels.reshape(28, 28)).astype(np.uint8))
    picture = picture.resize((28 * scale, 28 * scale), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()
