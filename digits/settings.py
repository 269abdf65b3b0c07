"""All configuration, read once from the environment into one object.

The ports, targets and the Redis URL keep the plain names of the original contracts (REDIS_URL,
GATEWAY_GRPC_PORT, ...); everything else is DIGITS_*. Each field's description is what the README's
configuration table says about it (tests/unit/test_settings.py keeps the two in step).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The admin token local mode (`make up`) uses, so that the CLI works without configuration there.
# Refused outside local mode, like every other weak secret.
DEV_ADMIN_TOKEN = "digits-dev-admin-token"
MIN_SECRET_CHARS = 24
# Fragments of the values people leave in templates ("change-me-to-a-long-random-token", "<your token>").
_PLACEHOLDERS = ("changeme", "change-me", "change_me", "placeholder", "example", "replace", "your-", "your_",
                 "<", "xxxxxx", "insert")

log = logging.getLogger(__name__)

Role = Literal["gateway", "inference", "trainer"]


def _plain(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    # An empty variable means "not set" (compose's ${VAR:-} gives ""): never an empty token.
    model_config = SettingsConfigDict(env_prefix="DIGITS_", extra="ignore", frozen=True, env_ignore_empty=True)

    # Where things are.
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_plain("REDIS_URL"),
                           description="registry, queue and events")
    gateway_grpc_port: int = Field(50051, validation_alias=_plain("GATEWAY_GRPC_PORT"),
                                   description="the gateway's gRPC port")
    gateway_http_port: int = Field(8080, validation_alias=_plain("GATEWAY_HTTP_PORT"),
                                   description="the gateway's HTTP port (page, JSON predict, metrics)")
    inference_port: int = Field(50052, validation_alias=_plain("INFERENCE_PORT"),
                                description="an inference replica's port (local mode: replicas take consecutive "
                                            "ports)")
    inference_target: str = Field("ipv4:127.0.0.1:50052", validation_alias=_plain("INFERENCE_TARGET"),
                                  description="where the gateway finds replicas (`dns:///inference:50052` in compose)")
    bind_host: str = Field("0.0.0.0", description="the address services listen on (local mode: 127.0.0.1)")
    gateway: str = Field("127.0.0.1:50051", description="where the CLI and `digits.client` find the gateway")
    # How the CLI and `digits.client` reach the gateway (besides `gateway`, above).
    tls_ca_file: Path | None = Field(None, description="the CLI and `digits.client`: the CA certificates (PEM) that "
                                                       "verify the gateway's TLS certificate; set, they speak TLS")
    insecure: bool | None = Field(None, description="the CLI and `digits.client`: `true` speaks plaintext to the "
                                                    "gateway, `false` TLS (the system's CAs unless "
                                                    "`DIGITS_TLS_CA_FILE`); unset: plaintext to a loopback address "
                                                    "only")
    token: SecretStr | None = Field(None, description="the bearer token the CLI and `digits.client` send with "
                                                      "`Models` writes and `Training` calls; unset: "
                                                      "`DIGITS_ADMIN_TOKEN`")
    client_timeout_seconds: float = Field(30.0, gt=0, description="the CLI and `digits.client`: the deadline of "
                                                                  "each call (a watched job has none)")
    metrics_port: int = Field(0, description="inference's Prometheus port; 0 = none (the gateway serves /metrics "
                                             "on HTTP); local mode: replica port + 1000")

    # Where this runs: "development" (local mode, which `make up` sets) accepts the development admin token and
    # warns; "production" refuses weak or missing secrets at start.
    environment: Literal["development", "production"] = Field(
        "production", description="`production` refuses missing, short, placeholder or development secrets at "
                                  "start; local mode (`make up`) sets `development`")

    # Secrets (never printed: SecretStr).
    admin_token: SecretStr = Field(SecretStr(DEV_ADMIN_TOKEN),
                                   description="bearer token for admin calls (the development value works in local "
                                               "mode only)")
    training_token: SecretStr | None = Field(None, description="optional token that may run `Training` calls; its "
                                                               "jobs never change the active model")
    registry_signing_key: SecretStr | None = Field(
        None, description="the trainer's Ed25519 private key (base64) that signs model versions; the trainer only")
    registry_public_keys: str = Field("", description="the Ed25519 public keys (base64, comma-separated) every "
                                                      "service verifies versions with; list old and new to rotate")
    redis_username: str = Field("", description="the Redis ACL user this service connects as (`make up` sets one "
                                                "per service)")
    redis_password: SecretStr | None = Field(None, description="that user's password")
    tls_cert_file: Path | None = Field(None, description="serve the gateway's gRPC and HTTP over TLS (with the key)")
    tls_key_file: Path | None = Field(None, description="the TLS private key file")

    # Data and training.
    data: str = Field("sample", description="training data: `sample`, `idx:DIR` or `openml`")
    cache_dir: Path = Field(Path.home() / ".cache" / "digits", description="downloaded data sets (openml)")
    job_timeout_seconds: int = Field(3600, description="default retrain job timeout")
    registry_keep: int = Field(10, ge=1, description="versions whose blobs the registry keeps besides the active and "
                                                     "pinned ones: the newest N and the last N rollback targets")
    code_version: str = Field("", description="the code version recorded with each model (images set it; a "
                                              "checkout uses its git commit)")

    # Input bounds: everything from outside is checked against these before any work is done.
    max_image_bytes: int = Field(8_000_000, description="largest encoded image, in bytes")
    max_image_pixels: int = Field(16_000_000, description="largest image, in declared pixels (JPEGs are decoded at "
                                                          "a reduced size)")
    max_batch_pixels: int = Field(64_000_000, description="most declared pixels in one `PredictBatch`")
    decode_pixels_in_flight: int = Field(64_000_000, description="most declared pixels a replica decodes or queues "
                                                                 "for decoding at once; more answer "
                                                                 "RESOURCE_EXHAUSTED")
    max_batch_items: int = Field(1024, description="most items in one `PredictBatch` or Open Inference call")

    # Serving.
    inference_timeout_seconds: float = Field(10.0, description="the deadline the gateway gives inference when the "
                                                               "caller set none")
    max_deadline_seconds: float = Field(30.0, description="the longest deadline the gateway passes on")
    gateway_max_in_flight: int = Field(512, description="Predict calls the gateway forwards at once; more get "
                                                        "RESOURCE_EXHAUSTED (HTTP 503)")
    gateway_batches_in_flight: int = Field(4, ge=1, description="`PredictEach` calls the gateway keeps in flight to "
                                                                "inference; predictions arriving meanwhile leave "
                                                                "together as the next one")
    gateway_max_bytes_in_flight: int = Field(64_000_000, description="request bytes the gateway holds at once; more "
                                                                     "get RESOURCE_EXHAUSTED (HTTP 503)")
    model_poll_seconds: float = Field(2.0, description="how often replicas re-read the active version besides "
                                                       "pub/sub")
    replica_report_seconds: float = Field(5.0, description="how often replicas publish which version they serve")
    shutdown_grace_seconds: float = Field(10.0, description="how long a stopping service drains in-flight calls")
    shutdown_notice_seconds: float = Field(1.0, description="how long a stopping service reports NOT_SERVING "
                                                            "before it refuses calls")
    max_connection_age_seconds: float = Field(60.0, description="inference: how long a client connection lives "
                                                                "(clients re-resolve DNS)")
    # 1 leaves the other cores to the event loops and other replicas (docs/performance.md).
    blas_threads: int = Field(1, description="BLAS threads for a replica's model calls")
    batch_max_size: int = Field(256, description="most rows in one coalesced model call")
    batch_max_wait_ms: float = Field(0.0, description="how long a batch waits for requests known to be on their "
                                                      "way")

    log_level: str = Field("INFO", description="logs are JSON lines on stderr")

    # `make up` and friends (python -m digits.stack).
    stack: Literal["", "local"] = Field("", description="`local` runs the stack as local processes even where a "
                                                        "Docker engine answers; unset: Docker Compose when one "
                                                        "answers")

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

    def check_secrets(self, role: Role) -> None:
        """Refuse to start in production with a secret that is missing, short, a placeholder or a development value.

        In development (local mode) the same findings are warnings.
        """
        problems = self.secret_problems(role)
        if self.environment == "development":
            for problem in problems:
                log.warning("weak secret, accepted in development only", extra={"problem": problem})
            return
        if problems:
            raise SystemExit(f"{role}: refusing to start with weak secrets (DIGITS_ENVIRONMENT=production): "
                             + "; ".join(problems))

    def secret_problems(self, role: Role) -> list[str]:
        secrets: dict[str, SecretStr | None] = {"DIGITS_REDIS_PASSWORD": self.redis_password}
        if role == "gateway":
            secrets["DIGITS_ADMIN_TOKEN"] = self.admin_token
            if self.training_token is not None:
                secrets["DIGITS_TRAINING_TOKEN"] = self.training_token
        problems = [f"{name} {why}" for name, value in secrets.items() if (why := _weakness(value))]
        if not self.registry_public_keys.strip():
            problems.append("DIGITS_REGISTRY_PUBLIC_KEYS is empty: no model version could be verified")
        if role == "trainer" and self.registry_signing_key is None:
            problems.append("DIGITS_REGISTRY_SIGNING_KEY is unset: the trainer could not sign what it registers")
        return problems


def _weakness(secret: SecretStr | None) -> str:
    if secret is None or not secret.get_secret_value():
        return "is empty"
    value = secret.get_secret_value()
    if value == DEV_ADMIN_TOKEN:
        return "is the development value"
    if len(value) < MIN_SECRET_CHARS:
        return f"is shorter than {MIN_SECRET_CHARS} characters"
    if any(fragment in value.lower() for fragment in _PLACEHOLDERS):
        return "looks like a placeholder"
    return ""


@functools.cache
def get_settings() -> Settings:
    return Settings()


def process_environment() -> dict[str, str]:
    """A copy of this process's environment, to build a child process's environment from (the stack's services,
    a CLI run by a test). This module is the only one that reads ``os.environ`` (tests/unit/test_settings.py):
    configuration is read through ``Settings``."""
    return dict(os.environ)


def variable(name: str) -> str:
    """The environment variable that sets field ``name``."""
    alias = Settings.model_fields[name].validation_alias
    return alias.choices[0] if isinstance(alias, AliasChoices) else f"DIGITS_{name.upper()}"  # type: ignore[return-value]


def _shown_default(name: str) -> str:
    value = Settings.model_fields[name].default
    if isinstance(value, SecretStr):
        return "development value"
    if value is None or value == "":
        return "unset"
    if isinstance(value, Path):
        return f"`~/{value.relative_to(Path.home())}`" if value.is_relative_to(Path.home()) else f"`{value}`"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1_000_000:
        return f"`{value:_}`"
    return f"`{value}`"


def markdown_table() -> str:
    """The README's configuration table: every setting, its variable, default and description."""
    rows = [f"| `{variable(name)}` | {_shown_default(name)} | {field.description} |"
            for name, field in Settings.model_fields.items()]
    return "\n".join(["| variable | default | meaning |", "|---|---|---|", *rows]) + "\n"


TABLE_START, TABLE_END = "<!-- settings table", "<!-- end of settings table -->"


def table_in(readme: str) -> str:
    """The configuration table between the README's markers."""
    start = readme.index("\n", readme.index(TABLE_START)) + 1
    return readme[start : readme.index(TABLE_END)]


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--update"]:  # python -m digits.settings --update README.md
        path = Path(sys.argv[2])
        text = path.read_text()
        path.write_text(text.replace(table_in(text), markdown_table()))
    else:
        print(markdown_table(), end="")
