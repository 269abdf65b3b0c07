"""Exact RBF-SVC decisions computed as float32 matrix products.

sklearn's ``SVC.predict`` goes through libsvm, which evaluates the kernel one support vector at a
time in float64. On the production model (~11,700 support vectors of 784 pixels) that is ~7 ms
per image. The same decision function is two matrix products:

    K   = exp(-gamma * ||x - sv||^2)          one GEMM: X @ SV.T, expanded as |x|^2 + |sv|^2 - 2 x.sv
    dec = K @ Coef + intercept                one GEMM per class: each SV's coefficients vs the other classes

followed by libsvm's one-vs-one vote. The first GEMM (n x features x n_SV, most of the work) runs in
float32 with BLAS: half the bytes libsvm reads, and vectorised. The second one runs in float64: it
cuts the decision-value error ~6x (float32 accumulation over thousands of SVs was the largest error
term), so fewer near-zero decisions can flip. It is done per class, as libsvm stores it: each SV has
k-1 coefficients, one per other class, so the class's kernel columns times its (n_SV_c, k-1)
coefficients give its share of every pair it is in. A dense (n_SV, k(k-1)/2) pair matrix would be
80% zeros and, on models with few features and many SVs (digits.modelling.vsv's projected ones), cost as
much to read as the kernel itself. Labels equal libsvm's except when one of libsvm's own pairwise
decision values lies within that rounding of 0 (a genuine tie).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import SVC, NuSVC
from sklearn.utils.validation import check_is_fitted

__all__ = ["Decisions", "FastPipeline", "FastSVC", "compile_svc_pipeline"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

# Rows per kernel block. Bounds memory (at 11,700 SVs: 12 MB float32 kernel + its 24 MB float64
# copy per block) whatever the batch size, and a block that stays near cache size was as fast or
# faster than larger ones in measurements; 256 rows is still a full-speed GEMM for BLAS.
CHUNK_ROWS: Final = 256


def _pairs(n_classes: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Class indices (i, j), i < j, of every one-vs-one pair in libsvm's order (i outer, j inner)."""
    first, second = np.triu_indices(n_classes, k=1)
    return first.astype(np.intp), second.astype(np.intp)


def _class_bounds(n_support: npt.NDArray[np.intp]) -> tuple[tuple[int, int], ...]:
    """(start, end) of each class's support vectors: libsvm stores them grouped by class, in class order."""
    ends = np.cumsum(n_support)
    return tuple(zip((ends - n_support).tolist(), ends.tolist(), strict=True))


def _pair_to_class(n_classes: int) -> tuple[F64, F64]:
    """One-hot (n_pairs, k) matrices of each pair's first and second class, to vote by GEMM."""
    first, second = _pairs(n_classes)
    eye = np.eye(n_classes, dtype=np.float64)
    return eye[first], eye[second]


def _votes(dec: F64, to_first: F64, to_second: F64) -> F64:
    """libsvm's vote: pair (i, j) gives i a vote if dec > 0, else (exact 0 included) j."""
    wins = (dec > 0).astype(np.float64)
    # Every pair votes for j unless i wins; counts are small integers, exact in floating point.
    votes: F64 = to_second.sum(axis=0) + wins @ (to_first - to_second)
    return votes


def _ovr(dec: F64, to_first: F64, to_second: F64) -> F64:
    """sklearn's ``_ovr_decision_function(dec < 0, -dec, k)``, vectorised, for pairs mapped to classes as given."""
    # sklearn votes for i when dec >= 0 (its "prediction" is dec < 0): >=, unlike libsvm's >.
    votes = (dec >= 0).astype(np.float64) @ to_first + (dec < 0).astype(np.float64) @ to_second
    confidence = dec @ (to_first - to_second)
    scores: F64 = votes + confidence / (3.0 * (np.abs(confidence) + 1.0))
    return scores


@dataclass(frozen=True)
class Decisions:
    """``FastSVC.decide``'s answer for n rows."""

    labels: npt.NDArray[Any]
    scores: F64  # (n, served classes): sklearn's "ovr" decision_function among the served classes
    runner_up: npt.NDArray[Any]  # the served class with the next highest score
    margin: F64  # the pairwise decision between label and runner-up, > 0 in the label's favour
    familiarity: F64 | None  # the pairwise decision between label and the reject class, > 0 in the label's favour


