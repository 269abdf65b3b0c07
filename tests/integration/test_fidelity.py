"""A digit photographed or drawn is read like the MNIST digit it came from.

Held-out MNIST digits are rendered the way a person's picture would be (dark ink on white, ten times larger,
off-centre on a bigger sheet; as JPEG, as a transparent PNG like a canvas export, on grey paper) and sent
through the gateway. Predict on the picture must agree with Predict on the original 28x28 pixels.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

from digits.v1 import recognizer_pb2 as pb
from digits.v1 import recognizer_pb2_grpc
from tests.integration.digits_data import held_out

COUNT = 400
STYLES = ("png", "jpeg", "canvas", "grey-paper")


def render(pixels: npt.NDArray[np.float32], style: str, rng: np.random.Generator) -> bytes:
    ink = Image.fromarray(pixels.reshape(28, 28).astype(np.uint8)).resize((280, 280), Image.Resampling.LANCZOS)
    sheet_size = (int(rng.integers(400, 640)), int(rng.integers(400, 640)))
    at = (int(rng.integers(0, sheet_size[0] - 280)), int(rng.integers(0, sheet_size[1] - 280)))
    coverage = Image.new("L", sheet_size, 0)
    coverage.paste(ink, at)
    out = io.BytesIO()
    if style == "canvas":  # black strokes, transparent where nothing was drawn
        picture = Image.new("RGBA", sheet_size, (0, 0, 0, 0))
        picture.putalpha(coverage)
        picture.save(out, format="PNG")
        return out.getvalue()
    paper, dark = (200, 40) if style == "grey-paper" else (255, 0)
    level = np.asarray(coverage, dtype=np.float32) / 255.0
    gray = (paper - (paper - dark) * level).astype(np.uint8)
    picture = Image.fromarray(gray).convert("RGB")
    picture.save(out, format="JPEG" if style == "jpeg" else "PNG", quality=85)
    return out.getvalue()


def test_pictures_of_digits_read_like_the_digits(recognizer: recognizer_pb2_grpc.RecognizerStub) -> None:
    pixels, _ = held_out(COUNT)
    rng = np.random.default_rng(4)
    originals = recognizer.PredictBatch(
        pb.PredictBatchRequest(requests=[pb.PredictRequest(pixels=pb.Pixels(values=r.tolist())) for r in pixels]),
        timeout=60,
    ).responses
    agreement: dict[str, float] = {}
    for style in STYLES:
        pictures = [pb.PredictRequest(image=render(row, style, rng)) for row in pixels]
        answers: list[pb.PredictResponse] = []
        for start in range(0, COUNT, 100):
            batch = pb.PredictBatchRequest(requests=pictures[start : start + 100])
            answers += recognizer.PredictBatch(batch, timeout=120).responses
        agreement[style] = float(np.mean([a.digit == o.digit for a, o in zip(answers, originals, strict=True)]))
    overall = float(np.mean(list(agreement.values())))
    print(f"fidelity: agreement with Predict on the original pixels, {COUNT} digits per style: "
          + ", ".join(f"{s} {a:.4f}" for s, a in agreement.items()) + f"; overall {overall:.4f}")
    assert overall >= 0.995, agreement  # the model-quality issue (#13): people's pictures read as well as before
