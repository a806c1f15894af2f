"""The ``finrt`` command."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="FinVision Realtime: live dashboard events and notifications.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _settings(*, signs_tokens: bool = True) -> Any:
    """Every setting, validated before the command does anything: a bad one is one line naming
    the variable and what it accepts, and exit status 2. What ``finrt dev`` recorded under
    ``./var/`` fills in what the environment does not set."""
    import os
    import secrets

    from pydantic import ValidationError

    from core.settings import get_settings, settings_problem
    from finrt._devfiles import configured, use_recorded

    used = use_recorded()
    if not signs_tokens and not configured("FINRT_JWT_SECRET"):
        # This command neither signs nor checks a token: any valid secret will do.
        os.environ["FINRT_JWT_SECRET"] = secrets.token_urlsafe(48)
    get_settings.cache_clear()
    try:
        settings = get_settings()
    except ValidationError as exc:
        typer.echo(f"configuration error: {settings_problem(exc)}", err=True)
        raise typer.Exit(2) from None
    _SOURCES.update(used)
    return settings


# Settings taken from ./var/ (what `finrt dev` recorded), for clearer errors.
_SOURCES: dict[str, Any] = {}


def _redis_unreachable(url: str, exc: BaseException) -> typer.Exit:
    from finrt._cli import safe_url

    where = safe_url(url)
    if path := _SOURCES.get("FINRT_REDIS_URL"):
        where += f" (recorded by `finrt dev` in {path}: is it still running?)"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _fail(f"Redis is not reachable at {where}: {text}")


def _note_other_redis(url: str) -> None:
    from finrt._devfiles import warn_other_redis

    if "FINRT_REDIS_URL" not in _SOURCES:
        warn_other_redis(url)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port", min=1, max=65535)] = 8000,
    workers: Annotated[
        str,
        typer.Option(
            help="processes serving the port, each with its own hub; auto: one per core",
            envvar="FINRT_API_WORKERS",
        ),
    ] = "1",
) -> None:
    """Run the API server (uvicorn)."""
    import uvicorn

    from api.ws import MAX_FRAME
    from core.logs import log_config
    from finrt._procs import listen_problem

    count = _worker_count(workers)
    s = _settings()
    if problem := listen_problem(host, port):
        raise _fail(*problem)
    uvicorn.run(
        "api.app:create_asgi",
        factory=True,
        host=host,
        port=port,
        loop="uvloop",
        # httptools, with bounds on header size and time (api/http_guard.py).
        http="api.http_guard:GuardedHttpToolsProtocol",
        # A WebSocket message over the application's frame limit is refused by the protocol
        # (close 1009) instead of being buffered first (uvicorn's default: 16 MiB).
        ws_max_size=MAX_FRAME,
        log_config=log_config(s.log_level, s.log_json),
        timeout_graceful_shutdown=5,
        backlog=4096,
        # N > 1: uvicorn's supervisor shares one listening socket between N processes and
        # passes SIGTERM on to all of them (each drains its own streams).
        workers=count,
    )


def _worker_count(value: str) -> int:
    if value.strip().lower() == "auto":
        return os.cpu_count() or 1
    if not value.strip().isdigit() or int(value) < 1:
        raise _fail(f"--workers must be a whole number of 1 or more, or auto: {value!r}", 2)
    return int(value)


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic)."""
    from finrt._cli import database_problem, safe_url
    from models.migrate import upgrade

    s = _settings(signs_tokens=False)
    try:
        upgrade(s.database_url)
    except Exception as exc:
        where = safe_url(s.database_url)
        raise _fail(f"migrating {where} failed: {database_problem(exc)}") from None
    typer.echo("database is up to date")


