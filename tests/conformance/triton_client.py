"""Runs in .venv-triton with the unmodified tritonclient package; prints what it got as one JSON object.

usage: triton_client.py GRPC_HOST:PORT HTTP_HOST:PORT PIXELS.npy IMAGES_DIR

Both of tritonclient's clients, gRPC and HTTP (the REST protocol, binary tensor data as it sends by default, and
plain JSON), read the same digits by pixels and by image, with outputs requested or not, and the verdicts beside
them (the BYTES output ``verdict``, the INT64 ``runner_up``, the response parameter ``verdict``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def read(client: Any, module: Any, pixels: np.ndarray, images: list[bytes], binary: bool = True) -> dict[str, Any]:
    metadata = client.get_model_metadata("digits")
    by_pixels = module.InferInput("pixels", list(pixels.shape), "FP32")
    by_image = module.InferInput("image", [len(images)], "BYTES")
    if module is httpclient:
        by_pixels.set_data_from_numpy(pixels, binary_data=binary)
        by_image.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
        wanted = [module.InferRequestedOutput("digit", binary_data=binary)]
    else:
        by_pixels.set_data_from_numpy(pixels)
        by_image.set_data_from_numpy(np.array(images, dtype=np.object_))
        wanted = [module.InferRequestedOutput("digit")]
    everything = client.infer("digits", [by_pixels])
    only_digit = client.infer("digits", [by_pixels], outputs=wanted)
    image_result = client.infer("digits", [by_image])
    response = only_digit.get_response()
    outputs = response["outputs"] if isinstance(response, dict) else response.outputs
    full = everything.get_response()
    verdicts = full["parameters"]["verdict"] if isinstance(full, dict) else full.parameters["verdict"].string_param
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("digits"),
        "metadata": metadata if isinstance(metadata, dict) else json.loads(
            __import__("google.protobuf.json_format", fromlist=["MessageToJson"]).MessageToJson(metadata)),
        "pixels": {"digit": everything.as_numpy("digit").tolist(),
                   "probabilities": everything.as_numpy("probabilities").tolist(),
                   # BYTES: bytes from binary data, str from JSON
                   "verdict": [v.decode() if isinstance(v, bytes) else v
                               for v in everything.as_numpy("verdict").tolist()],
                   "runner_up": everything.as_numpy("runner_up").tolist(),
                   "verdict_parameter": verdicts},
        "requested_outputs": [o["name"] if isinstance(o, dict) else o.name for o in outputs],
        "image": {"digit": image_result.as_numpy("digit").tolist()},
    }


def main(grpc_url: str, http_url: str, pixels_file: str, images_dir: str) -> None:
    pixels = np.load(pixels_file).astype(np.float32)
    images = [p.read_bytes() for p in sorted(Path(images_dir).glob("*.png"))]
    print(json.dumps({
        "grpc": read(grpcclient.InferenceServerClient(url=grpc_url), grpcclient, pixels, images),
        "http": read(httpclient.InferenceServerClient(url=http_url), httpclient, pixels, images),
        "http_json": read(httpclient.InferenceServerClient(url=http_url), httpclient, pixels, images, binary=False),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
