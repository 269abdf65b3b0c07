"""The secrets a Digits stack needs: the registry's signing key pair, one Redis password per ACL user, tokens.

Local mode makes them once per run directory (``.run/secrets.env``, readable by its owner only) and keeps them
across ``make down`` / ``make up``, like the Redis data they protect. For Docker Compose and Kubernetes,
``python -m digits.stack secrets`` prints a fresh set as an env file:

    python -m digits.stack secrets > .env                                          # docker compose reads .env
    kubectl -n digits create secret generic digits-secrets --from-env-file=.env    # Kubernetes

Each service receives only its own: the trainer the signing key, each service its own Redis password, the
gateway the tokens (docker-compose.yml says which goes where).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from digits.platform.redis_users import USERS, new_password
from digits.platform.signing import SigningKey

PUBLIC_KEYS = "DIGITS_REGISTRY_PUBLIC_KEYS"
SIGNING_KEY = "DIGITS_REGISTRY_SIGNING_KEY"
ADMIN_TOKEN = "DIGITS_ADMIN_TOKEN"
TRAINING_TOKEN = "DIGITS_TRAINING_TOKEN"


def redis_password_variable(user: str) -> str:
    return f"DIGITS_REDIS_{user.upper()}_PASSWORD"


# Never handed to every service: each goes to the one service that needs it (docker-compose.yml).
SECRET_VARIABLES = frozenset({SIGNING_KEY, ADMIN_TOKEN, TRAINING_TOKEN, *map(redis_password_variable, USERS)})


def generate(*, admin_token: bool = True) -> dict[str, str]:
    """A fresh set, as NAME -> value: the key pair, the Redis passwords and (unless told not to) an admin token."""
    key = SigningKey.generate()
    return {
        SIGNING_KEY: key.to_text(),
        PUBLIC_KEYS: key.public_text,
        **({ADMIN_TOKEN: secrets.token_urlsafe(32)} if admin_token else {}),
        **{redis_password_variable(user): new_password() for user in USERS},
    }


def redis_passwords(env: Mapping[str, str]) -> dict[str, str]:
    """Each Redis user's password, from the variables of a set."""
    return {user: env[redis_password_variable(user)] for user in USERS}


def load_or_create(path: Path) -> dict[str, str]:
    """Local mode's set, kept in ``path`` (an env file), made on first use; variables missing from it are added.

    It holds no admin token: local mode uses the development one, so that the CLI works without configuration.
    """
    kept = _read_env_file(path) if path.is_file() else {}
    fresh = generate(admin_token=False)
    if SIGNING_KEY in kept:  # the pair belongs together: a kept private key brings its own public key
        fresh[PUBLIC_KEYS] = SigningKey.from_text(kept[SIGNING_KEY]).public_text
    merged = {**fresh, **kept}
    if merged != kept:
        _write_env_file(path, merged)
    return merged


def env_file(values: Mapping[str, str]) -> str:
    return "".join(f"{name}={value}\n" for name, value in values.items())


def _read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def _write_env_file(path: Path, values: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(env_file(values))
    path.with_suffix(".tmp").replace(path)