@app.command()
def token(
    user_id: Annotated[str, typer.Argument(help="the token's subject")],
    ttl: Annotated[int, typer.Option(help="lifetime in seconds", min=1)] = 3600,
    scope: Annotated[str, typer.Option(help="space-separated scopes, e.g. publish")] = "",
) -> None:
    """Print a signed JWT for USER_ID."""
    from api.auth import issue_token

    s = _settings()
    if s.jwt_asymmetric:
        # The API then verifies with the provider's keys only: a token signed here is a 401.
        name = "FINRT_JWT_JWKS_URL" if s.jwt_jwks_url else "FINRT_JWT_PUBLIC_KEY_FILE"
        raise _fail(
            f"{name} is set: the API accepts only tokens from the identity provider, "
            "so get one from it (finrt token signs with FINRT_JWT_SECRET)",
            2,
        )
    try:
        typer.echo(
            issue_token(user_id, s.jwt_secret, s.jwt_algorithm, ttl_seconds=ttl, scopes=scope)
        )
    except ValueError as exc:
        raise _fail(str(exc), 2) from None


@app.command()
def publish(
    channel: Annotated[str, typer.Argument(help="user:<id> or file:<id>")],
    type: Annotated[str, typer.Argument(help="event type, e.g. metric_update")],
    data: Annotated[str, typer.Argument(help="the event's data as JSON")],
    key: Annotated[str | None, typer.Option(help="conflation key")] = None,
) -> None:
    """Publish one event and print its id."""
    import redis

    from streams.envelope import InvalidEvent
    from streams.publish import publish as do_publish

    s = _settings(signs_tokens=False)
    _note_other_redis(s.redis_url)
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise _fail(f"DATA is not JSON: {exc}", 2) from None
    try:
        typer.echo(do_publish(channel, type, payload, key))
    except InvalidEvent as exc:
        raise _fail(str(exc), 2) from None
    except redis.RedisError as exc:
        raise _redis_unreachable(s.redis_url, exc) from None


@app.command()
def tail(
    channel: Annotated[str, typer.Argument(help="user:<id> or file:<id>")],
    from_id: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="print history after this id first; 'oldest' (or 0-0): all history still holds",
        ),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api",
            envvar="FINRT_API_URL",
            help="stream through this API (finrt.client, with a token) instead of Redis directly",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="FINRT_TOKEN", help="default: one minted with FINRT_JWT_SECRET"),
    ] = None,
) -> None:
    """Print a channel's events as they arrive (one envelope per line): from Redis directly, or
    with --api through the API's stream (resuming across API restarts)."""
    import os

    import redis

    from finrt._cli import print_history
    from finrt.client import StreamRefused
    from finrt.tail import ApiUnreachable, run_tail, run_tail_redis

    s = _settings(signs_tokens=False)
    _note_other_redis(s.redis_url)
    try:
        start = from_id
        if from_id is not None:
            # History first, with a progress bar on a terminal; then live from where it ended.
            start = asyncio.run(print_history(s, channel, from_id))
        if api_url is None:
            asyncio.run(run_tail_redis(s, channel, start))
        else:
            asyncio.run(run_tail(s, channel, start, api_url=api_url, token=token))
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader went away (``finrt tail ... | head``): not an error; keep exit quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    except StreamRefused as exc:
        raise _fail(f"the API refused the stream: {exc}", 2) from None
    except ApiUnreachable as exc:
        raise _fail(str(exc)) from None
    except (OSError, ConnectionError, RuntimeError, redis.RedisError) as exc:
        raise _redis_unreachable(s.redis_url, exc) from None


