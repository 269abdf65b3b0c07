"""Redis ACL users: least privilege per service, hashed passwords, every user required."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from digits.platform import redis_users
from digits.platform.redis_users import RULES, SERVICE_USERS, USERS, acl_file, main, password_file

PASSWORDS = {user: f"{user}-secret-password" for user in USERS}


def test_every_user_gets_its_rules_and_only_a_hash_of_its_password() -> None:
    text = acl_file(PASSWORDS)
    lines = text.splitlines()
    assert lines[0] == "user default off resetkeys resetchannels ~* &* +@all"  # nobody logs in as default
    assert len(lines) == 1 + len(USERS) and text.endswith("\n")
    for user, line in zip(USERS, lines[1:], strict=True):
        digest = hashlib.sha256(PASSWORDS[user].encode()).hexdigest()
        assert line == f"user {user} on #{digest} resetkeys resetchannels {RULES[user]}"
    assert not any(password in text for password in PASSWORDS.values())


def test_services_never_get_server_administration_and_inference_cannot_write() -> None:
    assert set(SERVICE_USERS) <= set(USERS)
    for user in SERVICE_USERS:
        assert "-@admin" in RULES[user] and "-@dangerous" in RULES[user]
    inference = RULES["inference"].split()
    assert "-@all" in inference and "+@read" in inference
    assert not any(rule in inference for rule in ("+@all", "+@write", "+set", "+del"))


@pytest.mark.parametrize("user", USERS)
def test_a_missing_password_is_refused(user: str) -> None:
    with pytest.raises(ValueError, match=f"no Redis password for {user}"):
        acl_file({**PASSWORDS, user: ""})


def test_main_writes_the_file_from_password_files(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for user, password in PASSWORDS.items():
        (secrets / password_file(user)).write_text(password + "\n")  # as secrets are mounted: trailing newline
    out = tmp_path / "acl" / "users.acl"
    assert main(["--passwords-dir", str(secrets), "--out", str(out)]) == 0
    assert out.read_text() == acl_file(PASSWORDS)
    assert out.stat().st_mode & 0o777 == 0o644
    (secrets / password_file("trainer")).unlink()
    assert main(["--passwords-dir", str(secrets), "--out", str(tmp_path / "other.acl")]) == 2
    assert not (tmp_path / "other.acl").exists()


def test_new_passwords_are_long_and_different() -> None:
    first, second = redis_users.new_password(), redis_users.new_password()
    assert first != second and len(first) >= 40
