"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), for clients that already speak it.

Outputs always travel in ``raw_output_contents``, which is what clients such as tritonclient decode.
"""

from __future__ import annotations

from digits.errors import InvalidInput
from digits.oip import grpc_predict_v2_pb2 as pb
from digits.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from digits.platform.rpc import Context
from services.gateway.open_inference.protocol import (
    INPUTS,
    MODEL,
    OUTPUTS,
    PLATFORM,
    PREDICTION_IDS,
    InputTensor,
    OpenInferenceModel,
    Parameter,
    length_prefixed,
    numbers_from_list,
    numbers_from_raw,
)

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
Tensor = pb.ModelInferRequest.InferInputTensor


class OpenInference(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, model: OpenInferenceModel, version: str) -> None:
        self._model = model
        self._version = version

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=await self._model.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        self._model.check_name(request.name)
        return pb.ModelReadyResponse(ready=await self._model.ready(request.version))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=MODEL, version=self._version, extensions=[])

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        self._model.check_name(request.name)
        meta = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=MODEL, versions=await self._model.versions(request.version), platform=PLATFORM,
            inputs=[meta(name=name, datatype=datatype, shape=shape) for name, datatype, shape in INPUTS],
            outputs=[meta(name=name, datatype=datatype, shape=shape) for name, datatype, shape in OUTPUTS],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        self._model.check_name(request.model_name)
        if len(request.raw_input_contents) not in (0, len(request.inputs)):
            raise InvalidInput("raw_input_contents must hold one entry per input")
        raws: list[bytes | None] = [*request.raw_input_contents] or [None] * len(request.inputs)
        with self._model.admitted(request.ByteSize()):
            inputs = [_input(tensor, raw) for tensor, raw in zip(request.inputs, raws, strict=True)]
            answer = await self._model.infer(inputs, [o.name for o in request.outputs], request.model_version,
                                             context.time_remaining())
        output = pb.ModelInferResponse.InferOutputTensor
        return pb.ModelInferResponse(
            model_name=MODEL, model_version=answer.version, id=answer.response_id(request.id),
            parameters={PREDICTION_IDS: pb.InferParameter(string_param=answer.joined_ids),
                        **{name: _parameter(value) for name, value in answer.parameters.items()}},
            outputs=[output(name=o.name, datatype=o.datatype, shape=o.shape) for o in answer.outputs],
            raw_output_contents=[o.raw() for o in answer.outputs],
        )


def _input(tensor: Tensor, raw: bytes | None) -> InputTensor:
    shape = tuple(tensor.shape)
    if tensor.datatype == "BYTES":
        elements = length_prefixed(raw) if raw is not None else list(tensor.contents.bytes_contents)
        return InputTensor(tensor.name, tensor.datatype, shape, elements=elements)
    if raw is not None:
        return InputTensor(tensor.name, tensor.datatype, shape, numbers=numbers_from_raw(tensor.datatype, raw))
    typed = {"FP32": tensor.contents.fp32_contents, "UINT8": tensor.contents.uint_contents}.get(tensor.datatype)
    numbers = numbers_from_list(tensor.datatype, typed) if typed is not None else None
    return InputTensor(tensor.name, tensor.datatype, shape, numbers=numbers)


def _parameter(value: Parameter) -> pb.InferParameter:
    if isinstance(value, str):
        return pb.InferParameter(string_param=value)
    if isinstance(value, int):
        return pb.InferParameter(int64_param=value)
    return pb.InferParameter(double_param=value)
