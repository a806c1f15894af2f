"""The ``finrt`` command."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="FinVision Realtime: live dashboard events and notifications.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _settings() -> Any:
    from pydantic import ValidationError

    from core.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        for err in exc.errors():
            typer.echo(f"configuration error: {err['msg']}", err=True)
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
) -> None:
    """Run the API server (uvicorn)."""
    import uvicorn

    from core.logs import log_config

    s = _settings()
    uvicorn.run(
        "api.app:create_asgi",
        factory=True,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=log_config(s.log_level, s.log_json),
        timeout_graceful_shutdown=5,
        backlog=4096,
    )


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic)."""
    from finrt._cli import database_problem, safe_url
    from models.migrate import upgrade

    s = _settings()
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

    from finrt._cli import redis_url_problem, safe_url
    from streams.envelope import InvalidEvent
    from streams.publish import publish as do_publish

    s = _settings()
    if problem := redis_url_problem(s.redis_url):
        raise _fail(problem, 2)
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise _fail(f"DATA is not JSON: {exc}", 2) from None
    try:
        typer.echo(do_publish(channel, type, payload, key))
    except InvalidEvent as exc:
        raise _fail(str(exc), 2) from None
    except redis.RedisError as exc:
        raise _fail(f"Redis is not reachable at {safe_url(s.redis_url)}: {exc}") from None


@app.command()
def tail(
    channel: Annotated[str, typer.Argument(help="user:<id> or file:<id>")],
    from_id: Annotated[
        str | None, typer.Option("--from", help="print history after this id first")
    ] = None,
) -> None:
    """Print a channel's events as they arrive (one envelope per line)."""
    import os

    import redis

    from finrt._cli import print_history, redis_url_problem, safe_url
    from finrt.tail import run_tail

    s = _settings()
    if problem := redis_url_problem(s.redis_url):
        raise _fail(problem, 2)
    try:
        start = from_id
        if from_id is not None:
            # History first, with a progress bar on a terminal; then live from where it ended.
            start = asyncio.run(print_history(s, channel, from_id))
        asyncio.run(run_tail(s, channel, start))
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader went away (``finrt tail ... | head``): not an error; keep exit quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    except (OSError, ConnectionError, RuntimeError, redis.RedisError) as exc:
        raise _fail(f"Redis is not reachable at {safe_url(s.redis_url)}: {exc}") from None


@app.command()
def notify(
    user_id: Annotated[str, typer.Argument(help="who receives it")],
    type: Annotated[str, typer.Option("--type", help="e.g. system_update")],
    title: Annotated[str, typer.Option(help="short title")],
    message: Annotated[str, typer.Option(help="the text")],
    priority: Annotated[str, typer.Option(help="low, normal, high or urgent")] = "normal",
    dedupe_key: Annotated[str | None, typer.Option(help="create it only once for this key")] = None,
) -> None:
    """Create a notification for USER_ID (stored, then sent to its open streams)."""
    from api.auth import SUB_RE
    from finrt._cli import database_problem, is_database_error
    from models import session_scope
    from services.notifications import create_notification

    s = _settings()
    if not SUB_RE.match(user_id):
        raise _fail("user id must be 1-64 of letters, digits and _.@-", 2)
    try:
        with session_scope(s.database_url) as session:
            n = create_notification(
                session, user_id, type, title, message, priority=priority, dedupe_key=dedupe_key
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
    port: Annotated[int, typer.Option(help="the API's port")] = 8000,
    seed: Annotated[bool, typer.Option(help="seed a demo user with a processed file")] = True,
) -> None:
    """Run everything on embedded defaults: Redis (unless FINRT_REDIS_URL is set), a worker
    with beat, and the API. Ctrl-C stops it all."""
    from finrt.dev import run_dev

    raise typer.Exit(run_dev(port=port, seed=seed))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
