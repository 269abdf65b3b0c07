"""Settings are the single source of configuration: the README's table is generated from them, weak secrets are
refused outside local mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from digits.settings import DEV_ADMIN_TOKEN, Settings, markdown_table, table_in

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_configuration_table_is_the_settings() -> None:
    block = table_in((REPO / "README.md").read_text())
    assert block == markdown_table(), "README.md's table differs from digits/settings.py: run " \
                                      "`python -m digits.settings --update README.md`"


def test_every_setting_is_described() -> None:
    assert all(field.description for field in Settings.model_fields.values())


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
