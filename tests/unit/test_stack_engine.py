"""digits.stack.engine: the Docker SDK finds an engine and reads the compose project's containers, their health and
logs. No engine runs here, so the SDK talks to a stand-in on 127.0.0.1 that answers the few Engine API calls it
makes, in the API's own shapes: the SDK's real client, requests and Container objects do the rest."""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from docker.models.containers import Container

from digits.stack import compose, engine
from digits.stack.__main__ import compose_logs, compose_status
from digits.stack.local import free_ports

PROJECT = compose.project_name()


def container(name: str, service: str, status: str, health: str | None, project: str = PROJECT,
              exit_code: int = 0) -> dict[str, Any]:
    state: dict[str, Any] = {"Status": status, "ExitCode": exit_code}
    if health:
        state["Health"] = {"Status": health}
    return {"Id": f"id-{name}", "Name": f"/{name}", "State": state, "Config": {"Tty": False, "Labels": {
        engine.PROJECT_LABEL: project, engine.SERVICE_LABEL: service}}}


CONTAINERS = [
    container("digits-redis-1", "redis", "running", "healthy"),
    container("digits-gateway-1", "gateway", "running", "starting"),
    container("digits-redis-users-1", "redis-users", "exited", None),
    container("other-web-1", "web", "running", None, project="other"),
]


class FakeEngine(BaseHTTPRequestHandler):
    """The Engine API calls the SDK makes here: version, ping, list, inspect and logs (multiplexed frames)."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path = url.path.split("/", 2)[-1] if url.path.startswith("/v1.") else url.path.lstrip("/")
        by_id = {c["Id"]: c for c in CONTAINERS}
        if path == "version":
            self._send(json.dumps({"ApiVersion": "1.45", "Version": "27.0.0"}).encode(), "application/json")
        elif path == "_ping":
            self._send(b"OK", "text/plain")
        elif path == "containers/json":
            wanted = json.loads(parse_qs(url.query)["filters"][0])["label"]
            found = [c for c in CONTAINERS
                     if f"{engine.PROJECT_LABEL}={c['Config']['Labels'][engine.PROJECT_LABEL]}" in wanted]
            self._send(json.dumps([{"Id": c["Id"]} for c in found]).encode(), "application/json")
        elif path.endswith("/json") and path.split("/")[1] in by_id:
            self._send(json.dumps(by_id[path.split("/")[1]]).encode(), "application/json")
        elif path.endswith("/logs"):
            tail = int(parse_qs(url.query)["tail"][0])
            lines = [f"{path.split('/')[1]} line {i}\n".encode() for i in range(5)][-tail:]
            frames = b"".join(struct.pack(">BxxxL", 1 + i % 2, len(line)) + line for i, line in enumerate(lines))
            self._send(frames, "application/vnd.docker.multiplexed-stream")
        else:
            self.send_error(404)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEngine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{server.server_port}")
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_no_engine_means_local_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    (closed,) = free_ports(1)
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{closed}")
    assert engine.engine(timeout=2) is None


def test_an_engine_that_answers_is_used_and_only_the_projects_containers_are_read(fake_engine: str) -> None:
    client = engine.engine()
    assert client is not None
    found = engine.project_containers(client, PROJECT)
    assert [(engine.service_of(c), c.name) for c in found] == [
        ("gateway", "digits-gateway-1"), ("redis", "digits-redis-1"), ("redis-users", "digits-redis-users-1")]
    assert all(isinstance(c, Container) for c in found)


def test_status_says_state_and_health_and_fails_until_every_service_is_healthy(
    fake_engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = engine.engine()
    assert client is not None
    found = {c.name: c for c in engine.project_containers(client, PROJECT)}
    assert engine.healthy(found["digits-redis-1"]) and engine.healthy(found["digits-redis-users-1"])
    assert not engine.healthy(found["digits-gateway-1"])  # its health check has not passed yet
    assert compose_status(list(found.values())) == 1
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].split() == ["service", "container", "state", "health"]
    assert ["gateway", "digits-gateway-1", "running", "starting"] in [line.split() for line in shown]
    assert ["redis-users", "digits-redis-users-1", "exited", "no", "check"] in [line.split() for line in shown]
    assert compose_status([found["digits-redis-1"], found["digits-redis-users-1"]]) == 0


def test_a_failed_one_shot_service_is_not_healthy() -> None:
    failed = Container(attrs=container("digits-redis-users-1", "redis-users", "exited", None, exit_code=1))
    assert not engine.healthy(failed)


def test_logs_are_each_containers_last_lines_stdout_and_stderr_together(
    fake_engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = engine.engine()
    assert client is not None
    found = engine.project_containers(client, PROJECT)
    assert compose_logs(found, 2) == 0
    shown = capsys.readouterr().out
    assert "==> redis (digits-redis-1) <==\nid-digits-redis-1 line 3\nid-digits-redis-1 line 4\n" in shown
    assert "line 2" not in shown
