"""The deployment descriptions are valid offline and agree with each other and with the code."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

from digits.stack import compose
from digits.stack.local import local_env

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"


def documents() -> list[dict[str, object]]:
    """Every Kubernetes resource (the kustomization is kustomize's, not one)."""
    paths = [p for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"]
    return [d for path in paths for d in yaml.safe_load_all(path.read_text()) if d]


def test_kubernetes_manifests_validate_strictly() -> None:
    validator = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(validator), "--strict", "--quiet", *map(str, sorted(K8S.glob("*.yaml")))],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout.lower()


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_kubernetes_runs_the_compose_commands_and_probes_the_health_contract() -> None:
    services = compose.load(env=local_env({}))
    deployments = {d["metadata"]["name"]: d for d in documents() if d["kind"] == "Deployment"}  # type: ignore[index]
    assert set(deployments) == {"gateway", "inference", "trainer"}
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
        assert tuple(container["command"]) == services[name].command
        assert "resources" in container and container["resources"]["limits"]
    inference = deployments["inference"]["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert inference["readinessProbe"]["grpc"]["service"] == "digits.v1.Recognizer"
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents()}  # type: ignore[index]
    assert {("HorizontalPodAutoscaler", "inference"), ("PodDisruptionBudget", "inference"),
            ("StatefulSet", "redis"), ("NetworkPolicy", "redis")} <= kinds
    headless = next(d for d in documents() if d["kind"] == "Service" and d["metadata"]["name"] == "inference")  # type: ignore[index]
    assert headless["spec"]["clusterIP"] == "None"  # type: ignore[index]


def test_secrets_are_generated_never_shipped_and_each_pod_gets_only_its_own() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["secretGenerator"][0]["envs"] == ["secrets.env"]
    assert not any(d["kind"] == "Secret" for d in documents())
    expected = {
        "inference": {"DIGITS_REGISTRY_PUBLIC_KEYS", "DIGITS_REDIS_INFERENCE_PASSWORD"},
        "gateway": {"DIGITS_REGISTRY_PUBLIC_KEYS", "DIGITS_REDIS_GATEWAY_PASSWORD", "DIGITS_ADMIN_TOKEN",
                    "DIGITS_TRAINING_TOKEN"},
        "trainer": {"DIGITS_REGISTRY_PUBLIC_KEYS", "DIGITS_REDIS_TRAINER_PASSWORD", "DIGITS_REGISTRY_SIGNING_KEY"},
    }
    for deployment in (d for d in documents() if d["kind"] == "Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
        assert not any("secretRef" in source for source in container.get("envFrom", []))
        keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e}
        assert keys == expected[deployment["metadata"]["name"]]  # type: ignore[index]


def test_only_digits_pods_reach_redis_and_redis_enforces_its_users() -> None:
    policy = next(d for d in documents() if d["kind"] == "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "redis"}  # type: ignore[index]
    sources = policy["spec"]["ingress"][0]["from"]  # type: ignore[index]
    assert sources == [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "digits"}}}]
    redis = next(d for d in documents() if d["kind"] == "StatefulSet")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]  # type: ignore[index]
    assert "--aclfile" in args and args[args.index("--maxmemory-policy") + 1] == "noeviction"


DOCKERFILE = REPO / "deploy" / "Dockerfile"
RUNTIME_VENV = "/opt/venv"


@dataclass
class Stage:
    name: str
    base: str
    steps: list[tuple[str, str]]  # (instruction, arguments)


def dockerfile_stages(text: str) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            image, _, name = re.sub(r"\s+as\s+", " AS ", arguments.strip(), flags=re.IGNORECASE).partition(" AS ")
            stages[name or f"stage-{len(stages)}"] = Stage(name, image, [])
        else:
            list(stages.values())[-1].steps.append((instruction.upper(), arguments.strip()))
    return stages


