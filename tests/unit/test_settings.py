"""Settings are the single source of configuration: the README's table is generated from them, weak secrets are
refused outside local mode."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from digits.settings import (
    DEV_ADMIN_TOKEN,
    READERS,
    SERVICES,
    ClientSettings,
    Settings,
    markdown_table,
    readers,
    table_in,
)

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_configuration_table_is_the_settings() -> None:
    block = table_in((REPO / "README.md").read_text())
    assert block == markdown_table(), "README.md's table differs from digits/settings.py: run " \
                                      "`python -m digits.settings --update README.md`"


def test_every_setting_is_described_with_its_readers() -> None:
    fields = {**Settings.model_fields, **ClientSettings.model_fields}
    assert all(field.description for field in fields.values())
    for name in fields:
        named = readers(name).split(", ")
        assert named and set(named) <= set(READERS), (name, named)
        assert ("CLI and client" in named) == (name in ClientSettings.model_fields), name
        assert bool(set(named) & {*SERVICES, "make up"}) == (name in Settings.model_fields), name


def test_the_client_and_the_cli_read_their_own_settings() -> None:
    """Only the variables they use: a client machine needs none of the services' settings or secrets."""
    sources = [*sorted((REPO / "digits" / "client").glob("*.py")), REPO / "digits" / "cli.py"]
    reads = [f"{path.relative_to(REPO)}: {name}" for path in sources for name in ("Settings", "get_settings")
             if re.search(rf"(?<![\w.]){name}\b", path.read_text())]
    assert not reads, reads
    assert set(ClientSettings.model_fields) & set(Settings.model_fields) == {"admin_token", "max_image_bytes",
                                                                            "max_batch_items"}


def strong(**overrides: object) -> Settings:
    values: dict[str, object] = {"environment": "production", "admin_token": SecretStr("a" * 40),
                                 "redis_password": SecretStr("b" * 40), "registry_public_keys": "key",
                                 "registry_signing_key": SecretStr("c" * 40)}
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize(("overrides", "problem"), [
    ({"admin_token": SecretStr(DEV_ADMIN_TOKEN)}, "development value"),
    ({"admin_token": SecretStr("")}, "is empty"),
    ({"admin_token": SecretStr("too-short")}, "shorter than"),
    ({"admin_token": SecretStr("change-me-to-a-long-random-admin-token")}, "placeholder"),
    ({"training_token": SecretStr("<your training token goes here, please>")}, "placeholder"),
    ({"redis_password": None}, "DIGITS_REDIS_PASSWORD is empty"),
    ({"registry_public_keys": ""}, "DIGITS_REGISTRY_PUBLIC_KEYS is empty"),
])
def test_weak_secrets_stop_a_production_gateway(overrides: dict[str, object], problem: str) -> None:
    with pytest.raises(SystemExit, match=problem):
        strong(**overrides).check_secrets("gateway")


def test_development_warns_where_production_refuses() -> None:
    weak = strong(environment="development", admin_token=SecretStr(DEV_ADMIN_TOKEN))
    weak.check_secrets("gateway")  # no exception: local mode
    assert weak.secret_problems("gateway") == ["DIGITS_ADMIN_TOKEN is the development value"]


def test_only_the_trainer_needs_the_signing_key() -> None:
    strong(registry_signing_key=None).check_secrets("inference")
    with pytest.raises(SystemExit, match="SIGNING_KEY"):
        strong(registry_signing_key=None).check_secrets("trainer")


def test_an_empty_variable_is_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_TRAINING_TOKEN", "")
    assert Settings().training_token is None
    assert "" not in Settings().tokens()



# -- one source of configuration ---------------------------------------------------------------------

SCANNED = ("digits", "services", "bench", "tests")
# The one module that reads the process environment: Settings, and process_environment() for child processes.
ENVIRONMENT_READER = REPO / "digits" / "settings.py"
_ENVIRONMENT_NAMES = {"environ", "environb", "getenv", "getenvb"}


def environment_reads(path: Path, root: Path = REPO) -> list[str]:
    """Each read of the process environment in ``path`` (``os.environ``, ``os.getenv``, ``from os import
    environ``, ...), as "file:line: what", in source order. Strings and comments that name them are no reads."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Attribute) and node.attr in _ENVIRONMENT_NAMES
                and isinstance(node.value, ast.Name) and node.value.id in {"os", "posix"}):
            found.append((node.lineno, node.col_offset, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module in {"os", "posix"}:
            found += [(node.lineno, node.col_offset, f"from {node.module} import {alias.name}")
                      for alias in node.names if alias.name in _ENVIRONMENT_NAMES]
    return [f"{path.relative_to(root)}:{line}: {what}" for line, _, what in sorted(found)]


def test_only_the_settings_read_the_environment() -> None:
    files = [path for folder in SCANNED for path in sorted((REPO / folder).rglob("*.py"))
             if path != ENVIRONMENT_READER]
    assert len(files) > 50, "the scan found too few sources to mean anything"
    reads = [read for path in files for read in environment_reads(path)]
    assert not reads, ("configuration is read through digits.settings (Settings, or process_environment() for a "
                       "child process's environment), not from os.environ directly:\n" + "\n".join(reads))


def test_the_scan_sees_every_spelling_of_an_environment_read(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom os import getenv\na = os.environ['A']\nb = os.getenv('B')\n"
                      "c = dict(os.environ)  # os.environ\nd = 'os.environ in a string is no read'\n")
    assert [read.split(": ", 1)[1] for read in environment_reads(sample, tmp_path)] == [
        "from os import getenv", "os.environ", "os.getenv", "os.environ"]
