"""Settings: one pydantic-settings class, environment prefix ``FINRT_``, ``.env`` honoured."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINRT_", env_file=".env", extra="ignore")

    env: Literal["development", "production", "test"] = "production"
    database_url: str = "sqlite:///./var/finrt.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Every Redis key and pub/sub channel this service uses starts with this prefix.
    redis_prefix: str = "finrt"
    jwt_secret: str = ""
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    history_maxlen: int = Field(1000, ge=1)
    # A channel's history is dropped after this long without a new event (0: kept for ever).
    history_ttl_seconds: int = Field(7 * 24 * 3600, ge=0)
    ping_seconds: float = Field(15.0, gt=0)
    # Reconnect hint sent to SSE clients (the `retry:` field), milliseconds.
    retry_ms: int = Field(2000, ge=0)
    client_buffer: int = Field(1000, ge=1)
    max_streams_per_user: int = Field(20, ge=1)
    max_channels_per_stream: int = Field(16, ge=1)
    max_event_bytes: int = Field(64 * 1024, ge=256)
    # Under load a flush is delayed up to this long so that one write carries many events.
    coalesce_ms: float = Field(20.0, ge=0)
    ticket_ttl_seconds: int = Field(60, ge=1)
    public_url: str = "http://127.0.0.1:8000"
    log_json: bool = False
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _secret_required_outside_development(self) -> Settings:
        if self.env != "development" and len(self.jwt_secret) < 16:
            raise ValueError(
                "FINRT_JWT_SECRET must be set (16 characters or more) outside `finrt dev`"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
