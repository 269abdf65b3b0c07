"""digits.stack.compose: docker-compose.yml read as services, with compose's own interpolation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from digits.stack import compose

REPO = Path(__file__).resolve().parents[2]


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yml")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
