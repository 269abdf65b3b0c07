"""The OpenAPI 3.1 description of every HTTP route the gateway serves, at ``/openapi.json``.

tests/unit/test_gateway_openapi.py validates it against the OpenAPI 3.1 schema and fails when a route is served but not
described here, or described but not served.
"""

from __future__ import annotations

from typing import Any

from digits.mnist import N_PIXELS

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {400: "the request cannot be answered as sent", 404: "no such model, version or page",
             409: "the prediction was corrected otherwise already", 413: "the request is larger than the limits",
             429: "too many corrections from this address (see Retry-After)",
             503: "overloaded (see Retry-After) or no model yet", 504: "no answer within the deadline"}
    return {str(s): {"description": words[s], "content": _json(ERROR)} for s in statuses}


def _ok(description: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if content:
        answer["content"] = content
    return {"200": answer}


def _health(key: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {key: {"type": "boolean"}}, "required": [key]}
    return {**_ok(f"{key}: true", _json(schema)), "400": {"description": f"{key}: false", "content": _json(schema)}}


PREDICTION_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$",
                 "description": "the gateway's name for an answer, which a correction points at"}
VERDICTS = ["DIGIT", "UNSURE", "NOT_A_DIGIT", "SEVERAL"]
# What an answer means, beside the digit: the keys every JSON prediction carries (digits.v1.PredictResponse).
VERDICT_FIELDS: dict[str, Any] = {
    "verdict": {"enum": [*VERDICTS, None],
                "description": "DIGIT: it reads a digit; UNSURE: digit or runner_up, too close to call; NOT_A_DIGIT: "
                               "unlike the digits the model learned (a letter, a scribble, noise); SEVERAL: more "
                               "than one digit-sized mark side by side (see marks); null: not judged (an answer "
                               "from a replica older than verdicts)"},
    "runner_up": {"type": "integer", "minimum": 0, "maximum": 9,
                  "description": "the next most likely digit: with UNSURE, the one digit could also be"},
    "familiarity": {"type": ["number", "null"],
                    "description": "how much the input looks like the digits the model learned; below the "
                                   "version's threshold the verdict is NOT_A_DIGIT; null when the version computes "
                                   "no such score"},
    "margin": {"type": ["number", "null"],
               "description": "the model's decision between digit and runner_up, near 0 when they are close; below "
                              "the version's threshold the verdict is UNSURE; null when the version computes no "
                              "such score"},
    "marks": {"type": "integer", "minimum": 0,
              "description": "how many digit-sized marks of ink stand side by side: 2 or more make SEVERAL"},
}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "const": "digits"}}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^v[0-9]+$"}}

PREDICT_BODY = {
    "required": True,
    "content": {
        "image/*": {"schema": {"type": "string", "contentMediaType": "image/*",
                               "description": "a PNG, JPEG, BMP, GIF or WebP picture of one digit"}},
        "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "image": {"type": "string", "contentMediaType": "application/octet-stream"}}, "required": ["image"]}},
        "application/json": {"schema": {"type": "object", "required": ["pixels"], "properties": {
            "pixels": {"type": "array", "minItems": N_PIXELS, "maxItems": N_PIXELS,
                       "items": {"type": "number", "minimum": 0, "maximum": 255},
                       "description": "28x28 grey levels, light ink on dark, row-major, as in MNIST"}}}},
    },
}


def _model_routes(prefix: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        prefix: {"get": {"summary": "Model metadata: versions, inputs and outputs", "parameters": parameters,
                         "responses": {**_ok("the model", _json({"$ref": "#/components/schemas/ModelMetadata"})),
                                       **_errors(404)}}},
        f"{prefix}/ready": {"get": {"summary": "Whether the model (version) is ready", "parameters": parameters,
                                    "responses": {**_health("ready"), **_errors(404)}}},
        f"{prefix}/infer": {"post": {
            "summary": "Read digits (Open Inference Protocol); binary tensor data extension supported",
            "parameters": [*parameters, {"name": "Inference-Header-Content-Length", "in": "header",
                                         "required": False, "schema": {"type": "integer", "minimum": 0},
                                         "description": "length of the JSON header when binary data follows"}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
                "application/octet-stream": {"schema": {"type": "string",
                                                        "contentMediaType": "application/octet-stream"}}}},
            "responses": {**_ok("the outputs", {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferenceResponse"}},
                "application/octet-stream": {"schema": {"type": "string",
                                                        "contentMediaType": "application/octet-stream"}}}),
                          **_errors(400, 404, 413, 503, 504)}}},
    }


