"""Runs in .venv-triton with the unmodified tritonclient package; prints what it got as one JSON object.

usage: triton_client.py HOST:PORT PIXELS.npy IMAGES_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient


def main(url: str, pixels_file: str, images_dir: str) -> None:
    client = grpcclient.InferenceServerClient(url=url)
    pixels = np.load(pixels_file).astype(np.float32)
    images = [p.read_bytes() for p in sorted(Path(images_dir).glob("*.png"))]
    metadata = client.get_model_metadata("digits", as_json=True)

    by_pixels = grpcclient.InferInput("pixels", list(pixels.shape), "FP32")
    by_pixels.set_data_from_numpy(pixels)
    pixel_result = client.infer("digits", [by_pixels], outputs=[grpcclient.InferRequestedOutput("digit"),
                                                                grpcclient.InferRequestedOutput("probabilities")])

    by_image = grpcclient.InferInput("image", [len(images)], "BYTES")
    by_image.set_data_from_numpy(np.array(images, dtype=np.object_))
    image_result = client.infer("digits", [by_image])

    print(json.dumps({
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("digits"),
        "metadata": metadata,
        "pixels": {"digit": pixel_result.as_numpy("digit").tolist(),
                   "probabilities": pixel_result.as_numpy("probabilities").tolist(),
                   "version": pixel_result.get_response().model_version},
        "image": {"digit": image_result.as_numpy("digit").tolist(),
                  "probabilities": image_result.as_numpy("probabilities").tolist()},
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
