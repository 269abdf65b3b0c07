"""The Open Inference Protocol (KServe v2) as Digits speaks it, whatever the transport (gRPC or REST).

One model, ``digits``; its versions are the registry's, and a request without a version is answered by the
active one. Inputs (exactly one per request): ``image`` (BYTES [N], encoded images) or ``pixels`` (UINT8 or
FP32, [N,784] or [N,28,28]). Outputs: ``digit`` (INT64 [N]), ``probabilities`` (FP32 [N,10]), ``verdict`` (BYTES
[N]: ``DIGIT``, ``UNSURE``, ``NOT_A_DIGIT`` or ``SEVERAL``, and an empty string for an answer nobody judged) and
``runner_up`` (INT64 [N], the next most likely digit); a request that names outputs gets those, in its order. Each
digit of a call becomes one prediction, forwarded like a Predict (coalesced with others); errors carry the same
status codes as digits.v1.

Verdicts in the response's parameters too, whatever outputs were asked for: for a request of one digit,
``verdict`` (a string, absent when not judged), ``marks`` (int64: digit-sized marks of ink side by side) and,
when the version computes them, ``familiarity`` and ``margin`` (double). For a request of several digits, the
same four names hold strings with one entry per digit, comma-separated in the order of the digits as
``prediction_ids`` are, an entry left empty where a digit has no such value ("DIGIT,,SEVERAL"), and the name
absent when no digit has one.

Prediction ids: each digit's answer has one, as every answer of the gateway does. A response carries them, comma-
separated in the order of the digits, in its parameter ``prediction_ids``, and as its ``id`` unless the request
had an ``id`` of its own: that one is echoed, as KServe and Triton do, so that a client's correlation keeps working.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from digits.errors import InvalidInput, NotFound, TooLarge
from digits.mnist import N_CLASSES, N_PIXELS, SHAPE
from digits.platform.registry import Registry
from digits.v1 import recognizer_pb2 as pb
from services.gateway.answers import familiarity, margin, verdict_word
from services.gateway.blocking import off_loop
from services.gateway.forwarding import Forwarder

MODEL = "digits"
PLATFORM = "scikit-learn"
PIXEL_TYPES: dict[str, np.dtype[np.generic]] = {"UINT8": np.dtype("<u1"), "FP32": np.dtype("<f4")}
# (name, datatype, shape) as metadata states them; -1 is the batch dimension.
INPUTS = (("image", "BYTES", (-1,)), ("pixels", "FP32", (-1, N_PIXELS)))
OUTPUTS = (("digit", "INT64", (-1,)), ("probabilities", "FP32", (-1, N_CLASSES)), ("verdict", "BYTES", (-1,)),
           ("runner_up", "INT64", (-1,)))
OUTPUT_NAMES = tuple(name for name, _, _ in OUTPUTS)
PREDICTION_IDS = "prediction_ids"  # the response parameter that names each digit's answer
# A response parameter's value: both transports carry strings, 64-bit integers and doubles.
Parameter = str | int | float


@dataclass(frozen=True)
class InputTensor:
    """One input, as either transport received it: BYTES elements, or numbers (typed or from raw bytes)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    elements: list[bytes] | None = None  # BYTES
    numbers: npt.NDArray[np.generic] | None = None  # flat, in the tensor's datatype or wider


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    array: npt.NDArray[np.generic]  # shaped

    @property
    def shape(self) -> list[int]:
        return list(self.array.shape)

    def raw(self) -> bytes:
        """Little-endian, row-major, no padding: the protocol's binary form (BYTES: each element length-prefixed)."""
        if self.datatype == "BYTES":
            return b"".join(struct.pack("<I", len(e)) + e for e in self.array.ravel().tolist())
        return self.array.astype(self.array.dtype.newbyteorder("<"), copy=False).tobytes()

    def data(self) -> list[object]:
        """Row-major elements as JSON takes them (BYTES: UTF-8 strings)."""
        if self.datatype == "BYTES":
            return [e.decode() for e in self.array.ravel().tolist()]
        return list(self.array.ravel().tolist())


@dataclass(frozen=True)
class Answer:
    version: str
    outputs: list[OutputTensor]
    prediction_ids: list[str]
    # The response's parameters beside prediction_ids: the verdicts (``verdict_parameters``).
    parameters: dict[str, Parameter] = field(default_factory=dict)

    def response_id(self, request_id: str) -> str:
        """The response's ``id``: the request's own when it had one, else the prediction ids."""
        return request_id or self.joined_ids

    @property
    def joined_ids(self) -> str:
        return ",".join(self.prediction_ids)


