"""digits.stack.secrets: a fresh set of secrets, and local mode's set kept in its run directory across restarts."""

from __future__ import annotations

import stat
from pathlib import Path

from digits.platform.redis_users import USERS
from digits.platform.signing import SigningKey
from digits.stack import secrets


def test_a_fresh_set_holds_a_matching_key_pair_and_a_distinct_password_per_redis_user() -> None:
    fresh = secrets.generate()
    assert set(fresh) == secrets.SECRET_VARIABLES - {secrets.TRAINING_TOKEN} | {secrets.PUBLIC_KEYS}
    assert SigningKey.from_text(fresh[secrets.SIGNING_KEY]).public_text == fresh[secrets.PUBLIC_KEYS]
    passwords = secrets.redis_passwords(fresh)
    assert set(passwords) == set(USERS) and len(set(passwords.values())) == len(USERS)
    assert passwords["trainer"] == fresh["DIGITS_REDIS_TRAINER_PASSWORD"]
    assert secrets.generate()[secrets.ADMIN_TOKEN] != fresh[secrets.ADMIN_TOKEN]
    assert secrets.ADMIN_TOKEN not in secrets.generate(admin_token=False)


def test_the_public_keys_are_not_a_secret() -> None:
    """They go to every service (compose's env_file would pass them on): only the private half is kept back."""
    assert secrets.PUBLIC_KEYS not in secrets.SECRET_VARIABLES and secrets.SIGNING_KEY in secrets.SECRET_VARIABLES


def test_local_mode_makes_its_set_once_readable_by_its_owner_only_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "run" / "secrets.env"
    made = secrets.load_or_create(path)
    assert secrets.ADMIN_TOKEN not in made  # local mode uses the development token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secrets.load_or_create(path) == made
    assert not path.with_suffix(".tmp").exists()


def test_variables_missing_from_the_file_are_added_and_a_kept_key_keeps_its_public_half(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    key = SigningKey.generate()
    path.write_text(f"# an older run's file\n{secrets.SIGNING_KEY}={key.to_text()}\n"
                    f"{secrets.PUBLIC_KEYS}={key.public_text}\nDIGITS_REDIS_ADMIN_PASSWORD = spaced \n")
    merged = secrets.load_or_create(path)
    assert merged[secrets.SIGNING_KEY] == key.to_text() and merged[secrets.PUBLIC_KEYS] == key.public_text
    assert merged["DIGITS_REDIS_ADMIN_PASSWORD"] == "spaced"
    assert set(secrets.redis_passwords(merged)) == set(USERS)  # the other users' passwords were added ...
    assert secrets.load_or_create(path) == merged  # ... and written down


def test_an_env_file_holds_one_name_value_line_each() -> None:
    assert secrets.env_file({"A": "1", "B": "x=y"}) == "A=1\nB=x=y\n"


def test_a_kept_signing_key_brings_its_public_key(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "secrets.env"
    path.write_text(f"{secrets.SIGNING_KEY}={key.to_text()}\n")  # cut short: no public keys
    loaded = secrets.load_or_create(path)
    assert loaded[secrets.PUBLIC_KEYS] == key.public_text
    assert loaded[secrets.SIGNING_KEY] == key.to_text()
