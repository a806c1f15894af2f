"""Engines and sessions. SQLite (embedded default) and PostgreSQL through one code path."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings

# Execution option of a connection (or engine) that never writes; see _sqlite_begin.
READ_ONLY = "finrt_read_only"
# SQLite lets one transaction write at a time, and every transaction but a READ_ONLY one takes
# the write lock at BEGIN: more writing connections in one process only compete for that lock
# by polling (busy_timeout), unfairly, so under load some wait past the timeout. One writing
# connection per process makes them queue in the pool instead, in turn.
SQLITE_WRITERS = 1
SQLITE_QUEUE_SECONDS = 120


# Every engine this process made, for _forget_parent_connections.
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forget_parent_connections() -> None:
    """In a forked process, let go of the connections pooled by the parent (without closing
    them: they are the parent's), so that each process opens its own. Celery forks its pool
    processes from the worker's main process, and that process uses the database too (a task
    stopped by its hard time limit is recorded failed there): without this, the new pool
    process would talk on the parent's socket (PostgreSQL) or file handle (SQLite), and two
    processes would interleave their queries on one connection. SQLAlchemy's recipe for
    ``os.fork``."""
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_parent_connections)


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    engine = _make_engine(url, read_only=read_only)
    _ENGINES.add(engine)
    return engine


def _make_engine(url: str, *, read_only: bool = False) -> Engine:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
            if read_only:
                kwargs["execution_options"] = {READ_ONLY: True}
            else:
                kwargs.update(
                    pool_size=SQLITE_WRITERS, max_overflow=0, pool_timeout=SQLITE_QUEUE_SECONDS
                )
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling commits a SAVEPOINT that opens a transaction
            # when it is released, so a later rollback would keep that write. Take transactions
            # over (SQLAlchemy's documented recipe) and begin them ourselves, below.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            # WAL lets the API read while a worker writes; foreign keys are off by default.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE: take the write lock up front, so a transaction that reads and then
            # writes never fails with "database is locked" halfway; busy_timeout waits for it.
            # A connection that only reads (READ_ONLY) takes no lock: under WAL it reads a
            # snapshot beside the writers instead of queueing behind them.
            deferred = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

        return engine
    kwargs.update(pool_size=10, max_overflow=20)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _pg_origin(dbapi_conn: Any, _record: Any) -> None:
        # The database-events triggers (migration 0006) record changes made by other clients;
        # the application's writes publish their own events through the outbox, so they are
        # marked as ours and the triggers leave them alone: every change publishes once.
        with dbapi_conn.cursor() as cur:
            cur.execute("SET finrt.origin = 'app'")
        dbapi_conn.commit()

    return engine


@lru_cache(maxsize=4)
def engine_for(url: str) -> Engine:
    return make_engine(url)


@lru_cache(maxsize=4)
def reader_for(url: str) -> Engine:
    """An engine for transactions that only read: on SQLite a pool of its own whose
    transactions take no lock; on PostgreSQL the one engine."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return engine_for(url)
    return make_engine(url, read_only=True)


def session_factory(url: str, *, read_only: bool = False) -> sessionmaker[Session]:
    engine = reader_for(url) if read_only else engine_for(url)
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None, *, read_only: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    ``read_only``: the caller only reads; on SQLite it then reads a snapshot beside the
    writers instead of queueing for the one writing connection (a write in it fails).
    """
    if url is None:
        url = get_settings().database_url
    session = session_factory(url, read_only=read_only)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
