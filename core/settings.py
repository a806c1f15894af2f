"""Settings: one pydantic-settings class, environment prefix ``FINRT_``, ``.env`` honoured."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlparse

from limits import RateLimitItem, parse_many
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.notification_types import NOTIFICATION_TYPES

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The shortest JWT secret accepted: HS256's key size (PyJWT warns below it); compose says the same.
JWT_SECRET_MIN = 32
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster")
REDIS_URL_FORM = "redis://host:port/db, rediss://..., unix:///path or redis+cluster://host:port,..."


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINRT_", env_file=".env", extra="ignore")

    env: Literal["development", "production", "test"] = "production"
    database_url: str = "sqlite:///./var/finrt.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # The hub's pub/sub link is pinged when idle; unanswered this long, it is dropped and
    # reconnected (a NAT or load balancer may drop an idle connection without a word).
    redis_health_seconds: float = Field(5.0, gt=0)
    # Replicas that must hold an event before its publish succeeds (Redis WAIT); 0: do not wait.
    # Replication is asynchronous: without it, a primary that dies right after a publish may
    # take the event with it (clients that cannot be proven complete then get a reset).
    redis_min_replicas_ack: int = Field(0, ge=0)
    # How long a publish waits for those replicas before it fails (and the outbox retries).
    redis_replicas_ack_ms: int = Field(1000, ge=1)
    # Every Redis key and pub/sub channel this service uses starts with this prefix.
    redis_prefix: str = "finrt"
    jwt_secret: str = ""
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    # Either of these selects tokens signed by an identity provider (RS256 or ES256) instead
    # of the shared secret: a PEM public key, or the provider's JWKS URL.
    jwt_public_key_file: str = ""
    jwt_jwks_url: str = ""
    # Checked when set: the token's `aud` must contain it, its `iss` must equal it.
    jwt_audience: str = ""
    jwt_issuer: str = ""
    # Origins (comma-separated, e.g. https://app.example.com) whose pages may call the API
    # and open streams; empty: none.
    cors_origins: str = ""
    history_maxlen: int = Field(1000, ge=1)
    # A channel's history is dropped after this long without a new event (0: kept for ever).
    history_ttl_seconds: int = Field(7 * 24 * 3600, ge=0)
    ping_seconds: float = Field(15.0, gt=0)
    # Reconnect hint sent to SSE clients (the `retry:` field), milliseconds.
    retry_ms: int = Field(2000, ge=0)
    client_buffer: int = Field(1000, ge=1)
    max_streams_per_user: int = Field(20, ge=1)
    # Streams hold leases in Redis renewed this often (a third of it), so the stream limit
    # counts across every API process and a killed process' streams free within this long.
    stream_lease_seconds: float = Field(30.0, gt=0)
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
    report_rate: str = "10/minute"
    # What a client may cost before it is known (api/http_guard.py, api/body_guard.py):
    # request line and headers, the time to send them, and a request body (uploads excepted:
    # FINRT_UPLOAD_MAX_BYTES).
    max_header_bytes: int = Field(32 * 1024, ge=4096)
    header_timeout_seconds: float = Field(10.0, gt=0)
    # A connection whose sent data stays unacknowledged this long is dropped by the kernel
    # (TCP_USER_TIMEOUT, Linux): its client vanished without a word. 0: the kernel's default
    # (about 15 minutes of retransmissions).
    client_gone_seconds: float = Field(30.0, ge=0, le=3600)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    log_json: bool = False
    log_level: str = "INFO"
    # Where people reach the service (the links `finrt dev` prints); empty: the local address.
    public_url: str = ""

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
    # A snooze ends at least this long from now (at most 90 days); tests shorten it.
    snooze_min_seconds: float = Field(60.0, ge=0)
    # How often beat wakes due snoozes and announces expiries (so within a few seconds).
    inbox_tick_seconds: float = Field(1.0, gt=0)
    stale_job_check_seconds: float = Field(300.0, gt=0)
    # Notifications of one group within this many seconds of the first become one digest.
    digest_window_seconds: float = Field(60.0, ge=0)
    # Notification types nobody can mute, besides the built-in ones (comma-separated names).
    critical_types: str = ""
    beat_schedule_file: str = "var/celerybeat-schedule"
    # Test hook: report building waits this long first (to kill a worker mid-report).
    report_delay_seconds: float = Field(0.0, ge=0)

    @field_validator("publish_rate", "upload_rate", "report_rate")
    @classmethod
    def _one_rate(cls, value: str, info: ValidationInfo) -> str:
        try:
            parse_rate(value)
        except ValueError as exc:
            raise ValueError(f"FINRT_{str(info.field_name).upper()}: {exc}") from None
        return value.strip()

    @field_validator("critical_types")
    @classmethod
    def _type_names(cls, value: str) -> str:
        for name in (n.strip() for n in value.split(",")):
            if name and name not in NOTIFICATION_TYPES:
                raise ValueError(
                    f"FINRT_CRITICAL_TYPES: {name[:40]!r} is not a notification type "
                    f"(comma-separated, among {','.join(NOTIFICATION_TYPES)})"
                )
        return value

    @property
    def critical_type_list(self) -> list[str]:
        return [n.strip() for n in self.critical_types.split(",") if n.strip()]

    @property
    def jwt_asymmetric(self) -> bool:
        return bool(self.jwt_public_key_file or self.jwt_jwks_url)

    @property
    def cors_origin_list(self) -> list[str]:
        return [_browser_origin(o) for o in self.cors_origins.split(",") if o.strip()]

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in (o.strip() for o in value.split(",")):
            if origin and not re.match(r"^https?://[^/\s]+/?\Z", origin):
                raise ValueError(
                    f"FINRT_CORS_ORIGINS: {origin!r} is not an origin such as "
                    "https://app.example.com (scheme and host, optional port, no path)"
                )
        return value

    @model_validator(mode="after")
    def _one_way_to_verify_tokens(self) -> Settings:
        if self.jwt_public_key_file and self.jwt_jwks_url:
            raise ValueError("set FINRT_JWT_PUBLIC_KEY_FILE or FINRT_JWT_JWKS_URL, not both")
        if self.jwt_jwks_url and not re.match(r"^https?://", self.jwt_jwks_url):
            raise ValueError("FINRT_JWT_JWKS_URL must be an http(s) URL")
        if self.jwt_public_key_file:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            try:
                load_pem_public_key(Path(self.jwt_public_key_file).read_bytes())
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"FINRT_JWT_PUBLIC_KEY_FILE: not a readable PEM public key: {exc}"
                ) from None
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _one_level(cls, value: Any) -> str:
        level = str(value).strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"not a log level (accepted, in any case: {', '.join(LOG_LEVELS)})")
        return level

    @field_validator("database_url")
    @classmethod
    def _a_database_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        expected = "expected sqlite:///path or postgresql+psycopg://user:password@host/db"
        try:
            make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(
                f"FINRT_DATABASE_URL is not a database URL ({expected}): {safe_url(value)!r}"
            ) from None
        return value

    @field_validator("celery_broker_url")
    @classmethod
    def _a_broker_url(cls, value: str) -> str:
        scheme = urlparse(value).scheme if value else ""
        if value and scheme not in ("redis", "rediss", "amqp", "amqps", "pyamqp"):
            raise ValueError(
                "FINRT_CELERY_BROKER_URL is not a broker URL (expected redis://..., rediss://... "
                f"or amqp://user:password@host:5672//; empty: FINRT_REDIS_URL): {safe_url(value)!r}"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, value: str) -> str:
        if problem := redis_url_problem(value):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _soft_time_limit_first(self) -> Settings:
        # Celery's pool applies the hard limit only after the soft one: a soft limit at or
        # past the hard one would quietly stretch the hard one.
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError(
                f"FINRT_TASK_SOFT_TIME_LIMIT ({self.task_soft_time_limit}) must be below "
                f"FINRT_TASK_TIME_LIMIT ({self.task_time_limit}): the soft limit asks the job "
                "to stop, the hard one stops its process some seconds later"
            )
        return self

    @model_validator(mode="after")
    def _broker_beside_a_cluster(self) -> Settings:
        if self.redis_url.startswith("redis+cluster://") and not self.celery_broker_url:
            raise ValueError(
                "FINRT_CELERY_BROKER_URL must be set when FINRT_REDIS_URL is a Redis Cluster "
                "(Celery cannot use a cluster as its broker): a plain redis://host:port/db or "
                "amqp://user:password@host:5672//"
            )
        return self

    @model_validator(mode="after")
    def _secret_required_outside_development(self) -> Settings:
        if self.jwt_asymmetric:
            return self
        if self.env != "development" and len(self.jwt_secret) < JWT_SECRET_MIN:
            raise ValueError(
                f"FINRT_JWT_SECRET must be set ({JWT_SECRET_MIN} characters or more) outside "
                "`finrt dev`; "
                "commands run where `finrt dev` ran use its var/jwt_secret"
            )
        return self


def _browser_origin(origin: str) -> str:
    """``origin`` as a browser sends it in ``Origin`` (RFC 6454): host in lower case, no port
    when it is the scheme's default; CORS compares origins as exact strings."""
    scheme, _, host = origin.strip().rstrip("/").partition("://")
    host = host.lower()
    default = ":443" if scheme == "https" else ":80"
    if host.endswith(default):
        host = host[: -len(default)]
    return f"{scheme}://{host}"


