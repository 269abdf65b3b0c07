"""/openapi.json describes every HTTP route the gateway serves, and nothing else, as valid OpenAPI 3.1."""

from __future__ import annotations

import re
from typing import Any

from openapi_spec_validator import validate

from digits.settings import Settings
from services.gateway.http import create_app
from services.gateway.openapi import DOCUMENT

METHODS = {"get", "post", "put", "delete", "patch"}


def served_routes() -> set[tuple[str, str]]:
    """(method, path template) of every route the gateway's HTTP app serves (HEAD comes with GET)."""
    app = create_app(None, None, None, None, Settings(), lambda: True)  # type: ignore[arg-type]
    routes = set()
    for route in app.router.routes():
        method = route.method.lower()
        info: dict[str, Any] = dict(route.resource.get_info()) if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix", "")
        if "prefix" in info:  # the static folder
            path += "/{filename}"
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)  # drop aiohttp's regular expressions
        if method in METHODS:
            routes.add((method, path))
    return routes


def described_routes() -> set[tuple[str, str]]:
    return {(method, path) for path, item in DOCUMENT["paths"].items() for method in item if method in METHODS}


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1")


def test_every_served_route_is_described_and_every_described_route_is_served() -> None:
    served, described = served_routes(), described_routes()
    assert served - described == set(), "served but not in /openapi.json"
    assert described - served == set(), "in /openapi.json but not served"
