"""Bearer tokens and their scopes, for calls that change what serves ("models") or train ("training")."""

from __future__ import annotations

import hmac
import logging

from digits.errors import PermissionDenied, Unauthenticated
from digits.platform.rpc import Context
from digits.settings import Settings

log = logging.getLogger(__name__)

SCHEME = "bearer "


def require_scope(context: Context, settings: Settings, scope: str) -> frozenset[str]:
    """The caller's scopes; Unauthenticated without a valid token, PermissionDenied when they lack ``scope``.

    Refusals are logged with the peer and the method, never with the token.
    """
    header = dict(context.invocation_metadata() or ()).get("authorization", "")
    if not isinstance(header, str) or not header.lower().startswith(SCHEME):
        _refused(context, "no token")
        raise Unauthenticated("this call needs the admin token: send metadata 'authorization: Bearer <token>'")
    scopes = _scopes_of(header[len(SCHEME):].strip(), settings)
    if scopes is None:
        _refused(context, "unknown token")
        raise Unauthenticated("the admin token is not valid")
    if scope not in scopes:
        _refused(context, f"token without scope {scope!r}")
        raise PermissionDenied(f"this token may not make {scope} calls")
    return scopes


def _scopes_of(presented: str, settings: Settings) -> frozenset[str] | None:
    # Compare with every token, in constant time, so neither timing nor order leaks which one was close.
    found = None
    for token, scopes in settings.tokens().items():
        if hmac.compare_digest(presented.encode(), token.encode()):
            found = scopes
    return found


def _refused(context: Context, why: str) -> None:
    log.warning("admin call refused", extra={"why": why, "peer": context.peer()})
