"""The PostgreSQL relay: publishes what the database-events triggers record, within
milliseconds of the commit, and asks for recalculations.

The triggers (migration 0006) write outbox rows for changes made outside the application and
``NOTIFY finrt_outbox``; PostgreSQL delivers the notification at commit (never for a rolled-back
change). The relay LISTENs, publishes unpublished outbox rows (with their dedupe tokens: a row
published twice reaches Redis once) and, before it publishes rows saying a file's rows or
parameters changed, queues one ``finrt.recalculate_file`` per file per burst
(workers/recalculations.py: queued in the broker before the rows are marked, so a relay that
dies or loses Redis loses no recalculation).

One relay is active per database schema: it holds a session-level advisory lock on its
connection; the others wait on standby and try the lock every second. A relay that dies loses
its connection, so its lock is released and a standby takes over; rows it left unpublished are
published by the new one (it catches up at once) or by the outbox sweeper.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.engine import make_url

from core.settings import Settings, safe_url
from models.outbox import flush_outbox
from workers.recalculations import Recalculations

log = logging.getLogger("finrt.relay")

LISTEN_CHANNEL = "finrt_outbox"
LOCK_CLASS = 0x66696E  # "fin": the advisory lock's first key; the second is the schema's hash
BATCH = 1000
# A LISTEN connection is idle for long stretches: without TCP keepalives a connection that died
# without a word (a NAT or firewall dropping the idle flow, a cable, a host gone) goes unnoticed
# for hours on both ends (the kernel's default is two hours before the first probe): the relay
# would hear no notification and publish only at its once-a-second poll, and the server would
# keep the dead session's advisory lock from the standbys. Both ends probe after KEEPALIVE_IDLE
# seconds of silence and give up after KEEPALIVE_COUNT unanswered probes KEEPALIVE_INTERVAL
# apart (about 30 s).
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 15, 5, 3
# The same failure is logged once, then again at most this often while it lasts.
REPEAT_LOG_SECONDS = 60.0


def psycopg_dsn(url: str) -> str:
    """The SQLAlchemy URL as a libpq URI (the driver name dropped)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def listen_conninfo(url: str) -> str:
    """The relay's LISTEN connection: the database URL with this end's keepalives, and named
    ``finrt-relay`` in ``pg_stat_activity``, unless the URL sets them itself."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    dsn = psycopg_dsn(url)
    given = conninfo_to_dict(dsn)
    ours: dict[str, str | int] = {
        "application_name": "finrt-relay",
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE,
        "keepalives_interval": KEEPALIVE_INTERVAL,
        "keepalives_count": KEEPALIVE_COUNT,
    }
    return make_conninfo(dsn, **{k: v for k, v in ours.items() if k not in given})


class Relay:
    def __init__(
        self,
        settings: Settings,
        *,
        standby_seconds: float = 1.0,
        poll_seconds: float = 1.0,
    ) -> None:
        self.settings, self.url = settings, settings.database_url
        self.standby_seconds, self.poll_seconds = standby_seconds, poll_seconds
        self.recalculations = Recalculations(settings)
        self.stop = threading.Event()
        self.active = False
        self._failure: tuple[str, float] | None = None  # the last failure logged, and when

    def run(self) -> None:
        """Until :attr:`stop` is set: wait for the lock, then relay; reconnect after errors."""
        if make_url(self.url).get_backend_name() != "postgresql":
            log.info("relay: the database is not PostgreSQL; nothing to relay")
            return
        while not self.stop.is_set():
            try:
                self._session()
            except Exception as exc:
                self.active = False
                self._log_failure(exc)
                self.stop.wait(self.standby_seconds)

    def _log_failure(self, exc: Exception) -> None:
        """One line per failure (no traceback for what operators meet: a database, Redis or
        broker that cannot be reached), repeated at most every REPEAT_LOG_SECONDS."""
        import psycopg
        from kombu.exceptions import OperationalError as BrokerError
        from redis.exceptions import RedisError
        from sqlalchemy.exc import DBAPIError

        # The LISTEN connection fails with psycopg's error; a flush, through SQLAlchemy's pool,
        # with it wrapped (a database that takes no more connections, or went away between).
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        if isinstance(cause, psycopg.OperationalError):
            text = str(cause).strip() or type(cause).__name__
            what = f"the database at {safe_url(self.url)}: {text.splitlines()[0]}"
        elif isinstance(exc, RedisError | BrokerError | OSError):
            what = f"Redis or the task broker: {exc!r}"
        else:
            log.warning("relay: unexpected error; retrying", exc_info=True)
            return
        now = time.monotonic()
        if (
            self._failure
            and self._failure[0] == what
            and now - self._failure[1] < REPEAT_LOG_SECONDS
        ):
            return
        self._failure = (what, now)
        log.warning("relay: cannot reach %s; retrying every %.0f s", what, self.standby_seconds)

    def _session(self) -> None:
        import psycopg

        with psycopg.connect(listen_conninfo(self.url), autocommit=True) as conn:
            # The server's end of it (settings a session may change), in one round trip.
            conn.execute(
                "SELECT set_config('tcp_keepalives_idle', %s, false),"
                " set_config('tcp_keepalives_interval', %s, false),"
                " set_config('tcp_keepalives_count', %s, false)",
                (str(KEEPALIVE_IDLE), str(KEEPALIVE_INTERVAL), str(KEEPALIVE_COUNT)),
            )
            lock = "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))"
            while not self.stop.is_set():
                row = conn.execute(lock, (LOCK_CLASS,)).fetchone()
                if row is not None and row[0]:
                    break
                self.stop.wait(self.standby_seconds)
            else:
                return
            self.active = True
            log.info("relay: active (holding the advisory lock)")
            conn.execute(f"LISTEN {LISTEN_CHANNEL}")
            self._flush()  # rows left by a relay that died, or written while none listened
            self._failure = None
            while not self.stop.is_set():
                # Wake at the first notification, then take those already queued behind it.
                # Nothing lost if a notification was: every poll also looks for stragglers.
                woken = list(conn.notifies(timeout=self.poll_seconds, stop_after=1))
                if woken:
                    list(conn.notifies(timeout=0.001, stop_after=BATCH))
                self._flush()

    def _flush(self) -> None:
        before = self.recalculations.before_publish
        while flush_outbox(self.url, limit=BATCH, before_publish=before) >= BATCH:
            pass
        for file_id in self.recalculations.queued:
            log.info("relay: file %s changed outside the application", file_id)
        self.recalculations.queued.clear()


def run_relay(settings: Settings) -> None:
    """``finrt relay``: run in the foreground until SIGTERM or Ctrl-C."""
    import logging.config
    import signal

    from core.logs import log_config

    logging.config.dictConfig(log_config(settings.log_level, settings.log_json))

    relay = Relay(settings)
    signal.signal(signal.SIGTERM, lambda *_: relay.stop.set())
    try:
        relay.run()
    except KeyboardInterrupt:
        relay.stop.set()


def start_relay_thread(settings: Settings) -> Relay:
    """The relay in a daemon thread (``finrt worker``, unless ``--no-relay``)."""
    relay = Relay(settings)
    threading.Thread(target=relay.run, name="finrt-relay", daemon=True).start()
    return relay