def length_prefixed(raw: bytes) -> list[bytes]:
    """BYTES elements in binary form: each a 4-byte little-endian length, then that many bytes."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput("binary BYTES input is truncated inside a length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput("binary BYTES input is shorter than its length prefixes say")
        items.append(raw[offset : offset + length])
        offset += length
    return items


def numbers_from_raw(datatype: str, raw: bytes) -> npt.NDArray[np.generic]:
    dtype = PIXEL_TYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(f"input 'pixels' must be UINT8 or FP32, not {datatype}")
    if len(raw) % dtype.itemsize:
        raise InvalidInput(f"binary {datatype} input holds {len(raw)} bytes, not a whole number of elements")
    return np.frombuffer(raw, dtype=dtype)


def numbers_from_list(datatype: str, values: object) -> npt.NDArray[np.generic]:
    """Typed numbers (gRPC contents, REST JSON data) as an array of the tensor's datatype."""
    try:
        numbers = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"{datatype} data must be numbers") from None
    if datatype == "UINT8":
        if not (np.isfinite(numbers).all() and (numbers >= 0).all() and (numbers <= 255).all()
                and (numbers == np.floor(numbers)).all()):
            raise InvalidInput("UINT8 data must be whole numbers from 0 to 255")
        return numbers.astype(np.uint8)
    return numbers.astype(np.float32)


class OpenInferenceModel:
    """The model "digits" as the Open Inference Protocol sees it (metadata, readiness, infer), behind either
    transport; not to be confused with ``digits.modelling.model.ServedModel``, what a replica runs."""

    def __init__(self, forwarder: Forwarder, registry: Registry, is_serving: Callable[[], bool],
                 max_items: int) -> None:
        self._forwarder = forwarder
        self._registry = registry
        self._is_serving = is_serving
        self._max_items = max_items

    @staticmethod
    def check_name(name: str) -> None:
        if name != MODEL:
            raise NotFound(f"no model named {name!r}; this server serves 'digits'")

    async def active(self) -> str | None:
        return await off_loop(self._registry.active_version)

    async def ready(self, version: str = "") -> bool:
        active = await self.active()
        return active is not None and (version or active) == active and self._is_serving()

    async def versions(self, version: str = "") -> list[str]:
        """Every registered version, newest first; NotFound if ``version`` is given and not among them."""
        versions = [r.version for r in await off_loop(self._registry.list, 1000)]
        if version and version not in versions:
            raise NotFound(f"model digits has no version {version!r}")
        return versions

    def admitted(self, size: int) -> contextlib.AbstractContextManager[None]:
        """Hold a call of ``size`` request bytes in the gateway's budget (transports take it before reading)."""
        return self._forwarder.admitted(size)

    async def infer(self, inputs: Sequence[InputTensor], requested: Sequence[str], version: str,
                    timeout: float | None) -> Answer:
        """Read every digit of the request; ``requested`` names the outputs to return (empty: all)."""
        if version:
            active = await self.active()
            if version != active:
                raise NotFound(f"version {version} of digits is not the one being served "
                               f"(active: {active or 'none'}); omit the version to use the active one")
        unknown = [name for name in requested if name not in OUTPUT_NAMES]
        if unknown:
            raise InvalidInput(f"unknown output {', '.join(map(repr, unknown))}: the outputs are "
                               f"{', '.join(map(repr, OUTPUT_NAMES))}")
        replies = await self._forwarder.predict_many(self._items(inputs), timeout)
        return Answer(replies[0].version, _outputs(replies, requested or OUTPUT_NAMES),
                      [r.prediction_id for r in replies], verdict_parameters(replies))

    def _items(self, inputs: Sequence[InputTensor]) -> list[pb.PredictRequest]:
        if len(inputs) != 1:
            raise InvalidInput(f"send exactly one input, 'image' or 'pixels'; got {len(inputs)}")
        tensor = inputs[0]
        if tensor.name == "image":
            items = [pb.PredictRequest(image=data) for data in _images(tensor)]
        elif tensor.name == "pixels":
            items = _pixel_requests(tensor)
        else:
            raise InvalidInput(f"unknown input {tensor.name!r}: the inputs are 'image' (BYTES) and 'pixels'")
        if not items:
            raise InvalidInput("the input holds no digits")
        if len(items) > self._max_items:
            raise TooLarge(f"{len(items)} digits in one call; the limit is {self._max_items}")
        return items


