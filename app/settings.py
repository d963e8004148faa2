"""Settings: read once from the environment and `.env` into one typed object."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    DATABASE_URL: str = ""
    DB_POOL_MIN: int = Field(default=2, ge=0)
    DB_POOL_MAX: PositiveInt = 10
    DB_CONNECT_TIMEOUT: float = Field(default=2.0, gt=0)
    DB_COMMAND_TIMEOUT: float = Field(default=5.0, gt=0)
    DATA_DIR: Path = Path(".data")

    LOG_LEVEL: str = "INFO"
    ACCESS_LOG: bool = True

    REQUEST_MAX_SIZE: PositiveInt = 64 * 1024
    REQUEST_MAX_HEADER_SIZE: PositiveInt = 8 * 1024
    REQUEST_TIMEOUT: float = Field(default=30.0, gt=0)
    RESPONSE_TIMEOUT: float = Field(default=30.0, gt=0)
    KEEP_ALIVE_TIMEOUT: float = Field(default=5.0, gt=0)
    GRACEFUL_SHUTDOWN_TIMEOUT: float = Field(default=15.0, gt=0)

    @field_validator("LOG_LEVEL")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("DATABASE_URL")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if value and not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgres:// or postgresql://")
        return value

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.DB_POOL_MIN > self.DB_POOL_MAX:
            raise ValueError("DB_POOL_MIN must not exceed DB_POOL_MAX")
        return self

    @property
    def is_production(self) -> bool:
        return self.ENV is Environment.PRODUCTION

    @property
    def embedded_db(self) -> bool:
        return not self.DATABASE_URL


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