TENSOR = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
    "name": {"type": "string"}, "datatype": {"type": "string", "enum": ["BYTES", "UINT8", "FP32", "INT64"]},
    "shape": {"type": "array", "items": {"type": "integer"}},
    "parameters": {"type": "object"}, "data": {"type": "array"}}}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Digits gateway (HTTP)", "version": "1",
             "description": "Read handwritten digits: a drawing page, a JSON/image predict endpoint, the Open "
                            "Inference Protocol (KServe v2 REST), training reports, health and metrics. The same "
                            "service speaks gRPC (digits.v1 and inference.GRPCInferenceService) on its gRPC port."},
    "paths": {
        "/": {"get": {"summary": "The drawing page", "responses": _ok("HTML", {"text/html": {"schema": {
            "type": "string"}}})}},
        "/static/{filename}": {"get": {"summary": "The page's script and style sheet", "parameters": [
            {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {**_ok("the file"), **_errors(404)}}},
        "/api/predict": {"post": {
            "summary": "Read one digit: an image body, a multipart upload (field image) or JSON pixels",
            "parameters": [{"name": "model_input", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["1", "true", "yes"]},
                            "description": "also return the 784 grey levels the model saw"}],
            "requestBody": PREDICT_BODY,
            "responses": {**_ok("the digit", _json({"$ref": "#/components/schemas/Prediction"})),
                          **_errors(400, 413, 503, 504)}}},
        "/api/feedback": {"post": {
            "summary": "Correct a prediction: the true digit, or not a digit (the Feedback service's Correct)",
            "description": "Anyone holding a prediction id may correct it, once; the same correction again answers "
                           "the first (200). Corrections wait for an admin's review (`digits corrections`). "
                           "404: the prediction expired or never existed; 429: too many from this address; 503 "
                           "with Retry-After: the store of corrections is full.",
            "requestBody": {"required": True, "content": _json({"$ref": "#/components/schemas/CorrectionRequest"})},
            "responses": {"200": {"description": "the same correction, received before",
                                  "content": _json({"$ref": "#/components/schemas/Correction"})},
                          "201": {"description": "the correction, stored",
                                  "content": _json({"$ref": "#/components/schemas/Correction"})},
                          **_errors(400, 404, 409, 413, 429, 503)}}},
        "/healthz": {"get": {"summary": "Whether the gateway can forward Predict to a model",
                             "responses": {**_ok("serving", _json({"type": "object"})),
                                           "503": {"description": "not serving", "content": _json(
                                               {"type": "object"})}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": _ok("text exposition format", {
            "text/plain": {"schema": {"type": "string"}}})}},
        "/openapi.json": {"get": {"summary": "This document", "responses": _ok("OpenAPI 3.1", _json(
            {"type": "object"}))}},
        "/models": {"get": {"summary": "The registered versions and what each replica serves (HTML)",
                            "responses": _ok("HTML", {"text/html": {"schema": {"type": "string"}}})}},
        "/models/{version}": {"get": {"summary": "One version's training report (HTML)", "parameters": [VERSION],
                                      "responses": {**_ok("HTML", {"text/html": {"schema": {"type": "string"}}}),
                                                    **_errors(404)}}},
        "/models/{version}/confusion.png": {"get": {"summary": "The version's confusion matrix",
                                                    "parameters": [VERSION], "responses": {
                                                        **_ok("PNG", {"image/png": {"schema": {"type": "string"}}}),
                                                        **_errors(404)}}},
        "/models/{version}/f1.png": {"get": {"summary": "The version's F1 by digit", "parameters": [VERSION],
                                             "responses": {**_ok("PNG", {"image/png": {"schema": {
                                                 "type": "string"}}}), **_errors(404)}}},
        "/models/{version}/error-reject.png": {"get": {
            "summary": "The version's error among the digits kept against the share rejected (a version without a "
                       "calibrated verdict: a picture saying so)", "parameters": [VERSION],
            "responses": {**_ok("PNG", {"image/png": {"schema": {"type": "string"}}}), **_errors(404)}}},
        "/models/{version}/familiarity.png": {"get": {
            "summary": "The familiarity scores of digits and non-digits, with the version's threshold (a version "
                       "without a calibrated verdict: a picture saying so)", "parameters": [VERSION],
            "responses": {**_ok("PNG", {"image/png": {"schema": {"type": "string"}}}), **_errors(404)}}},
        "/v2": {"get": {"summary": "Server metadata (Open Inference Protocol)", "responses": _ok("the server", _json(
            {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                              "extensions": {"type": "array", "items": {"type": "string"}}}}))}},
        "/v2/health/live": {"get": {"summary": "Liveness", "responses": _health("live")}},
        "/v2/health/ready": {"get": {"summary": "Readiness: a model is active and served",
                                     "responses": _health("ready")}},
        **_model_routes("/v2/models/{name}", [NAME]),
        **_model_routes("/v2/models/{name}/versions/{version}", [NAME, VERSION]),
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Prediction": {"type": "object",
                       "required": ["digit", "confidence", "probabilities", "version", "prediction_id",
                                    *VERDICT_FIELDS],
                       "properties": {"digit": {"type": "integer", "minimum": 0, "maximum": 9,
                                                "description": "the most likely digit, whatever the verdict"},
                                      "confidence": {"type": "number", "description": "the probability of digit"},
                                      "probabilities": {"type": "array", "items": {"type": "number"},
                                                        "minItems": 10, "maxItems": 10},
                                      "version": {"type": "string"},
                                      "prediction_id": PREDICTION_ID,
                                      **VERDICT_FIELDS,
                                      "model_input": {"type": "array", "items": {"type": "integer"}}}},
        "CorrectionRequest": {"type": "object", "required": ["prediction_id"], "additionalProperties": False,
                              "properties": {"prediction_id": PREDICTION_ID,
                                             "digit": {"type": "integer", "minimum": 0, "maximum": 9,
                                                       "description": "the digit it really is"},
                                             "not_a_digit": {"const": True, "description": "it is no digit at all"}},
                              "oneOf": [{"required": ["digit"]}, {"required": ["not_a_digit"]}]},
        "Correction": {"type": "object", "properties": {
            "prediction_id": PREDICTION_ID, "status": {"type": "string", "enum": ["pending", "accepted", "rejected"]},
            "digit": {"type": ["integer", "null"]}, "not_a_digit": {"type": "boolean"},
            "predicted_digit": {"type": "integer"}, "model_version": {"type": "string"},
            "created_at": {"type": "string"}, "created": {"type": "boolean"}}},
        "ModelMetadata": {"type": "object", "properties": {
            "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"}, "inputs": {"type": "array", "items": TENSOR},
            "outputs": {"type": "array", "items": TENSOR}}},
        "InferenceRequest": {"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"}, "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": TENSOR},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "parameters": {"type": "object"}}}}}},
        "InferenceResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"},
            "id": {"type": "string", "description": "the request's id when it had one, else the prediction ids"},
            "parameters": {"type": "object", "properties": {
                "prediction_ids": {"type": "string",
                                   "description": "each digit's prediction id, comma-separated, in order"},
                "verdict": {"type": "string", "description": "one digit: DIGIT, UNSURE, NOT_A_DIGIT or SEVERAL "
                                                             "(absent: not judged); several: each digit's, "
                                                             "comma-separated, in order (empty: not judged)"},
                "marks": {"type": ["integer", "string"],
                          "description": "digit-sized marks of ink side by side; several digits: comma-separated"},
                "familiarity": {"type": ["number", "string"],
                                "description": "as in Prediction; several digits: comma-separated, an entry "
                                               "empty where unset; absent when no digit has one"},
                "margin": {"type": ["number", "string"],
                           "description": "as in Prediction; several digits: comma-separated, an entry empty "
                                          "where unset; absent when no digit has one"}}},
            "outputs": {"type": "array", "items": TENSOR}}},
    }},
}
