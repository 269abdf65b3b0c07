"""The Open Inference Protocol over HTTP/REST (KServe v2), on the gateway's HTTP port, for tritonclient.http,
KServe and any HTTP client.

JSON tensors (``data`` as a flat or nested list; BYTES elements as UTF-8 strings, or base64 with the input
parameter ``"content_type": "base64"``), and the binary tensor data extension: inputs whose parameters give
``binary_data_size`` are read from the bytes after the JSON header (whose length the
``Inference-Header-Content-Length`` HTTP header gives), and outputs requested with ``"binary_data": true`` (or every
output, with the request parameter ``"binary_data_output": true``) are returned the same way. Health answers 200
for true and 400 for false, as the protocol says; errors are ``{"error": "..."}`` with the status that fits.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from digits.errors import InvalidInput
from services.gateway.open_inference.protocol import (
    INPUTS,
    MODEL,
    OUTPUTS,
    PLATFORM,
    PREDICTION_IDS,
    Answer,
    InputTensor,
    OpenInferenceModel,
    length_prefixed,
    numbers_from_list,
    numbers_from_raw,
)

HEADER_LENGTH = "Inference-Header-Content-Length"


def add_routes(app: web.Application, model: OpenInferenceModel, server_version: str, max_body: int) -> None:
    """The protocol's routes; each model route also under /versions/{version}."""
    routes = Routes(model, server_version, max_body)
    app.router.add_get("/v2", routes.server_metadata)
    app.router.add_get("/v2/health/live", routes.live)
    app.router.add_get("/v2/health/ready", routes.ready)
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_get(prefix, routes.model_metadata)
        app.router.add_get(f"{prefix}/ready", routes.model_ready)
        app.router.add_post(f"{prefix}/infer", routes.infer)


def _health(ok: bool, key: str) -> web.Response:
    return web.json_response({key: ok}, status=200 if ok else 400)


class Routes:
    def __init__(self, model: OpenInferenceModel, server_version: str, max_body: int) -> None:
        self._model = model
        self._version = server_version
        self._max_body = max_body  # what a body without a length is admitted as

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response({"name": MODEL, "version": self._version, "extensions": ["binary_tensor_data"]})

    async def live(self, request: web.Request) -> web.Response:
        return _health(True, "live")

    async def ready(self, request: web.Request) -> web.Response:
        return _health(await self._model.ready(), "ready")

    async def model_metadata(self, request: web.Request) -> web.Response:
        self._model.check_name(request.match_info["name"])
        return web.json_response({
            "name": MODEL, "versions": await self._model.versions(request.match_info.get("version", "")),
            "platform": PLATFORM,
            "inputs": [{"name": n, "datatype": d, "shape": list(s)} for n, d, s in INPUTS],
            "outputs": [{"name": n, "datatype": d, "shape": list(s)} for n, d, s in OUTPUTS],
        })

    async def model_ready(self, request: web.Request) -> web.Response:
        self._model.check_name(request.match_info["name"])
        return _health(await self._model.ready(request.match_info.get("version", "")), "ready")

    async def infer(self, request: web.Request) -> web.Response:
        self._model.check_name(request.match_info["name"])
        with self._model.admitted(request.content_length or self._max_body):
            body = await request.read()
            document, binary = _split(body, request.headers.get(HEADER_LENGTH))
            inputs = _inputs(document, binary)
            outputs = _requested(document)
            answer = await self._model.infer(inputs, list(outputs), request.match_info.get("version", ""), None)
        return _response(document, answer, outputs, _binary_by_default(document))


