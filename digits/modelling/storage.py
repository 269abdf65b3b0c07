"""How a served model is stored: ``dump`` makes the bytes the registry keeps, ``load`` makes a model of them again.

The format is joblib's (a pickle whose numpy arrays follow it raw). ``load`` is called only on bytes whose
signature the registry verified, and still unpickles nothing but the classes and functions Digits' models are
made of (``ALLOWED``): a signed blob cannot name an arbitrary callable either. A recipe that needs a new class adds
it there; ``tests/unit/test_storage.py`` fits every candidate and fails until it does.

Stored blobs name the module paths of the code that pickled them, and registries keep them for as long as they may
be served or rolled back to. ``MOVED`` maps every module a stored class ever lived in to where it lives now, so a
refactor that moves a class adds a line there and orphans nothing; ``tests/fixtures/stored_models`` holds blobs
pickled before the last move, which the suite loads and serves.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import joblib
from joblib.numpy_pickle import NumpyUnpickler

from digits.errors import IntegrityError

# Old module path -> today's. The flat modules of Digits 0.1 moved into sub-packages (#21).
MOVED: Mapping[str, str] = {
    "digits.model": "digits.modelling.model",
    "digits.ensembles": "digits.modelling.ensembles",
    "digits.preprocessing": "digits.modelling.preprocessing",
    "digits.gradients": "digits.modelling.gradients",
    "digits.vsv": "digits.modelling.vsv",
    "digits.fastsvc": "digits.modelling.fastsvc",
}

_DIGITS = {
    "digits.modelling.model": ("DigitModel", "scale_pixels"),
    "digits.modelling.verdicts": ("Thresholds",),
    "digits.modelling.ensembles": ("VoteEnsemble", "BlendEnsemble"),
    "digits.modelling.preprocessing": ("Deskew",),
    "digits.modelling.gradients": ("GradientFeatures",),
    "digits.modelling.vsv": ("VirtualSupportVectorSVC",),
}
_SCIKIT_LEARN = {
    "sklearn.pipeline": ("Pipeline",),
    "sklearn.preprocessing._function_transformer": ("FunctionTransformer",),
    "sklearn.preprocessing._label": ("LabelEncoder",),
    "sklearn.decomposition._pca": ("PCA",),
    "sklearn.svm._classes": ("SVC",),
    "sklearn.linear_model._logistic": ("LogisticRegression",),
    "sklearn.neighbors._classification": ("KNeighborsClassifier",),
    "sklearn.calibration": ("CalibratedClassifierCV", "_CalibratedClassifier", "_SigmoidCalibration"),
    "sklearn.tree._classes": ("DecisionTreeClassifier", "ExtraTreeClassifier"),
    "sklearn.tree._tree": ("Tree",),
    "sklearn.ensemble._forest": ("RandomForestClassifier", "ExtraTreesClassifier"),
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting": ("HistGradientBoostingClassifier",),
    "sklearn.ensemble._hist_gradient_boosting.binning": ("_BinMapper",),
    "sklearn.ensemble._hist_gradient_boosting.predictor": ("TreePredictor",),
    "sklearn._loss.loss": ("HalfMultinomialLoss",),
    "sklearn._loss.link": ("Interval", "MultinomialLogit"),
    "sklearn._loss._loss": ("CyHalfMultinomialLoss", "__pyx_unpickle_CyHalfMultinomialLoss"),
}
_NUMPY_AND_JOBLIB = {
    "numpy": ("dtype", "ndarray"),
    "numpy._core.multiarray": ("scalar",),
    "numpy.random._pickle": ("__bit_generator_ctor", "__generator_ctor"),
    "numpy.random._pcg64": ("PCG64",),
    "numpy.random.bit_generator": ("SeedSequence", "__pyx_unpickle_SeedSequence"),
    "joblib.numpy_pickle": ("NumpyArrayWrapper",),
}
# Everything a stored model may name: (module, name) pairs, exactly.
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    (module, name) for table in (_DIGITS, _SCIKIT_LEARN, _NUMPY_AND_JOBLIB) for module, names in table.items()
    for name in names
)


def dump(model: object) -> bytes:
    """The bytes the registry stores for ``model``."""
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


def load(blob: bytes) -> object:
    """The model stored as ``blob`` (verified by the caller), refusing any class or function not in ``ALLOWED``."""
    return _AllowlistUnpickler("", io.BytesIO(blob), ensure_native_byte_order=True).load()


class _AllowlistUnpickler(NumpyUnpickler):  # type: ignore[misc]
    """joblib's unpickler (it reads the raw arrays) that resolves moved modules and only allowed names."""

    def find_class(self, module: str, name: str) -> Any:
        module = MOVED.get(module, module)
        if (module, name) not in ALLOWED:
            raise IntegrityError(f"the stored model names {module}.{name}, which no Digits model is made of; it was "
                                 "not loaded")
        return super().find_class(module, name)
