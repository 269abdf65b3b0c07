"""docker-compose.yml read as a list of services: the single source of what runs, in both modes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from digits.settings import process_environment

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class ComposeError(ValueError):
    pass


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    replicas: int


def project_name(path: Path = COMPOSE_FILE) -> str:
    """The compose project's name (its top-level ``name:``), which labels every container it starts."""
    return str(yaml.safe_load(path.read_text())["name"])


def load(path: Path = COMPOSE_FILE, env: Mapping[str, str] | None = None) -> dict[str, ServiceSpec]:
    """The services `docker compose up` starts: those of an optional profile (monitoring) are left out."""
    document = yaml.safe_load(path.read_text())
    variables = process_environment() if env is None else dict(env)
    return {name: _service(name, body, variables) for name, body in document["services"].items()
            if not body.get("profiles")}


def _service(name: str, body: Mapping[str, Any], variables: Mapping[str, str]) -> ServiceSpec:
    command = body.get("command")
    if not isinstance(command, list):
        raise ComposeError(f"service {name}: command must be a list (exec form)")
    environment = {k: interpolate(str(v), variables) for k, v in (body.get("environment") or {}).items()}
    replicas = int((body.get("deploy") or {}).get("replicas", 1))
    return ServiceSpec(name, tuple(str(c) for c in command), environment, replicas)


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's variable syntax, as docker compose applies it."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        present = name in variables
        value = variables.get(name, "")
        usable = present and (value != "" or not (op or "").startswith(":"))
        if op in {":-", "-"}:
            return value if usable else arg
        if op in {":?", "?"}:
            if not usable:
                raise ComposeError(f"{name}: {arg or 'required'}")
            return value
        return value

    return _VARIABLE.sub(replace, value)