def safe_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (it goes to a terminal or log)."""
    try:
        parsed = urlparse(url)
        if parsed.password is None:
            return url
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
        return parsed._replace(netloc=netloc).geturl()
    except ValueError:
        return "<unparsable URL>"


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a Redis URL (one line naming FINRT_REDIS_URL), or None."""
    expected = f"expected {REDIS_URL_FORM}"
    if url.startswith("redis+cluster://"):
        return _cluster_url_problem(url, expected)
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError:
        return f"FINRT_REDIS_URL is not a Redis URL ({expected}): {safe_url(url)!r}"
    if parsed.scheme not in REDIS_SCHEMES:
        return f"FINRT_REDIS_URL is not a Redis URL ({expected}): {safe_url(url)!r}"
    if parsed.scheme != "unix" and not parsed.netloc:
        return f"FINRT_REDIS_URL names no host ({expected}): {safe_url(url)!r}"
    return None


def _cluster_url_problem(url: str, expected: str) -> str | None:
    netloc = url[len("redis+cluster://") :].split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    for seed in netloc.split(","):
        host, sep, port = seed.strip().rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            return (
                f"FINRT_REDIS_URL names a cluster seed that is not host:port ({expected}): "
                f"{seed!r} in {safe_url(url)!r}"
            )
    return None


