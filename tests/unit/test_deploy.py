"""The deployment descriptions are valid offline and agree with each other and with the code."""

from __future__ import annotations

import subprocess
import sys
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
