"""Settings: read once from the environment and `.env` into one typed object."""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class SettingsError(Exception):
    """A setting has a wrong value; the message names the variable."""


PositiveInt = Annotated[int, Field(ge=1)]


class Settings(BaseSettings):
    """Every knob of the service. Field names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
    )

    ENV: Environment = Environment.DEVELOPMENT
    HOST: str = "127.0.0.1"
    PORT: int = Field(default=8000, ge=1, le=65535)
    WORKERS: PositiveInt = Field(default_factory=lambda: os.cpu_count() or 1)

    # Empty means: start the embedded PostgreSQL under DATA_DIR.
    DATABASE_URL: str = Field(default="", validate_default=True)
    # Connections each worker opens before it serves; unset: DB_POOL_MAX, the whole pool, so
    # no request waits for a connection to be opened while the pool grows. Connections are
    # never closed while they work (app/db/wiring.py), so a smaller pool only delays its growth.
    DB_POOL_MIN: int | None = Field(default=None, ge=0)
    DB_POOL_MAX: PositiveInt = 10
    DB_CONNECT_TIMEOUT: float = Field(default=2.0, gt=0)
    DB_COMMAND_TIMEOUT: float = Field(default=5.0, gt=0)
    # Reads by id, list pages and creates that find no pool connection free wait together and
    # share one statement per kind, up to this many (app/db/batch.py); 0 or 1: each runs alone.
    DB_BATCH: int = Field(default=64, ge=0, le=1000)
    DATA_DIR: Path = Path(".data")
    # --- Scale-out: PgBouncer in transaction pooling mode (docs/scaling.md) ---
    # DATABASE_URL points at PgBouncer (pool_mode=transaction): asyncpg keeps no server-side
    # prepared statements (statement_cache_size=0), since consecutive transactions of one
    # client connection may run on different server connections.
    DB_PGBOUNCER: bool = False
    # PostgreSQL itself, for what transaction pooling cannot carry: the cache's LISTEN
    # connections, the migration lock, the start-up capacity check, `create-user`.
    # Empty: DATABASE_URL. Required with DB_PGBOUNCER=true while CACHE_ENABLED.
    DATABASE_DIRECT_URL: str = ""

    LOG_LEVEL: str = "INFO"
    ACCESS_LOG: bool = True

    REQUEST_MAX_SIZE: PositiveInt = 64 * 1024
    REQUEST_MAX_HEADER_SIZE: PositiveInt = 8 * 1024
    REQUEST_TIMEOUT: float = Field(default=30.0, gt=0)
    RESPONSE_TIMEOUT: float = Field(default=30.0, gt=0)
    KEEP_ALIVE_TIMEOUT: float = Field(default=5.0, gt=0)
    GRACEFUL_SHUTDOWN_TIMEOUT: float = Field(default=15.0, gt=0)
    # Workers over their share of keep-alive connections close a few after a response, so
    # clients reconnect to the less busy worker (app/ops/balance.py).
    CONNECTION_BALANCE: bool = True

    # --- Operations: logs, metrics, tracing, health, shutdown (app/ops/logs.py, app/ops/metrics.py,
    # app/ops/tracing.py, app/ops/health.py, app/ops/lifecycle.py) ---
    # "auto": JSON lines in production, readable lines in development.
    LOG_FORMAT: Literal["auto", "json", "text"] = "auto"
    # After SIGTERM, keep serving (readiness 503) this long so load balancers stop routing here.
    SHUTDOWN_DELAY: float = Field(default=0.0, ge=0)
    # How long a request waits for a free pool connection before it is answered 503.
    DB_ACQUIRE_TIMEOUT: float = Field(default=1.0, gt=0)
    METRICS_ENABLED: bool = True
    # 0: `/metrics` on the API port; else a separate listener on METRICS_HOST:METRICS_PORT.
    METRICS_PORT: int = Field(default=0, ge=0, le=65535)
    METRICS_HOST: str = "127.0.0.1"
    # When set, `/metrics` on the API port needs `Authorization: Bearer <token>`.
    METRICS_TOKEN: SecretStr = SecretStr("")
    # prometheus-client's multiprocess folder; empty: a fresh temporary folder per run.
    METRICS_DIR: Path | None = None
    OTEL_ENABLED: bool = False
    OTEL_SERVICE_NAME: str = "items"
    # OTLP/HTTP collector, e.g. http://collector:4318/v1/traces; empty: the exporter's default.
    OTEL_EXPORTER_OTLP_ENDPOINT: str = ""
    # Readiness warns when the TLS certificate expires within this many days.
    TLS_WARN_DAYS: int = Field(default=14, ge=0)

    # --- Traffic control (app/ratelimit, app/items/cache.py, app/items/idempotency.py) ---
    # "N/second|minute|hour|day" per client (token subject, else client IP), or "off".
    RATE_LIMIT: str = "1200/minute"
    # The stricter limit on `POST /auth`, per client IP.
    RATE_LIMIT_AUTH: str = "10/minute"
    # Login attempts per username, over every client address.
    RATE_LIMIT_AUTH_USER: str = "30/hour"
    # Peers whose X-Forwarded-For is believed: comma-separated addresses or CIDR networks.
    TRUSTED_PROXIES: Annotated[tuple[IPvAnyNetwork, ...], NoDecode] = ()
    # Empty: limits are shared by the workers of one machine; set: by every machine.
    REDIS_URL: str = ""
    CACHE_ENABLED: bool = True
    # Invalidation does the real work; the TTL bounds what bypasses the trigger (a restore with
    # triggers off). At most a day: generation stamps repeat after 25 days (app/items/cache.py).
    CACHE_TTL: float = Field(default=300.0, gt=0, le=86_400)
    CACHE_MAX_ITEMS: PositiveInt = 10_000
    # List pages per worker, and the bytes of their bodies (a page is up to 100 items): both
    # bound the page dict's memory. CACHE_MAX_PAGES=0: pages are not cached.
    CACHE_MAX_PAGES: int = Field(default=10_000, ge=0)
    CACHE_MAX_PAGE_BYTES: PositiveInt = 32 * 1024 * 1024
    IDEMPOTENCY_TTL: PositiveInt = 24 * 3600
    IDEMPOTENCY_PURGE_INTERVAL: PositiveInt = 600

    @field_validator("RATE_LIMIT", "RATE_LIMIT_AUTH", "RATE_LIMIT_AUTH_USER")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        value = value.strip().lower()
        if value == "off":
            return value
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError(
                'must be like "100/minute" (per second, minute, hour, day) or "off"'
            ) from None
        return value

    @field_validator("TRUSTED_PROXIES", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    # --- end of traffic control ---

    # --- Security: tokens (app/auth/tokens.py) and TLS (app/ops/tls.py) ---
    # HMAC key for access tokens, >= 32 bytes. Required in production; in development an
    # unset key falls back to DEV_JWT_SECRET (public, and fixed so every worker shares it).
    JWT_SECRET: SecretStr | None = Field(default=None, validate_default=True)
    JWT_ALGORITHM: Literal["HS256"] = "HS256"
    ACCESS_TOKEN_TTL: int = Field(default=900, ge=30, le=86_400)
    REFRESH_TOKEN_TTL: int = Field(default=14 * 86_400, ge=300, le=365 * 86_400)
    AUTH_REQUIRED_FOR_READS: bool = False
    # Development only: the local user `serve` makes sure exists (scope items:write) so the
    # README's quickstart can write (`make token`, app/auth/dev_user.py). Unset: "dev"; empty: none.
    # Production never creates users: any value there stops start-up.
    DEV_USER: str | None = None
    # TLS is on when TLS_ENABLED=true, or, with TLS_ENABLED unset, when TLS_CERT or TLS_KEY
    # is set; an unset path means certs/fullchain.pem or certs/privkey.pem.
    TLS_ENABLED: bool | None = None
    TLS_CERT: Path | None = None
    TLS_KEY: Path | None = None
    # A plain-HTTP port that answers every request with a redirect to HTTPS (needs TLS).
    HTTP_REDIRECT_PORT: int | None = Field(default=None, ge=1, le=65535)
    # Strict-Transport-Security max-age on HTTPS responses; 0 sends no header.
    HSTS_MAX_AGE: int = Field(default=31_536_000, ge=0)

    @field_validator(
        "JWT_SECRET", "TLS_ENABLED", "TLS_CERT", "TLS_KEY", "HTTP_REDIRECT_PORT", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("JWT_SECRET")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            if info.data.get("ENV") is Environment.PRODUCTION:
                raise PydanticCustomError(
                    "missing_secret", "required in production (e.g. `openssl rand -hex 32`)"
                )
            return None
        secret = value.get_secret_value()
        if secret in EXAMPLE_SECRETS or "change-me" in secret.lower():
            raise PydanticCustomError(
                "example_secret", "is an example value; generate one with `openssl rand -hex 32`"
            )
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise PydanticCustomError("short_secret", f"must be at least {MIN_SECRET_BYTES} bytes")
        return value

    @field_validator("DEV_USER")
    @classmethod
    def _dev_user(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and info.data.get("ENV") is Environment.PRODUCTION:
            raise PydanticCustomError(
                "dev_user_in_production",
                "development only: production never creates users "
                "(unset it; make users with `python -m app create-user`)",
            )
        if value and not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", value):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 . _ @ -")
        return value

    @field_validator("HTTP_REDIRECT_PORT")
    @classmethod
    def _redirect_needs_tls(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return None
        data = info.data
        if not _tls_on(data.get("TLS_ENABLED"), data.get("TLS_CERT"), data.get("TLS_KEY")):
            raise PydanticCustomError("redirect_without_tls", "needs TLS (TLS_ENABLED=true)")
        if value == data.get("PORT"):
            raise PydanticCustomError("redirect_port", "must differ from PORT")
        return value

    # --- end of security ---

    @field_validator("LOG_LEVEL")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("DATABASE_URL")
    @classmethod
    def _postgres_url(cls, value: str, info: ValidationInfo) -> str:
        if not value and info.data.get("ENV") is Environment.PRODUCTION:
            # The embedded database is a development convenience, never a production store.
            raise PydanticCustomError("missing_database", "required when ENV=production")
        if value and not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgres:// or postgresql://")
        return value

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.DB_POOL_MIN is not None and self.DB_POOL_MIN > self.DB_POOL_MAX:
            raise ValueError("DB_POOL_MIN must not exceed DB_POOL_MAX")
        return self

    @field_validator("DATABASE_DIRECT_URL")
    @classmethod
    def _direct_url(cls, value: str) -> str:
        if value and not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgres:// or postgresql://")
        return value

    @model_validator(mode="after")
    def _listen_bypasses_pgbouncer(self) -> Settings:
        # LISTEN through transaction pooling silently hears nothing: other machines' writes
        # would then never reach this cache.
        if self.DB_PGBOUNCER and self.CACHE_ENABLED and not self.DATABASE_DIRECT_URL:
            raise PydanticCustomError(
                "direct_url_missing",
                "DATABASE_DIRECT_URL: required when DB_PGBOUNCER=true and CACHE_ENABLED=true "
                "(the cache's LISTEN connection must reach PostgreSQL directly)",
            )
        return self

    @property
    def is_production(self) -> bool:
        return self.ENV is Environment.PRODUCTION

    @property
    def embedded_db(self) -> bool:
        return not self.DATABASE_URL

    @property
    def pool_min(self) -> int:
        """Connections a worker's pool opens at start (DB_POOL_MIN, else DB_POOL_MAX)."""
        return self.DB_POOL_MAX if self.DB_POOL_MIN is None else self.DB_POOL_MIN

    @property
    def direct_database_url(self) -> str:
        """PostgreSQL without a transaction-pooling proxy in between (see DATABASE_DIRECT_URL)."""
        return self.DATABASE_DIRECT_URL or self.DATABASE_URL

    @property
    def dev_user(self) -> str | None:
        """The development user to make sure of at start-up: never in production."""
        if self.is_production or self.DEV_USER == "":
            return None
        return self.DEV_USER or DEFAULT_DEV_USER

    @property
    def jwt_secret(self) -> str:
        """The token signing key: JWT_SECRET, or the public development fallback."""
        return self.JWT_SECRET.get_secret_value() if self.JWT_SECRET else DEV_JWT_SECRET

    @property
    def tls_enabled(self) -> bool:
        return _tls_on(self.TLS_ENABLED, self.TLS_CERT, self.TLS_KEY)

    @property
    def tls_cert(self) -> Path:
        return self.TLS_CERT or DEFAULT_TLS_CERT

    @property
    def tls_key(self) -> Path:
        return self.TLS_KEY or DEFAULT_TLS_KEY


# --- Security defaults, next to the rules that use them ---
MIN_SECRET_BYTES = 32
DEV_JWT_SECRET = "items-development-only-jwt-secret-never-use-in-production"  # noqa: S105
# Values shipped in docs and examples (.env.example, deploy/); refused in every environment.
EXAMPLE_SECRETS = frozenset(
    {
        DEV_JWT_SECRET,
        "change-me-to-64-hex-characters-from-openssl-rand-hex-32-0000000",
        "CHANGE-ME-to-at-least-32-random-bytes-openssl-rand-hex-32",
        "This is a big secret. Shhhhh",  # sanic-jwt's built-in default
    }
)
DEFAULT_DEV_USER = "dev"
DEFAULT_TLS_CERT = Path("certs/fullchain.pem")
DEFAULT_TLS_KEY = Path("certs/privkey.pem")


def _tls_on(enabled: bool | None, cert: Path | None, key: Path | None) -> bool:
    return enabled if enabled is not None else (cert is not None or key is not None)


def load_settings(env_file: str | None = ".env", **overrides: Any) -> Settings:
    """Read the settings, turning a validation failure into one line per bad variable."""
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            problems.append(f"{name.upper()}: {error['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
