"""The Open Inference Protocol (KServe v2) on the gateway, for clients that already speak it.

One model, ``digits``; its versions are the registry's, and a request without a version is answered by the
active one. Inputs: ``image`` (BYTES [N], encoded images) or ``pixels`` (UINT8 or FP32, [N,784] or
[N,28,28]), as typed contents or raw bytes. Outputs: ``digit`` (INT64 [N]) and ``probabilities``
(FP32 [N,10]), always in ``raw_output_contents``, which is what clients such as tritonclient decode.
Calls become one ``PredictBatch`` to inference; errors carry the same status codes as digits.v1.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from digits.errors import InvalidInput, NotFound, TooLarge, Unavailable
from digits.oip import grpc_predict_v2_pb2 as pb
from digits.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from digits.registry import Registry
from digits.rpc import Context
from digits.v1 import recognizer_pb2
from services.gateway.blocking import off_loop
from services.gateway.forwarding import Forwarder

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
MODEL = "digits"
N_PIXELS = 784
PIXEL_TYPES: dict[str, np.dtype[np.generic]] = {"UINT8": np.dtype("<u1"), "FP32": np.dtype("<f4")}
Tensor = pb.ModelInferRequest.InferInputTensor


class OpenInference(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, forwarder: Forwarder, registry: Registry, is_serving: Callable[[], bool],
                 max_items: int, version: str) -> None:
        self._forwarder = forwarder
        self._registry = registry
        self._is_serving = is_serving
        self._max_items = max_items
        self._version = version

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=await self._active() is not None and self._is_serving())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        _check_name(request.name)
        active = await self._active()
        wanted = request.version or active
        return pb.ModelReadyResponse(ready=active is not None and wanted == active and self._is_serving())

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="digits", version=self._version, extensions=[])

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        _check_name(request.name)
        records = await off_loop(self._registry.list, 1000)
        versions = [r.version for r in records]
        if request.version and request.version not in versions:
            raise NotFound(f"model digits has no version {request.version!r}")
        meta = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=MODEL, versions=versions, platform="scikit-learn",
            inputs=[meta(name="image", datatype="BYTES", shape=[-1]),
                    meta(name="pixels", datatype="FP32", shape=[-1, N_PIXELS])],
            outputs=[meta(name="digit", datatype="INT64", shape=[-1]),
                     meta(name="probabilities", datatype="FP32", shape=[-1, 10])],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        _check_name(request.model_name)
        if request.model_version:
            active = await self._active()
            if request.model_version != active:
                raise NotFound(f"version {request.model_version} of digits is not the one being served "
                               f"(active: {active or 'none'}); omit the version to use the active one")
        with self._forwarder.admitted(request.ByteSize()):
            items = self._items(request)
            answers = await self._forwarder.predict_many(items, context.time_remaining())
        return _response(request, answers)

    async def _active(self) -> str | None:
        return await off_loop(self._registry.active_version)

    def _items(self, request: pb.ModelInferRequest) -> list[recognizer_pb2.PredictRequest]:
        if len(request.inputs) != 1:
            raise InvalidInput(f"send exactly one input, 'image' or 'pixels'; got {len(request.inputs)}")
        if len(request.raw_input_contents) not in (0, 1):
            raise InvalidInput("raw_input_contents must hold one entry per input")
        tensor = request.inputs[0]
        raw = request.raw_input_contents[0] if request.raw_input_contents else None
        if tensor.name == "image":
            items = [recognizer_pb2.PredictRequest(image=data) for data in _images(tensor, raw)]
        elif tensor.name == "pixels":
            items = [recognizer_pb2.PredictRequest(pixels=recognizer_pb2.Pixels(values=row.tolist()))
                     for row in _pixels(tensor, raw)]
        else:
            raise InvalidInput(f"unknown input {tensor.name!r}: the inputs are 'image' (BYTES) and 'pixels'")
        if not items:
            raise InvalidInput("the input holds no digits")
        if len(items) > self._max_items:
            raise TooLarge(f"{len(items)} digits in one call; the limit is {self._max_items}")
        return items


def _check_name(name: str) -> None:
    if name != MODEL:
        raise NotFound(f"no model named {name!r}; this server serves 'digits'")


def _batch_size(tensor: Tensor, per_item: Sequence[int]) -> int:
    shape = list(tensor.shape)
    if len(shape) != 1 + len(per_item) or list(shape[1:]) != list(per_item) or shape[0] < 0:
        wanted = " or ".join(f"[N,{','.join(map(str, s))}]" if s else "[N]" for s in [per_item])
        raise InvalidInput(f"input {tensor.name!r} has shape {shape}; expected {wanted}")
    return int(shape[0])


def _images(tensor: Tensor, raw: bytes | None) -> list[bytes]:
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input 'image' must be BYTES, not {tensor.datatype}")
    count = _batch_size(tensor, [])
    images = _length_prefixed(raw) if raw is not None else list(tensor.contents.bytes_contents)
    if len(images) != count:
        raise InvalidInput(f"input 'image' has shape [{count}] but holds {len(images)} images")
    return images


def _length_prefixed(raw: bytes) -> list[bytes]:
    """BYTES tensors in raw form: each element is a 4-byte little-endian length, then that many bytes."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput("raw BYTES input is truncated inside a length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput("raw BYTES input is shorter than its length prefixes say")
        items.append(raw[offset : offset + length])
        offset += length
    return items


def _pixels(tensor: Tensor, raw: bytes | None) -> npt.NDArray[np.float32]:
    dtype = PIXEL_TYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(f"input 'pixels' must be UINT8 or FP32, not {tensor.datatype}")
    per_item = [N_PIXELS] if len(tensor.shape) == 2 else [28, 28]
    count = _batch_size(tensor, per_item)
    if raw is not None:
        if len(raw) != count * N_PIXELS * dtype.itemsize:
            raise InvalidInput(f"raw 'pixels' holds {len(raw)} bytes; shape {list(tensor.shape)} of "
                               f"{tensor.datatype} needs {count * N_PIXELS * dtype.itemsize}")
        values = np.frombuffer(raw, dtype=dtype)
    else:
        typed = tensor.contents.fp32_contents if tensor.datatype == "FP32" else tensor.contents.uint_contents
        values = np.asarray(typed, dtype=np.float64)
        if values.size != count * N_PIXELS:
            raise InvalidInput(f"'pixels' holds {values.size} values; shape {list(tensor.shape)} needs "
                               f"{count * N_PIXELS}")
    pixels: npt.NDArray[np.float32] = values.astype(np.float32).reshape(count, N_PIXELS)
    return pixels


def _response(request: pb.ModelInferRequest, replies: list[recognizer_pb2.PredictResponse]) -> pb.ModelInferResponse:
    if not replies:
        raise Unavailable("inference answered no digits")
    digits = np.array([r.digit for r in replies], dtype="<i8")
    probabilities = np.array([list(r.probabilities) for r in replies], dtype="<f4")
    output = pb.ModelInferResponse.InferOutputTensor
    return pb.ModelInferResponse(
        model_name=MODEL, model_version=replies[0].version, id=request.id,
        outputs=[output(name="digit", datatype="INT64", shape=[len(replies)]),
                 output(name="probabilities", datatype="FP32", shape=[len(replies), 10])],
        raw_output_contents=[digits.tobytes(), probabilities.tobytes()],
    )
