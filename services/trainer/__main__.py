"""Run one RQ worker on the training queue."""

from __future__ import annotations

import logging
import os
import socket

import redis
from rq import Queue, Worker

from digits import logs
from digits.jobs import QUEUE
from digits.settings import get_settings

log = logging.getLogger(__name__)


def main() -> None:
    settings = get_settings()
    logs.configure("trainer", settings.log_level)
    settings.warn_if_insecure()
    connection = redis.Redis.from_url(settings.redis_url)
    worker = Worker(
        [Queue(QUEUE, connection=connection)],
        connection=connection,
        name=f"trainer-{socket.gethostname()}-{os.getpid()}",
        # Heartbeats every 5 s: a job whose worker dies is declared abandoned about a minute later.
        job_monitoring_interval=5,
    )
    log.info("trainer waiting for jobs", extra={"queue": QUEUE, "worker": worker.name})
    worker.work(logging_level=settings.log_level.upper())


if __name__ == "__main__":
    main()
