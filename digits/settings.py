"""All configuration, read once from the environment into one object.

Variable names are the contracts in docs/DESIGN.md: the ports and targets keep their plain names
(REDIS_URL, GATEWAY_GRPC_PORT, ...); everything else is DIGITS_*.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_REGISTRY_KEY = "digits-dev-registry-key"
DEV_ADMIN_TOKEN = "digits-dev-admin-token"

log = logging.getLogger(__name__)


def _plain(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIGITS_", extra="ignore", frozen=True)

    # Where things are.
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_plain("REDIS_URL"))
    gateway_grpc_port: int = Field(50051, validation_alias=_plain("GATEWAY_GRPC_PORT"))
    gateway_http_port: int = Field(8080, validation_alias=_plain("GATEWAY_HTTP_PORT"))
    inference_port: int = Field(50052, validation_alias=_plain("INFERENCE_PORT"))
    inference_target: str = Field("ipv4:127.0.0.1:50052", validation_alias=_plain("INFERENCE_TARGET"))
    bind_host: str = "0.0.0.0"
    gateway: str = "127.0.0.1:50051"  # where the CLI finds the gateway (DIGITS_GATEWAY)
    metrics_port: int = 0  # inference's Prometheus port; 0 = none (the gateway serves /metrics on HTTP)

    # Secrets (never printed: SecretStr). The development defaults keep `make up` a one-liner; services warn
    # when they are used. The training token, if set, may start and watch jobs but not change the active model.
    registry_key: SecretStr = SecretStr(DEV_REGISTRY_KEY)
    admin_token: SecretStr = SecretStr(DEV_ADMIN_TOKEN)
    training_token: SecretStr | None = None
    # TLS for the gateway (gRPC and HTTP) when both files are given.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    # Data and training.
    data: str = "sample"
    cache_dir: Path = Path.home() / ".cache" / "digits"
    job_timeout_seconds: int = 3600

    # Input bounds: everything from outside is checked against these before any work is done.
    max_image_bytes: int = 8_000_000
    max_image_pixels: int = 40_000_000
    max_batch_items: int = 1024

    # Serving.
    inference_timeout_seconds: float = 10.0  # used when the caller set no deadline
    gateway_max_in_flight: int = 512  # Recognizer calls forwarded at once; more get RESOURCE_EXHAUSTED
    model_poll_seconds: float = 2.0  # how often replicas re-read digits:active besides pub/sub
    shutdown_grace_seconds: float = 10.0
    shutdown_notice_seconds: float = 1.0  # NOT_SERVING before refusing calls, so that clients move away first
    max_connection_age_seconds: float = 60.0  # inference: how long a client connection lives (DNS re-resolution)
    # BLAS threads for a replica's model calls: 1 leaves the other cores to the event loops and other
    # replicas (measured in docs/performance.md); scale out with replicas instead.
    blas_threads: int = 1
    batch_max_size: int = 256
    batch_max_wait_ms: float = 0.0

    log_level: str = "INFO"

    def tokens(self) -> dict[str, frozenset[str]]:
        """Each accepted bearer token and the scopes it grants."""
        granted = {self.admin_token.get_secret_value(): frozenset({"models", "training"})}
        if self.training_token is not None:
            granted[self.training_token.get_secret_value()] = frozenset({"training"})
        return granted

    @property
    def max_message_bytes(self) -> int:
        """The largest gRPC message accepted: one maximal image plus room for the envelope."""
        return self.max_image_bytes + 64 * 1024

    def warn_if_insecure(self) -> None:
        if self.registry_key.get_secret_value() == DEV_REGISTRY_KEY:
            log.warning("DIGITS_REGISTRY_KEY is the development default; set a secret key in production")
        if self.admin_token.get_secret_value() == DEV_ADMIN_TOKEN:
            log.warning("DIGITS_ADMIN_TOKEN is the development default; set a secret token in production")


@functools.cache
def get_settings() -> Settings:
    return Settings()
