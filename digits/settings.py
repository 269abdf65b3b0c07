"""All configuration, read once from the environment, into the settings of the one who reads it.

``Settings`` is what the services and `make up` read; ``ClientSettings`` is what the CLI and ``digits.client`` read
(where the gateway is, how to talk to it). The few variables both read (the admin token, the limits a client
chunks its batches by) are declared once, in ``SharedSettings``. Every field names its readers.

The ports, targets and the Redis URL keep the plain names of the original contracts (REDIS_URL,
GATEWAY_GRPC_PORT, ...); everything else is DIGITS_*. Each field's description and readers are what the README's
configuration table says about it (tests/unit/test_settings.py keeps the two in step).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic.fields import FieldInfo
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


Reader = Literal["gateway", "inference", "trainer", "make up", "CLI and client"]
READERS: tuple[Reader, ...] = ("gateway", "inference", "trainer", "make up", "CLI and client")
SERVICES: tuple[Reader, ...] = ("gateway", "inference", "trainer")


def _plain(name: str) -> AliasChoices:
    return AliasChoices(name)


def read_by(*readers: Reader) -> dict[str, Any]:
    """A field's readers, for the README's table (``json_schema_extra``)."""
    return {"read_by": ", ".join(readers)}


class SharedSettings(BaseSettings):
    """The variables the services and the client both read."""

    # An empty variable means "not set" (compose's ${VAR:-} gives ""): never an empty token.
    model_config = SettingsConfigDict(env_prefix="DIGITS_", extra="ignore", frozen=True, env_ignore_empty=True)

    admin_token: SecretStr = Field(SecretStr(DEV_ADMIN_TOKEN),
                                   description="bearer token for admin calls (the development value works in local "
                                               "mode only); the CLI and `digits.client` send it unless "
                                               "`DIGITS_TOKEN` is set",
                                   json_schema_extra=read_by("gateway", "CLI and client"))
    max_image_bytes: int = Field(8_000_000, description="largest encoded image, in bytes (a `folder:DIR` "
                                                        "picture too)",
                                 json_schema_extra=read_by("gateway", "inference", "trainer", "CLI and client"))
    max_batch_items: int = Field(1024, description="most items in one `PredictBatch` or Open Inference call",
                                 json_schema_extra=read_by("gateway", "inference", "CLI and client"))

    @property
    def max_message_bytes(self) -> int:
        """The largest gRPC message accepted: one maximal image plus room for the envelope."""
        return self.max_image_bytes + 64 * 1024


class ClientSettings(SharedSettings):
    """What the CLI and ``digits.client`` read: where the gateway is and how to talk to it."""

    gateway: str = Field("127.0.0.1:50051", description="where the CLI and `digits.client` find the gateway",
                         json_schema_extra=read_by("CLI and client"))
    tls_ca_file: Path | None = Field(None, description="the CA certificates (PEM) that verify the gateway's TLS "
                                                       "certificate; set, the client speaks TLS",
                                     json_schema_extra=read_by("CLI and client"))
    insecure: bool | None = Field(None, description="`true` speaks plaintext to the gateway, `false` TLS (the "
                                                    "system's CAs unless `DIGITS_TLS_CA_FILE`); unset: plaintext to "
                                                    "a loopback address only",
                                  json_schema_extra=read_by("CLI and client"))
    token: SecretStr | None = Field(None, description="the bearer token sent with `Models` writes and `Training` "
                                                      "calls; unset: `DIGITS_ADMIN_TOKEN`",
                                    json_schema_extra=read_by("CLI and client"))
    client_timeout_seconds: float = Field(30.0, gt=0, description="the deadline of each call (a watched job has "
                                                                  "none)",
                                          json_schema_extra=read_by("CLI and client"))


class Settings(SharedSettings):
    """What the services and `make up` read."""

    # Where things are.
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_plain("REDIS_URL"),
                           description="registry, queue and events",
                           json_schema_extra=read_by("gateway", "inference", "trainer", "make up"))
    gateway_grpc_port: int = Field(50051, validation_alias=_plain("GATEWAY_GRPC_PORT"),
                                   description="the gateway's gRPC port",
                                   json_schema_extra=read_by("gateway", "make up"))
    gateway_http_port: int = Field(8080, validation_alias=_plain("GATEWAY_HTTP_PORT"),
                                   description="the gateway's HTTP port (page, JSON predict, metrics)",
                                   json_schema_extra=read_by("gateway", "make up"))
    inference_port: int = Field(50052, validation_alias=_plain("INFERENCE_PORT"),
                                description="an inference replica's port (local mode: replicas take consecutive "
                                            "ports)",
                                json_schema_extra=read_by("inference", "make up"))
    inference_target: str = Field("ipv4:127.0.0.1:50052", validation_alias=_plain("INFERENCE_TARGET"),
                                  description="where the gateway finds replicas (`dns:///inference:50052` in compose)",
                                  json_schema_extra=read_by("gateway"))
    bind_host: str = Field("0.0.0.0", description="the address services listen on (local mode: 127.0.0.1)",
                           json_schema_extra=read_by("gateway", "inference"))
    metrics_port: int = Field(0, description="inference's Prometheus port; 0 = none (the gateway serves /metrics "
                                             "on HTTP); local mode: replica port + 1000",
                              json_schema_extra=read_by("inference"))

    # Where this runs: "development" (local mode, which `make up` sets) accepts the development admin token and
    # warns; "production" refuses weak or missing secrets at start.
    environment: Literal["development", "production"] = Field(
        "production", description="`production` refuses missing, short, placeholder or development secrets at "
                                  "start; local mode (`make up`) sets `development`",
        json_schema_extra=read_by("gateway", "inference", "trainer"))

    # Secrets (never printed: SecretStr).
    training_token: SecretStr | None = Field(None, description="optional token that may run `Training` calls; its "
                                                               "jobs never change the active model",
                                             json_schema_extra=read_by("gateway"))
    registry_signing_key: SecretStr | None = Field(
        None, description="the trainer's Ed25519 private key (base64) that signs model versions; the trainer only",
        json_schema_extra=read_by("trainer"))
    registry_public_keys: str = Field("", description="the Ed25519 public keys (base64, comma-separated) every "
                                                      "service verifies versions with; list old and new to rotate",
                                      json_schema_extra=read_by("gateway", "inference", "trainer", "make up"))
    redis_username: str = Field("", description="the Redis ACL user this service connects as (`make up` sets one "
                                                "per service)",
                                json_schema_extra=read_by("gateway", "inference", "trainer"))
    redis_password: SecretStr | None = Field(None, description="that user's password",
                                             json_schema_extra=read_by("gateway", "inference", "trainer"))
    tls_cert_file: Path | None = Field(None, description="serve the gateway's gRPC and HTTP over TLS (with the key)",
                                       json_schema_extra=read_by("gateway"))
    tls_key_file: Path | None = Field(None, description="the TLS private key file",
                                      json_schema_extra=read_by("gateway"))

    # Data and training.
    data: str = Field("sample", description="training data: `sample`, `idx:DIR`, `openml` or `folder:DIR` "
                                            "(DIR/0/*.png ... DIR/9/*.png), or several joined by `+` "
                                            "(`sample+folder:DIR`; `+corrections` adds the accepted corrections)",
                      json_schema_extra=read_by("trainer", "make up"))
    cache_dir: Path = Field(Path.home() / ".cache" / "digits", description="downloaded data sets (openml)",
                            json_schema_extra=read_by("trainer"))
    job_timeout_seconds: int = Field(3600, description="default retrain job timeout",
                                     json_schema_extra=read_by("gateway"))
    registry_keep: int = Field(10, ge=1, description="versions whose blobs the registry keeps besides the active and "
                                                     "pinned ones: the newest N and the last N rollback targets",
                               json_schema_extra=read_by("trainer"))
    code_version: str = Field("", description="the code version recorded with each model (images set it; a "
                                              "checkout uses its git commit)",
                              json_schema_extra=read_by("trainer"))

    # Input bounds: everything from outside is checked against these before any work is done.
    max_image_pixels: int = Field(16_000_000, description="largest image, in declared pixels (JPEGs are decoded at "
                                                          "a reduced size; a `folder:DIR` picture too)",
                                  json_schema_extra=read_by("inference", "trainer"))
    max_batch_pixels: int = Field(64_000_000, description="most declared pixels in one `PredictBatch`",
                                  json_schema_extra=read_by("inference"))
    decode_pixels_in_flight: int = Field(64_000_000, description="most declared pixels a replica decodes or queues "
                                                                 "for decoding at once; more answer "
                                                                 "RESOURCE_EXHAUSTED",
                                         json_schema_extra=read_by("inference"))

    # Serving.
    inference_timeout_seconds: float = Field(10.0, description="the deadline the gateway gives inference when the "
                                                               "caller set none",
                                             json_schema_extra=read_by("gateway"))
    max_deadline_seconds: float = Field(30.0, description="the longest deadline the gateway passes on",
                                        json_schema_extra=read_by("gateway"))
    gateway_max_in_flight: int = Field(512, description="Predict calls the gateway forwards at once; more get "
                                                        "RESOURCE_EXHAUSTED (HTTP 503)",
                                       json_schema_extra=read_by("gateway"))
    gateway_batches_in_flight: int = Field(4, ge=1, description="batches the gateway keeps in flight to inference, "
                                                                "each slot on a stream of its own; predictions "
                                                                "arriving meanwhile leave together as the next one",
                                           json_schema_extra=read_by("gateway"))
    gateway_max_bytes_in_flight: int = Field(64_000_000, description="request bytes the gateway holds at once; more "
                                                                     "get RESOURCE_EXHAUSTED (HTTP 503)",
                                             json_schema_extra=read_by("gateway"))
    model_poll_seconds: float = Field(2.0, description="how often replicas re-read the active version besides "
                                                       "pub/sub",
                                      json_schema_extra=read_by("inference"))
    replica_report_seconds: float = Field(5.0, description="how often replicas publish which version they serve",
                                          json_schema_extra=read_by("gateway", "inference"))
    shutdown_grace_seconds: float = Field(10.0, description="how long a stopping service drains in-flight calls",
                                          json_schema_extra=read_by("gateway", "inference"))
    shutdown_notice_seconds: float = Field(1.0, description="how long a stopping service reports NOT_SERVING "
                                                            "before it refuses calls",
                                           json_schema_extra=read_by("gateway", "inference"))
    max_connection_age_seconds: float = Field(60.0, description="inference: how long a client connection lives "
                                                                "(clients re-resolve DNS)",
                                              json_schema_extra=read_by("inference"))
    # 1 leaves the other cores to the event loops and other replicas (docs/performance.md).
    blas_threads: int = Field(1, description="BLAS threads for a replica's model calls",
                              json_schema_extra=read_by("inference"))
    batch_max_size: int = Field(256, description="most rows in one coalesced model call",
                                json_schema_extra=read_by("inference"))
    batch_max_wait_ms: float = Field(0.0, description="how long a batch waits for requests known to be on their "
                                                      "way",
                                     json_schema_extra=read_by("inference"))

    # Predictions people can refer to, and their corrections (docs/architecture.md, "Corrections").
    keep_inputs_seconds: int = Field(3600, ge=0, description="how long the gateway keeps the 28x28 input of each "
                                                             "answer under its prediction id, so that a correction "
                                                             "can point at it; 0 = keep none (nothing can be "
                                                             "corrected)",
                                     json_schema_extra=read_by("gateway"))
    keep_inputs_max: int = Field(10_000, ge=1, description="most inputs kept at once (about 1 kB of Redis each); "
                                                           "past it the oldest go first",
                                 json_schema_extra=read_by("gateway"))
    corrections_max: int = Field(10_000, ge=1, description="most corrections stored, whatever their status (about "
                                                           "1 kB each); past it new ones are refused until an admin "
                                                           "deletes some",
                                 json_schema_extra=read_by("gateway"))
    corrections_per_minute: int = Field(30, ge=1, description="corrections one caller (an address) may send per "
                                                              "minute, in bursts of as many; more get "
                                                              "RESOURCE_EXHAUSTED (HTTP 429)",
                                        json_schema_extra=read_by("gateway"))
    auto_accept_corrections: bool = Field(False, description="accept corrections as they arrive, without an "
                                                             "admin's review (a trusted deployment only)",
                                          json_schema_extra=read_by("gateway"))

    log_level: str = Field("INFO", description="logs are JSON lines on stderr",
                           json_schema_extra=read_by("gateway", "inference", "trainer"))

    # `make up` and friends (python -m digits.stack).
    stack: Literal["", "local"] = Field("", description="`local` runs the stack as local processes even where a "
                                                        "Docker engine answers; unset: Docker Compose when one "
                                                        "answers",
                                        json_schema_extra=read_by("make up"))

    def tokens(self) -> dict[str, frozenset[str]]:
        """Each accepted bearer token and the scopes it grants."""
        granted = {self.admin_token.get_secret_value(): frozenset({"models", "training", "corrections"})}
        if self.training_token is not None:
            granted[self.training_token.get_secret_value()] = frozenset({"training"})
        return granted

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


@functools.cache
def get_client_settings() -> ClientSettings:
    return ClientSettings()


def process_environment() -> dict[str, str]:
    """A copy of this process's environment, to build a child process's environment from (the stack's services,
    a CLI run by a test). This module is the only one that reads ``os.environ`` (tests/unit/test_settings.py):
    configuration is read through ``Settings``."""
    return dict(os.environ)


def _all_fields() -> dict[str, FieldInfo]:
    """Every variable once: the services' and `make up`'s, then the client's own."""
    return {**Settings.model_fields, **ClientSettings.model_fields}


def variable(name: str) -> str:
    """The environment variable that sets field ``name``."""
    alias = _all_fields()[name].validation_alias
    return alias.choices[0] if isinstance(alias, AliasChoices) else f"DIGITS_{name.upper()}"  # type: ignore[return-value]


def readers(name: str) -> str:
    extra = _all_fields()[name].json_schema_extra
    assert isinstance(extra, dict), f"{name} names no readers"
    return str(extra["read_by"])


def _shown_default(name: str) -> str:
    value = _all_fields()[name].default
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
    """The README's configuration table: every variable, its default, who reads it and what it means."""
    rows = [f"| `{variable(name)}` | {_shown_default(name)} | {readers(name)} | {field.description} |"
            for name, field in _all_fields().items()]
    return "\n".join(["| variable | default | read by | meaning |", "|---|---|---|---|", *rows]) + "\n"


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
