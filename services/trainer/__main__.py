"""Run one RQ worker on the training queue: JSON jobs only, and only Digits' own job functions."""

from __future__ import annotations

import logging
import os
import socket

from rq import Worker

from digits import logs
from digits.platform.redis_connection import connect
from digits.platform.registry import Registry
from digits.settings import get_settings
from digits.training import jobs

log = logging.getLogger(__name__)


def main() -> None:
    settings = get_settings()
    logs.configure("trainer", settings.log_level)
    settings.check_secrets("trainer")
    _check_keys_agree()
    connection = connect(settings, timeout=None)  # a worker blocks on the queue for minutes at a time
    worker = Worker(
        [jobs.queue(connection)],
        connection=connection,
        name=f"trainer-{socket.gethostname()}-{os.getpid()}",
        serializer=jobs.SERIALIZER,
        job_class=jobs.TrustedJob,
        # Heartbeats every 5 s: a job whose worker dies is declared abandoned about a minute later.
        job_monitoring_interval=5,
    )
    log.info("trainer waiting for jobs", extra={"queue": jobs.QUEUE, "worker": worker.name})
    worker.work(logging_level=settings.log_level.upper())


def _check_keys_agree() -> None:
    """A trainer whose signing key no service trusts would register versions that never serve: refuse to start."""
    registry = Registry.from_settings(get_settings())
    if not registry.signs_verifiably():
        raise SystemExit("trainer: the public half of DIGITS_REGISTRY_SIGNING_KEY is not among "
                         "DIGITS_REGISTRY_PUBLIC_KEYS, so no service would trust what this trainer registers")


if __name__ == "__main__":
    main()
