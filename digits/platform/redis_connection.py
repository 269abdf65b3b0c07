"""Connections to Redis, authenticated as this service's ACL user (``digits.platform.redis_users``)."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from digits.settings import Settings


def _credentials(settings: Settings) -> dict[str, Any]:
    if not settings.redis_username:
        return {}
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return {"username": settings.redis_username, "password": password}


def connect(settings: Settings, *, timeout: float | None = 5.0) -> redis.Redis:
    """A blocking client; responses stay bytes (blobs are binary)."""
    return redis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                **_credentials(settings))


def connect_async(settings: Settings, *, timeout: float = 2.0) -> aioredis.Redis:
    """An asyncio client, for pub/sub on an event loop."""
    return aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=timeout, **_credentials(settings))