def _batch_size(tensor: InputTensor, per_item: Sequence[int]) -> int:
    shape = list(tensor.shape)
    if len(shape) != 1 + len(per_item) or list(shape[1:]) != list(per_item) or shape[0] < 0:
        wanted = f"[N,{','.join(map(str, per_item))}]" if per_item else "[N]"
        raise InvalidInput(f"input {tensor.name!r} has shape {shape}; expected {wanted}")
    return int(shape[0])


def _images(tensor: InputTensor) -> list[bytes]:
    if tensor.datatype != "BYTES" or tensor.elements is None:
        raise InvalidInput(f"input 'image' must be BYTES, not {tensor.datatype}")
    count = _batch_size(tensor, [])
    if len(tensor.elements) != count:
        raise InvalidInput(f"input 'image' has shape [{count}] but holds {len(tensor.elements)} images")
    return tensor.elements


def _pixel_requests(tensor: InputTensor) -> list[pb.PredictRequest]:
    if tensor.datatype not in PIXEL_TYPES or tensor.numbers is None:
        raise InvalidInput(f"input 'pixels' must be UINT8 or FP32, not {tensor.datatype}")
    if len(tensor.shape) not in (2, 3):
        raise InvalidInput(f"input 'pixels' has shape {list(tensor.shape)}; expected [N,{N_PIXELS}] or "
                           f"[N,{','.join(map(str, SHAPE))}]")
    per_item = [N_PIXELS] if len(tensor.shape) == 2 else list(SHAPE)
    count = _batch_size(tensor, per_item)
    if tensor.numbers.size != count * N_PIXELS:
        raise InvalidInput(f"'pixels' holds {tensor.numbers.size} values; shape {list(tensor.shape)} needs "
                           f"{count * N_PIXELS}")
    rows = tensor.numbers.reshape(count, N_PIXELS)
    if tensor.datatype == "UINT8" and rows.dtype == np.uint8:  # every value valid by its type: 784 bytes a digit
        return [pb.PredictRequest(pixel_bytes=row.tobytes()) for row in rows]
    return [pb.PredictRequest(pixels=pb.Pixels(values=row.astype(np.float32).tolist())) for row in rows]


def _outputs(replies: Sequence[pb.PredictResponse], names: Sequence[str]) -> list[OutputTensor]:
    built = {
        "digit": lambda: OutputTensor("digit", "INT64", np.array([r.digit for r in replies], dtype="<i8")),
        "probabilities": lambda: OutputTensor(
            "probabilities", "FP32", np.array([list(r.probabilities) for r in replies], dtype="<f4")),
        "verdict": lambda: OutputTensor(
            "verdict", "BYTES", np.array([(verdict_word(r) or "").encode() for r in replies], dtype=np.object_)),
        "runner_up": lambda: OutputTensor("runner_up", "INT64", np.array([r.runner_up for r in replies], dtype="<i8")),
    }
    return [built[name]() for name in names]


def verdict_parameters(replies: Sequence[pb.PredictResponse]) -> dict[str, Parameter]:
    """The verdicts as response parameters: typed for one digit, comma-separated strings for several (see above)."""
    if len(replies) == 1:
        (reply,) = replies
        typed: dict[str, Parameter | None] = {"verdict": verdict_word(reply), "marks": reply.marks,
                                              "familiarity": familiarity(reply), "margin": margin(reply)}
        return {name: value for name, value in typed.items() if value is not None}
    columns: dict[str, list[object]] = {
        "verdict": [verdict_word(r) for r in replies], "marks": [r.marks for r in replies],
        "familiarity": [familiarity(r) for r in replies], "margin": [margin(r) for r in replies]}
    return {name: ",".join(_entry(value) for value in values)
            for name, values in columns.items() if any(value is not None for value in values)}


def _entry(value: object) -> str:
    """One digit's value in a comma-separated parameter: a score as the float32 it was (0.25, not 0.2500000037)."""
    if value is None:
        return ""
    return str(np.float32(value)) if isinstance(value, float) else str(value)
