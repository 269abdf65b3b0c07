"""MLServer's runtime for Digits' model (``implementation: bench.peers.runtime.DigitsRuntime``), run in .venv-peers.

It loads the ``DigitModel`` and answers with its fast path, ``model.predict``: MLServer's serving layers around
Digits' own arithmetic, which separates the server's cost from the model's.
"""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

from bench.peers.serve import load_model, predict


class DigitsRuntime(MLModel):  # type: ignore[misc]
    """Decode ``pixels``, ``model.predict``, encode ``digit`` and ``probabilities``."""

    async def load(self) -> bool:
        self._model = load_model(await get_model_uri(self._settings))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        pixels = next(NumpyCodec.decode_input(i) for i in payload.inputs if i.name == "pixels")
        labels, probabilities = predict(self._model, pixels)
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[
            NumpyCodec.encode_output("digit", labels), NumpyCodec.encode_output("probabilities", probabilities)])
