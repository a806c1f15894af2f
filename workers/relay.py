"""The PostgreSQL relay: publishes what the database-events triggers record, within
milliseconds of the commit, and asks for recalculations.

The triggers (migration 0006) write outbox rows for changes made outside the application and
``NOTIFY finrt_outbox``; PostgreSQL delivers the notification at commit (never for a rolled-back
change). The relay LISTENs, publishes unpublished outbox rows (with their dedupe tokens: a row
published twice reaches Redis once) and, for files whose rows or parameters changed, queues one
``finrt.recalculate_file`` task per file per burst (debounced).

One relay is active per database schema: it holds a session-level advisory lock on its
connection; the others wait on standby and try the lock every second. A relay that dies loses
its connection, so its lock is released and a standby takes over; rows it left unpublished are
published by the new one (it catches up at once) or by the outbox sweeper.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import orjson
from sqlalchemy.engine import make_url

from core.settings import Settings
from models.outbox import flush_outbox
from workers.enqueue import send_recalculate

log = logging.getLogger("finrt.relay")

LISTEN_CHANNEL = "finrt_outbox"
LOCK_CLASS = 0x66696E  # "fin": the advisory lock's first key; the second is the schema's hash
BATCH = 1000
RECALC_TYPES = frozenset({"financial_data_update", "parameter_update"})


def psycopg_dsn(url: str) -> str:
    """The SQLAlchemy URL as a libpq URI (the driver name dropped)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Debouncer:
    """Files due for a recalculation: the first change opens a window of ``seconds``; changes
    within it ride along; when it closes the file is due once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._due: dict[int, float] = {}

    def changed(self, file_id: int) -> None:
        self._due.setdefault(file_id, time.monotonic() + self.seconds)

    def take_due(self) -> list[int]:
        now = time.monotonic()
        due = [f for f, at in self._due.items() if at <= now]
        for file_id in due:
            del self._due[file_id]
        return due

    def next_in(self, default: float) -> float:
        if not self._due:
            return default
        return max(0.0, min(min(self._due.values()) - time.monotonic(), default))


class Relay:
    def __init__(
        self,
        settings: Settings,
        *,
        standby_seconds: float = 1.0,
        poll_seconds: float = 1.0,
        debounce_seconds: float = 1.0,
    ) -> None:
        self.settings, self.url = settings, settings.database_url
        self.standby_seconds, self.poll_seconds = standby_seconds, poll_seconds
        self.debounce = Debouncer(debounce_seconds)
        self.stop = threading.Event()
        self.active = False

    def run(self) -> None:
        """Until :attr:`stop` is set: wait for the lock, then relay; reconnect after errors."""
        if make_url(self.url).get_backend_name() != "postgresql":
            log.info("relay: the database is not PostgreSQL; nothing to relay")
            return
        while not self.stop.is_set():
            try:
                self._session()
            except Exception:
                log.warning("relay: connection lost; reconnecting", exc_info=True)
                self.active = False
                self.stop.wait(self.standby_seconds)

    def _session(self) -> None:
        import psycopg

        with psycopg.connect(psycopg_dsn(self.url), autocommit=True) as conn:
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
            while not self.stop.is_set():
                woken = False
                wait = self.debounce.next_in(self.poll_seconds)
                # Wake at the first notification, then take those already queued behind it.
                for note in conn.notifies(timeout=wait, stop_after=1):
                    woken = True
                    self._note(note.payload)
                if woken:
                    for note in conn.notifies(timeout=0.001, stop_after=BATCH):
                        self._note(note.payload)
                if woken:
                    self._flush()
                for file_id in self.debounce.take_due():
                    send_recalculate(self.settings, file_id)
                    log.info("relay: file %s changed outside the application", file_id)
                # Nothing lost if a notification was: every poll also looks for stragglers.
                if not woken:
                    self._flush()

    def _note(self, payload: str) -> None:
        try:
            doc: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        file_id = doc.get("recalc") if isinstance(doc, dict) else None
        if isinstance(file_id, int):
            self.debounce.changed(file_id)

    def _flush(self) -> None:
        while flush_outbox(self.url, limit=BATCH, seen=self._seen) >= BATCH:
            pass

    def _seen(self, channel: str, type: str, data: str) -> None:
        # Also from the rows: a change committed while no relay listened (its notification
        # went to nobody) is recalculated when the next relay catches up.
        if type not in RECALC_TYPES or '"database"' not in data:
            return
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            doc = orjson.loads(data)
            file_id = doc.get("file_id")
            if doc.get("source") == "database" and isinstance(file_id, int):
                self.debounce.changed(file_id)


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