@app.command()
def notify(
    user_id: Annotated[str, typer.Argument(help="who receives it")],
    type: Annotated[str, typer.Option("--type", help="e.g. system_update")],
    title: Annotated[str, typer.Option(help="short title")],
    message: Annotated[str, typer.Option(help="the text")],
    priority: Annotated[str, typer.Option(help="low, normal, high or urgent")] = "normal",
    dedupe_key: Annotated[str | None, typer.Option(help="create it only once for this key")] = None,
    group: Annotated[
        str | None,
        typer.Option(help="digest group: more of this type and group within the window join it"),
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option(help="ISO 8601 with a time zone; it vanishes then")
    ] = None,
) -> None:
    """Create a notification for USER_ID (stored, then sent to its open streams)."""
    from api.auth import SUB_RE
    from finrt._cli import database_problem, is_database_error
    from models import session_scope
    from services.notify import create_notification

    s = _settings(signs_tokens=False)
    if not SUB_RE.match(user_id):
        raise _fail("user id must be 1-64 of letters, digits and _.@-", 2)
    expires = None
    if expires_at is not None:
        try:
            expires = datetime.fromisoformat(expires_at)
        except ValueError:
            raise _fail("--expires-at must be an ISO 8601 date and time", 2) from None
    _note_other_redis(s.redis_url)
    unsent = _PublishFailures()
    try:
        with unsent, session_scope(s.database_url) as session:
            n = create_notification(
                session,
                user_id,
                type,
                title,
                message,
                priority=priority,
                dedupe_key=dedupe_key,
                expires_at=expires,
                group=group,
            )
            ident = n.id
    except ValueError as exc:
        if is_database_error(exc):  # SQLAlchemy's ArgumentError is a ValueError too
            raise _fail(database_problem(exc)) from None
        raise _fail(str(exc), 2) from None
    except Exception as exc:
        if is_database_error(exc):
            raise _fail(database_problem(exc)) from None
        raise
    typer.echo(ident)
    if unsent.reason is not None:
        from finrt._cli import safe_url

        typer.echo(
            f"note: notification {ident} is stored, but Redis at {safe_url(s.redis_url)} did "
            f"not take it ({unsent.reason}): the outbox sweeper of `finrt beat` (or `finrt "
            "worker -B`) sends it once Redis answers",
            err=True,
        )


@app.command()
def stats() -> None:
    """Notifications of the last day by type: created, delivered live, seen, read, acted on,
    and the delivery and interaction rates."""
    from finrt._stats import print_stats

    s = _settings(signs_tokens=False)
    print_stats(s, typer.echo, _fail)


class _PublishFailures:
    """Catches the outbox's "publishing after commit failed" record (a page of redis-py
    traceback on a terminal) so the command can say it in one line instead."""

    def __init__(self) -> None:
        import logging

        self.reason: str | None = None
        self.logger = logging.getLogger("finrt.outbox")
        outer = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                exc = record.exc_info[1] if record.exc_info else None
                text = str(exc).strip() if exc is not None else record.getMessage()
                outer.reason = (text.splitlines() or [type(exc).__name__])[0]

        self.handler = _Handler()

    def __enter__(self) -> _PublishFailures:
        self.logger.addHandler(self.handler)
        self.logger.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.propagate = True


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    no_relay: Annotated[
        bool, typer.Option("--no-relay", help="do not start the PostgreSQL relay beside it")
    ] = False,
) -> None:
    """Run a Celery worker (extra arguments go to celery) and, on PostgreSQL, the relay."""
    from workers.cli import run_worker

    _settings()
    run_worker(list(ctx.args), relay=not no_relay)


@app.command()
def relay() -> None:
    """Publish database events (PostgreSQL triggers) as they commit; one active per database."""
    from workers.relay import run_relay

    run_relay(_settings())


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def beat(ctx: typer.Context) -> None:
    """Run the Celery beat scheduler (extra arguments go to celery)."""
    from workers.cli import run_beat

    _settings()
    run_beat(list(ctx.args))


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="the API's port", min=1, max=65535)] = 8000,
    seed: Annotated[bool, typer.Option(help="seed a demo user with a processed file")] = True,
) -> None:
    """Run everything on embedded defaults: Redis (unless FINRT_REDIS_URL is set), a worker
    with beat, and the API. Ctrl-C stops it all."""
    from pydantic import ValidationError

    from core.settings import JWT_SECRET_MIN, Settings, settings_problem
    from finrt._devcluster import configured_cluster
    from finrt._devfiles import configured
    from finrt.dev import run_dev

    checked: dict[str, Any] = {"env": "development", "jwt_secret": "x" * JWT_SECRET_MIN}
    if configured_cluster() and not configured("FINRT_CELERY_BROKER_URL"):
        checked["celery_broker_url"] = "redis://127.0.0.1/0"  # dev embeds one beside the cluster
    try:  # every setting checked first (dev makes its own secret: any valid one here)
        Settings(**checked)
    except ValidationError as exc:
        typer.echo(f"configuration error: {settings_problem(exc)}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run_dev(port=port, seed=seed))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
