"""The Docker engine, through the Docker SDK: whether one answers, and the compose project's containers on it
(their state, health and logs), for `make up`, `make status` and `make logs`.

`docker compose up` and `down` stay the compose CLI: the SDK has no compose. Containers are found by the labels
compose puts on them, so nothing here parses a CLI's output.
"""

from __future__ import annotations

from collections.abc import Sequence

import docker
from docker.errors import DockerException
from docker.models.containers import Container

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def engine(timeout: int = 5) -> docker.DockerClient | None:
    """A client of the engine DOCKER_HOST (or the default socket) names, if that engine answers a ping."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (DockerException, OSError):  # no socket, no engine, or not a Docker engine behind it
        return None
    return client


def project_containers(client: docker.DockerClient, project: str) -> list[Container]:
    """Every container of the compose project, running or not, by service and name."""
    found = client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
    return sorted(found, key=lambda c: (service_of(c), c.name))


def service_of(container: Container) -> str:
    return str(container.labels.get(SERVICE_LABEL, "?"))


def healthy(container: Container) -> bool:
    """Running, and healthy where the service has a health check (a finished one-shot service counts as fine)."""
    if container.status == "exited":
        return container.attrs.get("State", {}).get("ExitCode") == 0 and not _has_health_check(container)
    return container.status == "running" and (container.health == "healthy" or not _has_health_check(container))


def status_lines(containers: Sequence[Container]) -> list[str]:
    """One line per container: service, container, state, health."""
    lines = [f"{'service':16} {'container':32} {'state':10} health"]
    for container in containers:
        health = container.health if _has_health_check(container) else "no check"
        lines.append(f"{service_of(container):16} {container.name:32} {container.status:10} {health}")
    return lines


def recent_logs(container: Container, lines: int) -> str:
    """The container's last ``lines`` lines of output, stdout and stderr together."""
    return bytes(container.logs(tail=lines)).decode(errors="replace")


def _has_health_check(container: Container) -> bool:
    return "Health" in container.attrs.get("State", {})
