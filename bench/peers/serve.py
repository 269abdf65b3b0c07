"""The peers' model code, run in .venv-peers (never in Digits' venv): each serves the model Digits serves.

    python -m bench.peers.serve triton MODEL.joblib GRPC_PORT HTTP_PORT METRICS_PORT
    python -m bench.peers.serve kserve MODEL.joblib GRPC_PORT HTTP_PORT

- MLServer's runtime for Digits' model is ``bench.peers.runtime.DigitsRuntime`` (a module of its own: MLServer
  and tritonclient each register the Open Inference protos under the same names, so no process imports both).
  MLServer's own scikit-learn runtime needs no code here: it loads the bare pipeline with joblib.
- ``triton``: NVIDIA Triton through pytriton, the same ``model.predict`` bound as a Python model.
- ``kserve``: KServe's ``ModelServer`` with the same ``model.predict``, the fallback for a peer that cannot run.

Every one takes ``pixels`` (UINT8 [N,784]) and answers ``digit`` (INT64) and ``probabilities`` (FP32 [N,10]),
as Digits' Open Inference endpoint does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

MODEL = "digits"


def load_model(path: str) -> Any:
    """The pickled ``DigitModel``, its fast path built, as an inference replica loads it."""
    import joblib

    model = joblib.load(path)
    model.prepare()
    model.predict(np.zeros((1, 784), dtype=np.float32))
    return model


def predict(model: Any, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, probabilities = model.predict(np.asarray(pixels, dtype=np.float32).reshape(-1, 784))
    return np.asarray(labels, dtype=np.int64), np.asarray(probabilities, dtype=np.float32)


def triton(model_path: str, grpc_port: int, http_port: int, metrics_port: int) -> None:
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    model = load_model(model_path)

    @batch  # type: ignore[untyped-decorator]
    def infer(pixels: np.ndarray) -> dict[str, np.ndarray]:
        labels, probabilities = predict(model, pixels)
        return {"digit": labels.reshape(-1, 1), "probabilities": probabilities}

    config = TritonConfig(grpc_address="127.0.0.1", grpc_port=grpc_port, http_address="127.0.0.1",
                          http_port=http_port, metrics_address="127.0.0.1", metrics_port=metrics_port)
    with Triton(config=config) as server:
        server.bind(model_name=MODEL, infer_func=infer,
                    inputs=[Tensor(name="pixels", dtype=np.uint8, shape=(784,))],
                    outputs=[Tensor(name="digit", dtype=np.int64, shape=(1,)),
                             Tensor(name="probabilities", dtype=np.float32, shape=(10,))],
                    config=ModelConfig(max_batch_size=64,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=2000)))
        server.serve()


def kserve(model_path: str, grpc_port: int, http_port: int) -> None:
    import kserve as ks
    from kserve import InferOutput, InferRequest, InferResponse

    class Digits(ks.Model):  # type: ignore[misc]
        def load(self) -> bool:
            self.model = load_model(model_path)
            self.ready = True
            return True

        async def predict(self, payload: InferRequest, headers: Any = None, response_headers: Any = None) -> Any:
            labels, probabilities = predict(self.model, payload.inputs[0].as_numpy())
            outputs = [InferOutput("digit", list(labels.shape), "INT64"),
                       InferOutput("probabilities", list(probabilities.shape), "FP32")]
            outputs[0].set_data_from_numpy(labels)
            outputs[1].set_data_from_numpy(probabilities)
            return InferResponse(response_id=payload.id or "", model_name=MODEL, infer_outputs=outputs)

    _loopback_only()
    served = Digits(MODEL)
    served.load()
    ks.ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1).start([served])


def _loopback_only() -> None:
    """KServe 0.16 binds every interface (0.0.0.0 for REST, [::] for gRPC, with no option): keep it on loopback."""
    import grpc.aio._server
    import uvicorn

    config_init = uvicorn.Config.__init__

    def config(self: Any, *args: Any, **kwargs: Any) -> None:
        config_init(self, *args, **(kwargs | {"host": "127.0.0.1"}))

    add_port = grpc.aio._server.Server.add_insecure_port

    def insecure_port(self: Any, address: str) -> int:
        return int(add_port(self, address.replace("[::]:", "127.0.0.1:")))

    uvicorn.Config.__init__ = config
    grpc.aio._server.Server.add_insecure_port = insecure_port  # type: ignore[method-assign]


if __name__ == "__main__":
    kind, path, *ports = sys.argv[1:]
    servers: dict[str, Callable[..., None]] = {"triton": triton, "kserve": kserve}
    serve = servers[kind]
    serve(path, *map(int, ports))