def lineage(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and every stage it is built FROM."""
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def copies_from(stage: Stage) -> list[tuple[str, list[str]]]:
    """(source stage, paths) of each COPY --from=."""
    found = []
    for instruction, arguments in stage.steps:
        words = arguments.split()
        if instruction == "COPY" and words[0].startswith("--from="):
            found.append((words[0].removeprefix("--from="), words[1:-1]))
    return found


def test_images_hold_the_run_time_groups_only() -> None:
    """Each service's image copies one venv that holds the locked run-time dependencies and the digits wheel,
    built by installs that name no development or code-generation group; the trainer's adds the train extra."""
    stages = dockerfile_stages(DOCKERFILE.read_text())
    groups = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]
    tools = {re.split(r"[=<>\[]", r)[0].lower() for group in groups.values() for r in group if isinstance(r, str)}
    for name, service in compose.load(env=local_env({})).items():
        if name == "redis":
            continue
        target = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"][name]["build"]["target"]
        final = lineage(stages, target)
        assert final[-1].base.startswith("python:3.11-slim"), target
        # Nothing is installed in the final stages themselves: they copy the venv and nothing else from a build.
        assert not any(i == "RUN" and re.search(r"\b(pip|uv)\b", a) for stage in final for i, a in stage.steps)
        copies = [c for stage in final for c in copies_from(stage)]
        assert len(copies) == 1 and copies[0][1] == [RUNTIME_VENV], target
        runs = [a for stage in lineage(stages, copies[0][0]) for i, a in stage.steps if i == "RUN"]
        syncs = [a for a in runs if "uv sync" in a]
        assert syncs and all(f"UV_PROJECT_ENVIRONMENT={RUNTIME_VENV} " in a for a in syncs), target
        for sync in syncs:
            assert "--locked" in sync and "--no-default-groups" in sync, sync
            assert not re.search(r"--(all-groups|group|only-group|only-dev|all-extras)\b|--extra dev", sync), sync
        assert ("--extra train" in " ".join(syncs)) == (target == "trainer"), target
        wheel = rf"--python {RUNTIME_VENV}/bin/python --no-deps /wheels/digits-\S+\.whl"
        for install in (a for a in runs if re.search(r"\bpip install\b", a) and "bootstrap-uv" not in a):
            assert re.search(wheel + "$", install), install  # the digits wheel alone: the lock gave the rest
        assert service.command[0] == "python"
    # The code generators go to a venv of their own, which no final stage copies; the dev tools go nowhere.
    assert all(tool not in arguments.lower() for tool in tools - {"build", "setuptools"}
               for stage in stages.values() for i, arguments in stage.steps if i == "RUN")
    codegen = [a for stage in stages.values() for i, a in stage.steps if "--only-group codegen" in a]
    assert codegen and all("UV_PROJECT_ENVIRONMENT=/opt/codegen " in a for a in codegen)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides (`!` re-includes)."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        regex = "".join(".*" if token == "**" else "[^/]*" if token == "*" else "[^/]" if token == "?"
                        else re.escape(token) for token in re.split(r"(\*\*|\*|\?)", body))
        regex = regex.replace(".*/", "(.*/)?")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def test_the_build_context_leaves_out_local_state_and_keeps_what_the_dockerfile_copies() -> None:
    text = (REPO / ".dockerignore").read_text()
    patterns = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    for path in (".git", ".venv", ".venv-triton", ".venv-uv", ".run", ".run/redis/dump.rdb", "test-artifacts",
                 "bench/results", ".mypy_cache", ".pytest_cache", ".ruff_cache", "digits/__pycache__",
                 "services/gateway/__pycache__/http.cpython-311.pyc", "digits/v1", "build", "digits.egg-info"):
        assert dockerignored(path, patterns), path
    sources = [word for stage in dockerfile_stages(DOCKERFILE.read_text()).values() for i, a in stage.steps
               if i == "COPY" and not a.startswith("--from=") for word in a.split()[:-1]]
    assert "protos" in sources and "uv.lock" in sources
    for source in sources:
        assert (REPO / source).exists() and not dockerignored(source, patterns), source
