"""Run a blocking Redis/RQ call off the event loop, turning a lost Redis into UNAVAILABLE."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import redis

from digits.errors import Unavailable

P = ParamSpec("P")
T = TypeVar("T")


async def off_loop(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise Unavailable(f"the registry (Redis) is unavailable: {error}; try again shortly") from error