@dataclass(frozen=True)
class _Served:
    """How the served classes' pairs sit among all pairs: a model with a reject class (the last) answers only the
    others, and their pairwise decisions are exactly those of a model fitted without it (libsvm fits each pair on
    its two classes alone)."""

    classes: npt.NDArray[Any]
    reject: int | None
    columns: npt.NDArray[np.intp]  # the served pairs' columns among all pairs, in libsvm order
    first_class: F64
    second_class: F64
    pair: npt.NDArray[np.intp]  # pair[a, b]: the column (among served pairs) of classes a and b
    sign: F64  # sign[a, b]: +1 where that column's decision is in a's favour, -1 in b's
    against_reject: npt.NDArray[np.intp]  # each served class's column (among all pairs) against the reject class

    @classmethod
    def of(cls, classes: npt.NDArray[Any], reject_label: Any) -> _Served:
        k = len(classes)
        first, second = _pairs(k)
        reject = None if reject_label is None else int(np.flatnonzero(classes == reject_label)[0])
        if reject is not None and reject != k - 1:
            raise ValueError(f"the reject class {reject_label!r} must be the last class")
        served = k if reject is None else k - 1
        keep = np.flatnonzero(second != reject) if reject is not None else np.arange(len(first))
        pair = np.zeros((served, served), dtype=np.intp)
        sign = np.zeros((served, served), dtype=np.float64)
        for column, (a, b) in enumerate(zip(first[keep], second[keep], strict=True)):
            pair[a, b] = pair[b, a] = column
            sign[a, b], sign[b, a] = 1.0, -1.0
        against = np.flatnonzero(second == reject) if reject is not None else np.zeros(0, dtype=np.intp)
        first_class, second_class = _pair_to_class(served)
        return cls(classes[:served], reject, keep.astype(np.intp), first_class, second_class, pair, sign,
                   against.astype(np.intp))


