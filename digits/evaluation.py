"""Figures that say how well a model reads digits it did not train on."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from digits.model import N_CLASSES, DigitModel


def evaluate(model: DigitModel, pixels: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> dict[str, Any]:
    started = time.perf_counter()
    predicted, _ = model.predict(pixels)
    seconds = time.perf_counter() - started
    classes = list(range(N_CLASSES))
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1_weighted": float(f1_score(labels, predicted, average="weighted")),
        "f1_per_class": [float(f) for f in f1_score(labels, predicted, average=None, labels=classes)],
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),
        "validation_size": len(labels),
        "predict_ms_per_image": 1000.0 * seconds / max(len(labels), 1),
        **model.describe(),
    }


def beats(candidate: dict[str, Any], active: dict[str, Any]) -> tuple[bool, str]:
    """The promotion gate: strictly better accuracy, weighted F1 not worse, on the same split."""
    ca, aa = candidate["accuracy"], active["accuracy"]
    cf, af = candidate["f1_weighted"], active["f1_weighted"]
    if ca > aa and cf >= af:
        return True, f"accuracy {ca:.4f} > {aa:.4f} and weighted F1 {cf:.4f} >= {af:.4f} on the same split"
    return False, f"accuracy {ca:.4f} vs {aa:.4f}, weighted F1 {cf:.4f} vs {af:.4f}: not strictly better"
