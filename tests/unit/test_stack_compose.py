"""docker-compose.yml is what local mode runs: the two cannot drift apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from digits.stack import compose
from digits.stack.local import Ports, local_env, plan
from digits.stack.secrets import SECRET_VARIABLES

REPO = Path(__file__).resolve().parents[2]
NETWORK = {"REDIS_URL", "INFERENCE_TARGET", "INFERENCE_PORT", "GATEWAY_GRPC_PORT", "GATEWAY_HTTP_PORT",
           "DIGITS_METRICS_PORT"}


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yml")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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


def test_local_mode_leaves_out_services_of_optional_profiles(tmp_path: Path) -> None:
    """`docker compose up` does not start them (monitoring); local mode neither, and needs no command for them."""
    path = tmp_path / "compose.yml"
    path.write_text(yaml.safe_dump({"services": {
        "app": {"command": ["python", "-m", "app"]},
        "prometheus": {"image": "prom/prometheus:v2.53.3", "profiles": ["monitoring"]},
    }}))
    assert set(compose.load(path, env={})) == {"app"}


def test_compose_requires_real_secrets_outside_local_mode() -> None:
    with pytest.raises(compose.ComposeError, match=r"digits\.stack secrets"):
        compose.load(env={})


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


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("pre-${A:-d}-post", {"A": "x"}, "pre-x-post"),
    ],
)
def test_interpolation_follows_compose(text: str, env: dict[str, str], expected: str) -> None:
    assert compose.interpolate(text, env) == expected


def test_ports_follow_the_contract_variables() -> None:
    ports = Ports.from_env({"REDIS_URL": "redis://127.0.0.1:7100/0", "INFERENCE_PORT": "7200",
                            "GATEWAY_GRPC_PORT": "7300", "GATEWAY_HTTP_PORT": "7400"}, replicas=3)
    assert ports == Ports(redis=7100, gateway_grpc=7300, gateway_http=7400, inference=(7200, 7201, 7202))
