"""The admin token guard for calls that change what serves or start training."""

from __future__ import annotations

import hmac
import logging

from digits.errors import Unauthenticated
from digits.rpc import Context

log = logging.getLogger(__name__)

SCHEME = "bearer "


def require_admin(context: Context, token: str) -> None:
    """Raise Unauthenticated unless the call carries ``authorization: Bearer <token>``."""
    header = dict(context.invocation_metadata() or ()).get("authorization", "")
    if not isinstance(header, str) or not header.lower().startswith(SCHEME):
        log.warning("admin call without a token", extra={"peer": context.peer()})
        raise Unauthenticated("this call needs the admin token: send metadata 'authorization: Bearer <token>'")
    presented = header[len(SCHEME):].strip().encode()
    # Constant-time, so the comparison does not leak how much of a guess was right.
    if not hmac.compare_digest(presented, token.encode()):
        log.warning("admin call with a wrong token", extra={"peer": context.peer()})
        raise Unauthenticated("the admin token is not valid")