def _to_dense_float32(X: Any, n_features: int) -> F32:
    """X as a C-contiguous float32 (n, n_features) array, rejecting what sklearn would reject."""
    if sparse.issparse(X):
        X = X.toarray()
    rows: F32 = np.ascontiguousarray(X, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != n_features:
        raise ValueError(f"expected a 2-D array with {n_features} features, got shape {rows.shape}")
    # NaN/inf would silently become a label here, whereas sklearn raises: keep that contract.
    if not np.isfinite(rows).all():
        raise ValueError("input contains NaN or infinity")
    return rows


def _in_chunks(rows: F32, compute: Callable[[F32], npt.NDArray[Any]], size: int = CHUNK_ROWS) -> npt.NDArray[Any]:
    """Apply ``compute`` to blocks of ``size`` rows so the kernel matrix never grows with n."""
    if len(rows) <= size:
        return compute(rows)
    blocks = [compute(rows[start : start + size]) for start in range(0, len(rows), size)]
    return np.concatenate(blocks)


class FastSVC:
    """Exact RBF-SVC decisions as float32 matrix products.

    Kernel in float32, pairwise sums in float64 (see the module docstring). Built from a fitted
    ``SVC``/``NuSVC`` with ``kernel="rbf"``; holds only numpy arrays, so it pickles and shares
    like any array bundle. Thread count (threadpoolctl / OPENBLAS_NUM_THREADS) changes speed
    only, never results beyond float32 summation order. Immutable after construction, so one
    instance can serve concurrent threads.
    """

    def __init__(
        self,
        support_vectors: npt.ArrayLike,
        n_support: npt.ArrayLike,
        dual_coef: npt.ArrayLike,
        intercept: npt.ArrayLike,
        gamma: float,
        classes: npt.ArrayLike,
        break_ties: bool = False,
        reject_label: Any = None,
    ) -> None:
        """Take libsvm-signed ``dual_coef`` (k-1, n_SV) and ``intercept`` (= -rho, one per pair).

        For multiclass models these are sklearn's public ``dual_coef_`` / ``intercept_``; for
        binary ones sklearn flips both signs, and ``from_svc`` flips them back.

        ``reject_label``: a class that ``decide`` never answers (the last one, "not a digit"): its decisions against
        the others are reported as their familiarity instead.
        """
        sv64 = np.asarray(support_vectors, dtype=np.float64)
        self._sv: F32 = np.ascontiguousarray(sv64, dtype=np.float32)
        self._gamma = float(gamma)
        # gamma * |sv|^2 once, from the float64 SVs: one rounding, and no per-call temporary.
        sv_sq_norms = np.einsum("ij,ij->i", sv64, sv64)
        self._gamma_sv_sq_norms: F32 = (self._gamma * sv_sq_norms).astype(np.float32)
        counts = np.asarray(n_support, dtype=np.intp)
        # (n_SV, k-1): row sv holds its coefficient against each other class, libsvm's layout transposed.
        self._coef: F64 = np.ascontiguousarray(np.asarray(dual_coef, dtype=np.float64).T)
        self._bounds = _class_bounds(counts)
        self._intercept: F64 = np.asarray(intercept, dtype=np.float64).reshape(-1)
        self.classes_: npt.NDArray[Any] = np.asarray(classes)
        self._first, self._second = _pairs(len(self.classes_))
        self._first_class, self._second_class = _pair_to_class(len(self.classes_))
        # Fewer rows per block when there are many SVs, so that a block's kernel stays ~16 MB.
        self._chunk_rows = int(np.clip(2**22 // max(1, len(self._sv)), 16, CHUNK_ROWS))
        self._break_ties = bool(break_ties) and len(self.classes_) > 2
        self._check_shapes(counts)
        self._served = _Served.of(self.classes_, reject_label)

    def _check_shapes(self, counts: npt.NDArray[np.intp]) -> None:
        """Fail at build time, not at the first request, on inconsistent model arrays."""
        k = len(self.classes_)
        if k < 2 or len(counts) != k or int(counts.sum()) != len(self._sv):
            raise ValueError("n_support does not match the classes and support vectors")
        if self._intercept.shape != (k * (k - 1) // 2,):
            raise ValueError(f"expected {k * (k - 1) // 2} intercepts, got {self._intercept.shape}")
        if self._coef.shape != (len(self._sv), k - 1):
            raise ValueError(f"expected dual coefficients of shape ({k - 1}, {len(self._sv)}), "
                             f"got {self._coef.T.shape}")

    @classmethod
    def from_svc(cls, svc: Any, reject_label: Any = None) -> FastSVC:
        """Compile a fitted RBF ``SVC`` (or ``NuSVC``); ValueError if not rbf or not fitted."""
        if not isinstance(svc, (SVC, NuSVC)):
            raise ValueError(f"expected an sklearn SVC, got {type(svc).__name__}")
        if svc.kernel != "rbf":
            raise ValueError(f"only kernel='rbf' can be compiled, this SVC uses {svc.kernel!r}")
        check_is_fitted(svc)  # raises NotFittedError, a ValueError subclass
        support_vectors = svc.support_vectors_
        if sparse.issparse(support_vectors):  # fitted on sparse input
            support_vectors = support_vectors.toarray()
        dual_coef, intercept = svc.dual_coef_, svc.intercept_
        if sparse.issparse(dual_coef):
            dual_coef = dual_coef.toarray()
        # sklearn negates both for two-class models only (BaseLibSVM.fit); undo it to get libsvm's.
        sign = -1.0 if len(svc.classes_) == 2 else 1.0
        return cls(
            support_vectors=support_vectors,
            n_support=svc.n_support_,
            dual_coef=sign * np.asarray(dual_coef),
            intercept=sign * np.asarray(intercept),
            gamma=svc._gamma,  # the resolved value; svc.gamma may be "scale" or "auto"
            classes=svc.classes_,
            # Mirrors BaseSVC.predict: break_ties only applies with the "ovr" shape.
            break_ties=svc.break_ties and svc.decision_function_shape == "ovr",
            reject_label=reject_label if reject_label in svc.classes_ else None,
        )

    @property
    def n_support_vectors(self) -> int:
        return int(self._sv.shape[0])

    @property
    def n_features(self) -> int:
        return int(self._sv.shape[1])

    def _kernel(self, rows: F32) -> F32:
        """RBF kernel block K[r, s] = exp(-gamma * ||x_r - sv_s||^2), float32, built in place."""
        # exp(-g(|x|^2 + |sv|^2 - 2 x.sv)) = exp(2g x.sv - g|sv|^2 - g|x|^2): scaling the GEMM
        # output once avoids a separate pass to form the distances.
        block: F32 = rows @ self._sv.T
        block *= np.float32(2.0 * self._gamma)
        block -= self._gamma_sv_sq_norms
        row_sq_norms = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
        block -= (self._gamma * row_sq_norms).astype(np.float32)[:, None]
        # Cancellation can make a near-zero distance slightly negative: clip it (exponent <= 0).
        np.minimum(block, np.float32(0.0), out=block)
        np.exp(block, out=block)
        return block

    def _libsvm_decision(self, rows: F32) -> F64:
        """Pairwise decision values with libsvm's sign: > 0 votes for the pair's first class.

        libsvm's pair (i, j) sums coefficient j-1 over class i's SVs and coefficient i over class j's.
        """
        kernel = self._kernel(rows).astype(np.float64)
        k = len(self.classes_)
        share = np.empty((len(rows), k, k - 1), dtype=np.float64)  # share[:, c, m]: class c's SVs, coefficient m
        for c, (start, end) in enumerate(self._bounds):
            share[:, c, :] = kernel[:, start:end] @ self._coef[start:end]
        first, second = self._first, self._second
        dec: F64 = share[:, first, second - 1] + share[:, second, first]
        dec += self._intercept
        return dec

    def _decision_checked(self, X: npt.ArrayLike) -> F64:
        rows = _to_dense_float32(X, self.n_features)
        return _in_chunks(rows, self._libsvm_decision, self._chunk_rows)

    def decision_ovo(self, X: npt.ArrayLike) -> F64:
        """(n, k(k-1)/2) float64, as ``svc.decision_function`` with ``decision_function_shape="ovo"``.

        For a two-class model the single column is sklearn's sign (> 0 means ``classes_[1]``),
        kept 2-D for a uniform shape where sklearn returns (n,).
        """
        dec = self._decision_checked(X)
        if len(self.classes_) == 2:
            dec = -dec  # sklearn reports binary decisions in favour of the second class
        return dec

    def _votes(self, dec: F64) -> F64:
        """libsvm's vote: pair (i, j) gives i a vote if dec > 0, else (exact 0 included) j."""
        return _votes(dec, self._first_class, self._second_class)

    def _ovr_scores(self, dec: F64) -> F64:
        """sklearn's ``_ovr_decision_function(dec < 0, -dec, k)``, vectorised."""
        return _ovr(dec, self._first_class, self._second_class)

    def vote_scores(self, X: npt.ArrayLike) -> F64:
        """(n, k) scores equal to ``svc.decision_function`` with the "ovr" shape.

        Votes plus a confidence term in (-1/3, 1/3). Its argmax equals ``predict`` except when two
        classes tie on votes: libsvm then takes the lower index, this takes the larger confidence
        (exactly as sklearn's own decision_function / ``break_ties=True`` do).
        """
        return self._ovr_scores(self._decision_checked(X))

    def _labels_from_decisions(self, dec: F64) -> npt.NDArray[Any]:
        # On votes, np.argmax's first maximum is libsvm's lowest-index tie-break; with break_ties
        # sklearn argmaxes the ovr scores instead, whose confidence term decides vote ties.
        scores = self._ovr_scores(dec) if self._break_ties else self._votes(dec)
        labels: npt.NDArray[Any] = self.classes_[np.argmax(scores, axis=1)]
        return labels

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[Any]:
        """Labels identical to ``svc.predict`` (libsvm one-vs-one voting), up to float32 ties."""
        return self._labels_from_decisions(self._decision_checked(X))

    def predict_with_scores(self, X: npt.ArrayLike) -> tuple[npt.NDArray[Any], F64]:
        """``(predict(X), vote_scores(X))`` from one kernel evaluation instead of two."""
        dec = self._decision_checked(X)
        return self._labels_from_decisions(dec), self._ovr_scores(dec)

    def decide(self, X: npt.ArrayLike) -> Decisions:
        """Labels among the served classes (all but ``reject_label``), their vote scores, the runner-up, the margin
        between the two, and each label's decision against ``reject_label`` (None without one)."""
        dec = self._decision_checked(X)
        served = self._served
        among = dec[:, served.columns] if served.reject is not None else dec
        scores = _ovr(among, served.first_class, served.second_class)
        # As ``predict``: the ovr scores decide with break_ties, libsvm's votes (lowest index on a tie) without.
        ranking = scores if self._break_ties else _votes(among, served.first_class, served.second_class)
        index = np.argmax(ranking, axis=1)
        rows = np.arange(len(index))
        others = scores.copy()
        others[rows, index] = -np.inf
        runner = np.argmax(others, axis=1)
        margin = among[rows, served.pair[index, runner]] * served.sign[index, runner]
        familiarity = None if served.reject is None else dec[rows, served.against_reject[index]]
        return Decisions(served.classes[index], scores, served.classes[runner], margin, familiarity)


def _direct(step: Any) -> Callable[[Any], Any]:
    """The step's transform as plain array arithmetic where that is exactly what it computes.

    scikit-learn's own ``transform`` validates its input on every call (dtype, finiteness, feature names), which
    on one row costs far more than the arithmetic: a PCA projection of one digit takes ~8 us as a product and
    ~250 us through ``PCA.transform``. The rows reaching a served pipeline are already validated 2-D float arrays.
    """
    if isinstance(step, FunctionTransformer) and step.func is not None and not step.kw_args:
        func: Callable[[Any], Any] = step.func
        return func
    if isinstance(step, PCA) and not step.whiten:
        mean = np.asarray(step.mean_)
        components = np.ascontiguousarray(step.components_.T)
        return lambda X: (np.asarray(X) - mean) @ components
    transform: Callable[[Any], Any] = step.transform
    return transform


@dataclass(frozen=True)
class FastPipeline:
    """A fitted ``Pipeline`` whose final RBF SVC is replaced by a ``FastSVC``, and whose steps before it run as
    plain array arithmetic where they can (``_direct``)."""

    transform_steps: Sequence[tuple[str, Any]]
    model: FastSVC
    _steps: tuple[Callable[[Any], Any], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_steps", tuple(_direct(step) for _name, step in self.transform_steps))

    @property
    def classes_(self) -> npt.NDArray[Any]:
        return self.model.classes_

    def transform(self, X: Any) -> Any:
        """Apply the pipeline's preceding steps, in order."""
        for step in self._steps:
            X = step(X)
        return X

    def predict(self, X: Any) -> npt.NDArray[Any]:
        return self.model.predict(self.transform(X))

    def vote_scores(self, X: Any) -> F64:
        return self.model.vote_scores(self.transform(X))

    def predict_with_scores(self, X: Any) -> tuple[npt.NDArray[Any], F64]:
        return self.model.predict_with_scores(self.transform(X))

    def decision_ovo(self, X: Any) -> F64:
        return self.model.decision_ovo(self.transform(X))

    def decide(self, X: Any) -> Decisions:
        return self.model.decide(self.transform(X))


def compile_svc_pipeline(pipeline: Any, reject_label: Any = None) -> FastPipeline | None:
    """A ``FastPipeline`` if ``pipeline``'s final step is a fitted RBF SVC (or exposes one as ``svc_``), else None.

    None means "not compilable": the caller should use the estimator itself. A pipeline that
    ends in an RBF SVC but is not fitted raises ValueError (NotFittedError), as it could not
    serve either way.
    """
    if not isinstance(pipeline, Pipeline) or not pipeline.steps:
        return None
    final = pipeline.steps[-1][1]
    # "passthrough"/None are Pipeline's spellings of "no step here"; they have no transform.
    steps = [(name, step) for name, step in pipeline.steps[:-1] if step not in (None, "passthrough")]
    # A wrapper whose decisions are its fitted inner SVC's (digits.modelling.vsv.VirtualSupportVectorSVC) compiles to
    # it, after the wrapper's own projection if it has one.
    inner = getattr(final, "svc_", None) if not isinstance(final, (SVC, NuSVC)) else None
    if isinstance(inner, (SVC, NuSVC)):
        projection = getattr(final, "projection_", None)
        if projection is not None:
            steps.append(("projection", projection))
        final = inner
    if not isinstance(final, (SVC, NuSVC)) or final.kernel != "rbf":
        return None
    return FastPipeline(transform_steps=tuple(steps), model=FastSVC.from_svc(final, reject_label))
