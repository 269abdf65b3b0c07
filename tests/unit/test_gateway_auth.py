"""Bearer tokens and scopes: no token or an unknown one is Unauthenticated, a token without the scope is refused."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import SecretStr

from digits.errors import PermissionDenied, Unauthenticated
from digits.settings import Settings
from services.gateway.auth import require_scope

ADMIN = "admin-token-" + "a" * 30
TRAINING = "training-token-" + "t" * 30


class FakeContext:
    """The two things require_scope reads from a gRPC context."""

    def __init__(self, metadata: tuple[tuple[str, Any], ...] | None) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...] | None:
        return self.metadata

    def peer(self) -> str:
        return "ipv4:10.0.0.7:5555"


def _scopes(header: Any, *, training_token: str | None = TRAINING, scope: str = "models") -> frozenset[str]:
    settings = Settings(admin_token=SecretStr(ADMIN),
                        training_token=SecretStr(training_token) if training_token else None)
    metadata = None if header is None else (("x-other", "1"), ("authorization", header))
    return require_scope(FakeContext(metadata), settings, scope)  # type: ignore[arg-type]


def test_the_admin_token_has_every_scope_in_any_spelling_of_the_scheme() -> None:
    assert _scopes(f"Bearer {ADMIN}") == {"models", "training", "corrections"}
    assert _scopes(f"bearer {ADMIN}", scope="training") == {"models", "training", "corrections"}
    assert _scopes(f"BEARER   {ADMIN}  ") == {"models", "training", "corrections"}


def test_the_training_token_may_train_but_not_change_what_serves() -> None:
    assert _scopes(f"Bearer {TRAINING}", scope="training") == {"training"}
    with pytest.raises(PermissionDenied, match="may not make models calls"):
        _scopes(f"Bearer {TRAINING}", scope="models")


@pytest.mark.parametrize(("header", "words"), [
    (None, "needs the admin token"),
    ("", "needs the admin token"),
    (ADMIN, "needs the admin token"),  # no scheme
    (f"Basic {ADMIN}", "needs the admin token"),
    (b"Bearer bytes", "needs the admin token"),  # binary metadata is not a token
    ("Bearer wrong-token", "not valid"),
    (f"Bearer {ADMIN}x", "not valid"),
    (f"Bearer {ADMIN[:-1]}", "not valid"),
    ("Bearer ", "not valid"),
])
def test_missing_malformed_and_unknown_tokens_are_unauthenticated(header: Any, words: str) -> None:
    with pytest.raises(Unauthenticated, match=words):
        _scopes(header)


def test_without_a_training_token_only_the_admin_token_is_accepted() -> None:
    with pytest.raises(Unauthenticated):
        _scopes(f"Bearer {TRAINING}", training_token=None, scope="training")


def test_refusals_are_logged_with_the_peer_never_the_token(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="services.gateway.auth"), pytest.raises(Unauthenticated):
        _scopes("Bearer guessed-secret-value")
    (record,) = caplog.records
    assert record.peer == "ipv4:10.0.0.7:5555" and record.why == "unknown token"  # type: ignore[attr-defined]
    assert "guessed-secret-value" not in caplog.text and "guessed-secret-value" not in str(record.__dict__)
