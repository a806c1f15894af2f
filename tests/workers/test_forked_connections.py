"""A forked process (Celery's pool processes are forked from a worker that may have used the
database) opens connections of its own: it never talks on one its parent pooled."""

from __future__ import annotations

import json
import os

import sqlalchemy as sa
from sqlalchemy.pool import QueuePool

from models.db import make_engine
from tests.conftest import DATABASE_URL, PG_SCHEMA


def _backend(conn: sa.Connection) -> object:
    """What tells one database connection from another: PostgreSQL's backend pid, or the
    SQLite connection object itself (the child has a copy of the parent's, at the same
    place; the test holds it, so a new one cannot take its place)."""
    if PG_SCHEMA is not None:
        return conn.scalar(sa.text("SELECT pg_backend_pid()"))
    return conn.connection.dbapi_connection


def _pooled(engine: sa.Engine) -> int:
    """Connections waiting in the engine's pool."""
    assert isinstance(engine.pool, QueuePool)
    return engine.pool.checkedin()


def test_a_forked_process_does_not_reuse_the_parents_pooled_connection():
    # An engine of the test's own, holding exactly one pooled connection: the shared engine's
    # pool may hold several, handed out first in, first out, so "the parent's connection"
    # would not be one connection there.
    engine = make_engine(DATABASE_URL)
    try:
        _check_fork(engine)
    finally:
        engine.dispose()


def _check_fork(engine: sa.Engine) -> None:
    with engine.connect() as conn:  # pooled again when closed: what a fork inherits
        parent = _backend(conn)
    assert _pooled(engine) >= 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it found, then leave at once
        try:
            os.close(read)
            inherited = _pooled(engine)
            with engine.connect() as conn:
                child = _backend(conn)
                conn.scalar(sa.text("SELECT 1"))
            os.write(
                write,
                json.dumps(
                    {"inherited": inherited, "same": child is parent or child == parent}
                ).encode(),
            )
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = json.loads(pipe.read() or b"{}")
    os.waitpid(pid, 0)
    assert report == {"inherited": 0, "same": False}
    # The parent's own connection is intact and still its own.
    with engine.connect() as conn:
        mine = _backend(conn)
        assert mine is parent or mine == parent
        assert conn.scalar(sa.text("SELECT 1")) == 1