def _accepted(name: str) -> str:
    """What a setting accepts, in words, from its type and bounds."""
    field = Settings.model_fields.get(name)
    if field is None:
        return ""
    choices = get_args(field.annotation)
    if choices and all(isinstance(c, str) for c in choices):
        return "one of " + ", ".join(choices)
    kind = {int: "a whole number", float: "a number", bool: "true or false"}.get(
        field.annotation,  # type: ignore[arg-type]
        "",
    )
    bounds = []
    for meta in field.metadata:
        for attr, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{word} {getattr(meta, attr)}")
    return " ".join([kind, *bounds]).strip()


def settings_problem(exc: ValidationError) -> str:
    """The first problem of a failed ``Settings()`` as one line naming the variable, its value's
    problem and what is accepted (pydantic's own message names neither)."""
    err = exc.errors()[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not err["loc"]:  # a check across settings (the JWT secret): its message says it all
        return msg
    name = str(err["loc"][0])
    variable = f"FINRT_{name.upper()}"
    if msg.startswith(variable):
        return msg
    value = err.get("input")
    shown = "" if name.endswith("secret") or isinstance(value, dict) else f"={value!r}"
    accepted = _accepted(name)
    if accepted and "accepted" not in msg:
        return f"{variable}{shown}: {msg} (accepted: {accepted})"
    return f"{variable}{shown}: {msg}"


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
