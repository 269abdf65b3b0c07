"""Figures that say how well a model reads digits it did not train on, and what it costs."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from digits.mnist import N_CLASSES
from digits.modelling import storage
from digits.modelling.model import ServedModel


def evaluate(model: ServedModel, pixels: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> dict[str, Any]:
    started = time.perf_counter()
    predicted, _ = model.predict(pixels)
    seconds = time.perf_counter() - started
    classes = list(range(N_CLASSES))
    matrix = confusion_matrix(labels, predicted, labels=classes)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1_weighted": float(f1_score(labels, predicted, average="weighted")),
        "f1_per_class": [float(f) for f in f1_score(labels, predicted, average=None, labels=classes)],
        "confusion_matrix": matrix.tolist(),
        "confusions": confusion_sentences(matrix),
        "validation_size": len(labels),
        "predict_ms_per_image": 1000.0 * seconds / max(len(labels), 1),
        "serialized_bytes": len(storage.dump(model)),
        **model.describe(),
    }


def confusion_sentences(matrix: npt.NDArray[np.int64], most: int = 5) -> list[str]:
    """The most frequent confusions, in words: "31% of misread 4s were read as 9 (12 of 39)"."""
    off = np.array(matrix, dtype=np.int64)
    np.fill_diagonal(off, 0)
    misread = off.sum(axis=1)
    order = np.argsort(-off, axis=None, kind="stable")[:most]
    sentences = []
    for true, read in zip(*np.unravel_index(order, off.shape), strict=True):
        count = int(off[true, read])
        if count == 0:
            break
        share = 100.0 * count / misread[true]
        sentences.append(f"{share:.0f}% of misread {true}s were read as {read} ({count} of {misread[true]})")
    return sentences


def score(model: ServedModel, pixels: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> dict[str, float]:
    """Accuracy and weighted F1 only: what the promotion gate compares."""
    predicted, _ = model.predict(pixels)
    return {"accuracy": float(accuracy_score(labels, predicted)),
            "f1_weighted": float(f1_score(labels, predicted, average="weighted"))}


def beats(candidate: dict[str, Any], active: dict[str, Any], min_gain: float = 0.0,
          on: str = "on the same split") -> tuple[bool, str]:
    """The promotion gate: accuracy better by more than ``min_gain``, weighted F1 not worse, on the same digits
    (``on`` says which, in the words of a passing gate)."""
    ca, aa = candidate["accuracy"], active["accuracy"]
    cf, af = candidate["f1_weighted"], active["f1_weighted"]
    margin = f" + {min_gain:.4f}" if min_gain else ""
    if ca > aa + min_gain and cf >= af:
        return True, f"accuracy {ca:.4f} > {aa:.4f}{margin} and weighted F1 {cf:.4f} >= {af:.4f} {on}"
    return False, f"accuracy {ca:.4f} vs {aa:.4f}{margin}, weighted F1 {cf:.4f} vs {af:.4f}: not better {on}"
