"""Settings: one pydantic-settings class, environment prefix ``FINRT_``, ``.env`` honoured."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from limits import RateLimitItem, parse_many
from pydantic import Field, ValidationInfo, field_validator, model_validator
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
    # Presence on file channels (docs/presence.md): a user's leave is announced only after their
    # last connection has been gone this long; a process that stops renewing its lease (a crash)
    # loses its users within this long; above room_limit users, joins and leaves fold into counts.
    presence_grace_seconds: float = Field(5.0, ge=0)
    presence_lease_seconds: float = Field(30.0, ge=1)
    presence_room_limit: int = Field(100, ge=1)
    # Per token, over every API process (counted in Redis): one rate in the notation of the
    # `limits` library ("100/second", "10 per minute"); empty for no limit.
    publish_rate: str = "100/second"
    upload_rate: str = "10/minute"
    log_json: bool = False
    log_level: str = "INFO"

    # Producers (uploads, reports, Celery); see the README, "Files, dashboards and reports".
    upload_max_bytes: int = Field(10 * 1024 * 1024, ge=1)
    upload_max_rows: int = Field(100_000, ge=1)
    reports_dir: str = "var/reports"
    # Empty: the broker is FINRT_REDIS_URL (Celery's keys under "<redis_prefix>:celery:").
    celery_broker_url: str = ""
    celery_queue: str = "finrt"
    # Seconds before the Redis broker hands an unacknowledged task to another worker: keep it
    # above task_time_limit, or a long task runs twice.
    celery_visibility_timeout: int = Field(3600, ge=1)
    task_soft_time_limit: int = Field(300, ge=1)
    task_time_limit: int = Field(360, ge=1)
    task_max_retries: int = Field(5, ge=0)
    # Progress events of one job: at most one per this many seconds (the last always goes).
    progress_interval_seconds: float = Field(0.25, ge=0)
    outbox_sweep_seconds: float = Field(5.0, gt=0)
    # The sweeper leaves younger rows to the after-commit publish of the process that wrote them.
    outbox_sweep_age_seconds: float = Field(5.0, ge=0)
    schedule_check_seconds: float = Field(60.0, gt=0)
    notification_purge_seconds: float = Field(3600.0, gt=0)
    stale_job_check_seconds: float = Field(300.0, gt=0)
    beat_schedule_file: str = "var/celerybeat-schedule"
    # Test hook: report building waits this long first (to kill a worker mid-report).
    report_delay_seconds: float = Field(0.0, ge=0)

    @field_validator("publish_rate", "upload_rate")
    @classmethod
    def _one_rate(cls, value: str, info: ValidationInfo) -> str:
        try:
            parse_rate(value)
        except ValueError as exc:
            raise ValueError(f"FINRT_{str(info.field_name).upper()}: {exc}") from None
        return value.strip()

    @model_validator(mode="after")
    def _secret_required_outside_development(self) -> Settings:
        if self.env != "development" and len(self.jwt_secret) < 16:
            raise ValueError(
                "FINRT_JWT_SECRET must be set (16 characters or more) outside `finrt dev`"
            )
        return self


def parse_rate(value: str) -> RateLimitItem | None:
    """One rate such as ``100/second`` or ``10 per minute``; None for an empty string."""
    text = value.strip()
    if not text:
        return None
    try:
        items = parse_many(text)
    except ValueError:
        items = []
    if len(items) != 1 or items[0].amount < 1:
        raise ValueError(
            f"{value!r} is not one rate: write it like '100/second' or '10 per minute' "
            "(a count of 1 or more per second, minute, hour or day), or leave it empty for no "
            "limit"
        )
    return items[0]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