def _split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON inference header and the binary tensor data after it."""
    try:
        length = int(header_length) if header_length is not None else len(body)
    except ValueError:
        raise InvalidInput(f"{HEADER_LENGTH} must be a whole number of bytes, got {header_length!r}") from None
    if not 0 <= length <= len(body):
        raise InvalidInput(f"{HEADER_LENGTH} is {length}, but the body holds {len(body)} bytes")
    try:
        document = json.loads(body[:length])
    except (ValueError, RecursionError) as error:
        raise InvalidInput(f"the inference request is not valid JSON: {str(error)[:200]}") from None
    if not isinstance(document, dict):
        raise InvalidInput('the inference request must be a JSON object: {"inputs": [...]}')
    return document, body[length:]


def _parameters(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    parameters = entry.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise InvalidInput("parameters must be a JSON object")
    return parameters


def _inputs(document: Mapping[str, Any], binary: bytes) -> list[InputTensor]:
    entries = document.get("inputs")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidInput('"inputs" must be a list of tensors: [{"name", "shape", "datatype", "data"}]')
    tensors, offset = [], 0
    for entry in entries:
        name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise InvalidInput("every input needs a string 'name' and 'datatype'")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise InvalidInput(f"input {name!r} needs a 'shape': a list of whole numbers")
        parameters = _parameters(entry)
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary) - offset:
                raise InvalidInput(f"input {name!r} says binary_data_size {size!r}; {len(binary) - offset} binary "
                                   "bytes are left")
            raw, offset = binary[offset : offset + size], offset + size
            tensors.append(_from_raw(name, datatype, tuple(shape), raw))
        else:
            tensors.append(_from_json(name, datatype, tuple(shape), entry.get("data"), parameters))
    return tensors


def _from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> InputTensor:
    if datatype == "BYTES":
        return InputTensor(name, datatype, shape, elements=length_prefixed(raw))
    return InputTensor(name, datatype, shape, numbers=numbers_from_raw(datatype, raw))


def _from_json(name: str, datatype: str, shape: tuple[int, ...], data: object,
               parameters: Mapping[str, Any]) -> InputTensor:
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r} needs 'data' (a list) or binary data (parameter binary_data_size)")
    if datatype == "BYTES":
        flat = _flattened(data)
        if not all(isinstance(element, str) for element in flat):
            raise InvalidInput(f"BYTES input {name!r} holds strings: UTF-8, or base64 with "
                               '"parameters": {"content_type": "base64"}')
        as_base64 = parameters.get("content_type") == "base64"
        return InputTensor(name, datatype, shape, elements=[_bytes_of(str(e), as_base64) for e in flat])
    flat = _flattened(data)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        raise InvalidInput(f"{datatype} input {name!r} must hold numbers")
    return InputTensor(name, datatype, shape, numbers=numbers_from_list(datatype, flat))


def _flattened(data: list[Any]) -> list[Any]:
    """Row-major elements of a flat or nested list (the protocol allows both)."""
    flat: list[Any] = []
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def _bytes_of(element: str, as_base64: bool) -> bytes:
    if not as_base64:
        return element.encode()
    try:
        return base64.b64decode(element, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("a BYTES element marked base64 is not base64") from None


def _requested(document: Mapping[str, Any]) -> dict[str, bool | None]:
    """Requested output names, in order, each with whether it should come back as binary data (None: unsaid)."""
    entries = document.get("outputs") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str)
                                                for e in entries):
        raise InvalidInput('"outputs" must be a list of {"name": ...}')
    return {entry["name"]: _parameters(entry).get("binary_data") for entry in entries}


def _binary_by_default(document: Mapping[str, Any]) -> bool:
    return bool(_parameters(document).get("binary_data_output", False))


def _response(document: Mapping[str, Any], answer: Answer, requested: Mapping[str, bool | None],
              binary_default: bool) -> web.Response:
    blobs: list[bytes] = []
    outputs = []
    for output in answer.outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": output.shape}
        binary = requested.get(output.name)
        if binary_default if binary is None else binary:
            blob = output.raw()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = output.data()
        outputs.append(entry)
    request_id = document.get("id")
    header = {"model_name": MODEL, "model_version": answer.version,
              "id": request_id if request_id not in (None, "") else answer.joined_ids,
              "parameters": {PREDICTION_IDS: answer.joined_ids, **answer.parameters}, "outputs": outputs}
    text = json.dumps(header).encode()
    if not blobs:
        return web.Response(body=text, content_type="application/json")
    return web.Response(body=text + b"".join(blobs), content_type="application/octet-stream",
                        headers={HEADER_LENGTH: str(len(text))})
