"""``finrt dev``: every process on embedded defaults (what ``make run`` starts).

It keeps everything under ``./var/`` (the SQLite database, the JWT secret, the embedded Redis's
append-only files, reports), so a second run picks up where the first stopped. Each child runs
in a process group of its own: Ctrl-C at the terminal reaches only this supervisor, which stops
the API and the worker first and Redis last (SIGTERM, then SIGKILL after a few seconds), so
nothing is cut off from Redis while it shuts down.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from core.settings import JWT_SECRET_MIN, Settings, get_settings
from finrt._console import Console
from finrt._devcluster import BROKER_FILE, cluster_problem, configured_cluster
from finrt._devfiles import (
    PIDS_FILE,
    REDIS_URL_FILE,
    SECRET_FILE,
    VAR,
    configured,
    read_recorded,
    record,
)
from finrt._devfiles import dotenv_sets as _dotenv_sets
from finrt._procs import (
    cwd_of,
    port_in_use,
    process_groups,
    signal_group,
    wait_groups_gone,
    within,
)
from streams.connect import is_cluster

REDIS_DIR = VAR / "redis"
# PIDS_FILE lists the process groups of the running children, so that a run killed with SIGKILL
# has its orphans stopped by the next one (and other commands know a run is on).
DEFAULT_REDIS_PORT = 6379
# When 6379 is taken (the machine's own Redis), the first free port of these: stable across runs.
FALLBACK_REDIS_PORTS = range(6380, 6400)
DEMO_USER = "demo"
DEMO_TOKEN_TTL_SECONDS = 7 * 24 * 3600
STOP_GRACE_SECONDS = 8.0
READY_TIMEOUT_SECONDS = 90.0


class _Stop(Exception):
    """Ctrl-C or SIGTERM: stop everything."""


class DevError(Exception):
    """A clear reason to give up (port taken, Redis unreachable...), printed without a trace."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    reader: threading.Thread


def load_or_create_secret(path: Path = SECRET_FILE) -> tuple[str, bool]:
    """The JWT secret kept under ./var (created once, readable by its owner only), and
    whether it was just created."""
    try:
        secret = path.read_text().strip()
        if len(secret) >= JWT_SECRET_MIN:
            return secret, False
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(48)
    record(path, secret)
    return secret, True


def choose_redis_port(recorded: Path = REDIS_URL_FILE) -> tuple[int, str]:
    """The embedded Redis's port and why: the last run's when free (a browser and the commands
    find it again), else 6379, else the first free of 6380-6399, else any free port."""
    last = read_recorded(recorded)
    if last:
        with contextlib.suppress(ValueError):
            parsed = urlparse(last)
            if parsed.hostname == "127.0.0.1" and parsed.port and not port_in_use(parsed.port):
                return parsed.port, "the same as the last run"
    if not port_in_use(DEFAULT_REDIS_PORT):
        return DEFAULT_REDIS_PORT, "the default"
    for port in FALLBACK_REDIS_PORTS:
        if not port_in_use(port):
            return port, f"{DEFAULT_REDIS_PORT} is taken by another Redis or server"
    from finrt.embedded_redis import free_port

    return free_port(), f"{DEFAULT_REDIS_PORT}-{FALLBACK_REDIS_PORTS[-1]} are taken"


def finrt_command() -> list[str]:
    """How to run ``finrt`` in a child: the console script beside this Python, if any."""
    script = Path(sys.executable).parent / "finrt"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from finrt.cli import main; main()"]


def shown_command() -> str:
    """How the user types ``finrt`` from this directory (``.venv/bin/finrt`` under make)."""
    script = Path(sys.executable).parent / "finrt"
    if not script.exists():
        return "finrt"
    try:
        relative = script.relative_to(Path.cwd())
    except ValueError:
        return str(script)
    return f"./{relative}" if len(relative.parts) == 1 else str(relative)


class DevRunner:
    def __init__(self, port: int, seed: bool, console: Console | None = None) -> None:
        self.port, self.seed = port, seed
        self.console = console or Console()
        self.children: list[Child] = []
        self.env: dict[str, str] = {}
        self.redis_url = ""
        # With a Redis Cluster and no broker configured: the embedded Redis's port, the broker.
        self._broker: tuple[int, str] | None = None
        self._stopping = False
        self._requested = False
        self._force = False
        self._shielded = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def public_url(self) -> str:
        """Where the printed links point: FINRT_PUBLIC_URL when set (a proxy, a tunnel)."""
        return (os.environ.get("FINRT_PUBLIC_URL") or self.base_url).rstrip("/")

    def say(self, text: str) -> None:
        self.console.line("dev", text)

    # -- signals: Ctrl-C and SIGTERM end the run, but never halfway through starting a child

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping:
            self._force = True  # a second Ctrl-C: no more waiting
            return
        self._requested = True
        if not self._shielded:
            raise _Stop(signal.Signals(signum).name)

    @contextlib.contextmanager
    def _shield(self) -> Iterator[None]:
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1
        if self._requested and not self._shielded and not self._stopping:
            raise _Stop("signal")

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        code = 0
        try:
            self._start_all()
            self._watch()
        except _Stop:
            self.console.raw("")
            self.say("stopping (Ctrl-C again to kill at once)")
        except DevError as exc:
            self.say(f"error: {exc}")
            code = 1
        finally:
            self._stopping = True
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _start_all(self) -> None:
        os.environ["FINRT_ENV"] = "development"
        VAR.mkdir(exist_ok=True)
        self._stop_leftovers()
        if port_in_use(self.port):
            raise DevError(
                f"port {self.port} is already in use on 127.0.0.1 (another `finrt dev` or "
                f"server?): stop it, or choose another port with `finrt dev --port "
                f"{self.port + 1}`"
            )
        settings = self._settings()
        self._migrate(settings.database_url)
        self._start_redis(settings)
        worker = ["worker", "-B", "--concurrency", "2", "--without-mingle", "--without-gossip"]
        self._spawn("worker", worker)
        self._spawn("api", ["api", "--host", "127.0.0.1", "--port", str(self.port)])
        self._wait_api_ready()
        token = self._demo_token(settings)
        file_id = self._seed_demo(token) if self.seed else None
        self._banner(token, file_id)

    def _settings(self) -> Settings:
        from pydantic import ValidationError

        if not os.environ.get("FINRT_JWT_SECRET") and not _dotenv_sets("FINRT_JWT_SECRET"):
            os.environ["FINRT_JWT_SECRET"], created = load_or_create_secret()
            kept = "created; kept for the next run" if created else "reused"
            self.say(f"JWT secret: {SECRET_FILE} ({kept})")
        if configured_cluster() and not configured("FINRT_CELERY_BROKER_URL"):
            # A cluster cannot be Celery's broker: the embedded Redis will be (a plain Redis
            # beside the cluster), so the settings see one from the start.
            self._broker = choose_redis_port(BROKER_FILE)
            os.environ["FINRT_CELERY_BROKER_URL"] = f"redis://127.0.0.1:{self._broker[0]}/0"
        get_settings.cache_clear()
        try:
            settings = get_settings()
        except ValidationError as exc:
            from core.settings import settings_problem

            raise DevError(f"configuration error: {settings_problem(exc)}") from None
        if settings.public_url:
            os.environ["FINRT_PUBLIC_URL"] = settings.public_url
        self.env = dict(os.environ)
        self.env.update(
            {
                "FINRT_ENV": "development",
                "FINRT_JWT_SECRET": settings.jwt_secret,
                "PYTHONUNBUFFERED": "1",
            }
        )
        # The outbox sweeper is a safety net for a Redis that was down; every 5 s (the default)
        # its log lines would bury the console. A minute is plenty for an embedded Redis.
        if not os.environ.get("FINRT_OUTBOX_SWEEP_SECONDS"):
            self.env["FINRT_OUTBOX_SWEEP_SECONDS"] = "60"
        return settings

    def _migrate(self, url: str) -> None:
        from finrt._cli import database_problem, safe_url
        from models.migrate import upgrade

        try:
            upgrade(url)
        except Exception as exc:
            raise DevError(f"migrating {safe_url(url)} failed: {database_problem(exc)}") from None
        self.say(f"database {safe_url(url)} is up to date")

    def _start_redis(self, settings: Settings) -> None:
        from finrt._cli import safe_url
        from finrt.embedded_redis import redis_answers

        if is_cluster(settings.redis_url):
            return self._start_cluster(settings)
        BROKER_FILE.unlink(missing_ok=True)
        if os.environ.get("FINRT_REDIS_URL") or _dotenv_sets("FINRT_REDIS_URL"):
            url = settings.redis_url
            parsed = urlparse(url)
            if parsed.scheme not in ("redis", "rediss") or not redis_answers(
                parsed.hostname or "127.0.0.1", parsed.port or 6379, timeout=2
            ):
                raise DevError(
                    f"FINRT_REDIS_URL={safe_url(url)} does not answer; unset it to use an "
                    "embedded Redis"
                )
            self.redis_url = url
            record(REDIS_URL_FILE, url)
            self.say(f"using the Redis at {safe_url(url)} (FINRT_REDIS_URL; in {REDIS_URL_FILE})")
            return
        port, why = choose_redis_port()
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        # Recorded before it starts: every `finrt` command run here now talks to this Redis.
        record(REDIS_URL_FILE, self.redis_url)
        self.say(
            f"Redis: embedded on port {port} ({why}); recorded in {REDIS_URL_FILE} for the "
            "other finrt commands run here"
        )
        self._start_embedded(port)
        self.env["FINRT_REDIS_URL"] = self.redis_url
        os.environ["FINRT_REDIS_URL"] = self.redis_url

    def _start_cluster(self, settings: Settings) -> None:
        """Events on the Redis Cluster of FINRT_REDIS_URL; Celery's broker beside it."""
        from finrt._cli import safe_url

        if problem := cluster_problem(settings.redis_url):
            raise DevError(problem)
        self.redis_url = settings.redis_url
        record(REDIS_URL_FILE, self.redis_url)
        record(BROKER_FILE, settings.celery_broker_url)
        self.say(
            f"events: the Redis Cluster at {safe_url(self.redis_url)} (FINRT_REDIS_URL; in "
            f"{REDIS_URL_FILE})"
        )
        if self._broker is None:
            self.say(
                f"Celery broker: {safe_url(settings.celery_broker_url)} "
                f"(FINRT_CELERY_BROKER_URL; in {BROKER_FILE})"
            )
            return
        port, why = self._broker
        self.say(
            f"Celery broker: an embedded Redis on port {port} ({why}), beside the cluster; "
            f"recorded in {BROKER_FILE}"
        )
        self._start_embedded(port)
        self.env["FINRT_CELERY_BROKER_URL"] = settings.celery_broker_url

    def _start_embedded(self, port: int) -> None:
        from finrt.embedded_redis import redis_answers

        self._spawn(
            "redis",
            ["-m", "finrt._procs", "redis", str(port), str(REDIS_DIR)],
            python=True,
        )
        deadline = time.monotonic() + 30
        while not redis_answers("127.0.0.1", port):
            self._check_children()
            if time.monotonic() > deadline:
                raise DevError("the embedded Redis did not start within 30 s")
            time.sleep(0.05)

    def _spawn(self, name: str, args: list[str], *, python: bool = False) -> None:
        command = [sys.executable, *args] if python else [*finrt_command(), *args]
        with self._shield():
            process = subprocess.Popen(
                command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            reader = threading.Thread(
                target=self._relay, args=(name, process), name=f"relay-{name}", daemon=True
            )
            self.children.append(Child(name, process, reader))
            reader.start()
            self._write_pids()

    def _relay(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            self.console.line(name, raw.decode("utf-8", "replace").rstrip("\r\n"))
        process.stdout.close()

    def _write_pids(self) -> None:
        PIDS_FILE.write_text("".join(f"{c.name} {c.process.pid}\n" for c in self.children))

    def _stop_leftovers(self) -> None:
        """Stop what a previous run killed with SIGKILL left behind (its groups, if their
        processes still work in this directory)."""
        try:
            recorded = PIDS_FILE.read_text().split("\n")
        except FileNotFoundError:
            return
        here = str(Path.cwd())
        groups = process_groups()
        found: list[tuple[str, int]] = []
        for line in recorded:
            name, _, number = line.partition(" ")
            if not number.isdigit():
                continue
            members = groups.get(int(number), [])
            if any(within(cwd_of(pid), here) for pid in members):
                found.append((name, int(number)))
        for name, pgid in found:
            self.say(f"stopping a {name} left running by a previous run (group {pgid})")
            signal_group(pgid, signal.SIGTERM)
        for pgid in wait_groups_gone([g for _, g in found], STOP_GRACE_SECONDS):
            signal_group(pgid, signal.SIGKILL)
        PIDS_FILE.unlink(missing_ok=True)

    def _check_children(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                child.reader.join(2)
                raise DevError(f"{child.name} exited with code {code}; see its lines above")

    def _wait_api_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            self._check_children()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise DevError(f"the API did not become ready within {READY_TIMEOUT_SECONDS:.0f} s")
            time.sleep(0.2)

    def _demo_token(self, settings: Settings) -> str:
        from api.auth import issue_token

        return issue_token(
            DEMO_USER,
            settings.jwt_secret,
            settings.jwt_algorithm,
            ttl_seconds=DEMO_TOKEN_TTL_SECONDS,
        )

    def _seed_demo(self, token: str) -> int | None:
        from finrt._seed import seed_demo

        return seed_demo(self.base_url, token, self.console, self._check_children)

    def _banner(self, token: str, file_id: int | None) -> None:
        from finrt._seed import FILE_NAME

        finrt = shown_command()
        base = self.public_url
        dashboard = f"{base}/?token={token}"
        stream = f"{base}/api/v1/stream/notifications"
        greeting = json.dumps({"text": "hello from the CLI"})
        seeded = f' and demo file {file_id} ("{FILE_NAME}", processed)' if file_id else ""
        lines = [
            "",
            "FinVision Realtime is running. Open the dashboard:",
            "",
            f"  {dashboard}",
            "",
            f'Development token (user "{DEMO_USER}"{seeded}, valid 7 days):',
            "",
            f"  {token}",
            "",
            "Watch the demo user's notification stream:",
            "",
            f'  curl -N -H "Authorization: Bearer {token}" {stream}',
            "",
            "and, from another terminal in this directory (commands run here use this run's "
            f"Redis and secret, recorded under {VAR}/), publish to it or notify the user:",
            "",
            f"  {finrt} publish user:{DEMO_USER} greeting {shlex.quote(greeting)}",
            f"  {finrt} notify {DEMO_USER} --type system_update --title Hello "
            "--message 'A toast on the page' --priority high",
            f"  {finrt} token alice    # a token for another user",
            "",
            f"API docs: {base}/docs   Metrics: {base}/metrics   Ctrl-C stops everything.",
            "",
        ]
        for text in lines:
            self.console.raw(text)

    def _watch(self) -> None:
        while True:
            self._check_children()
            time.sleep(0.25)

    # -- stopping ----------------------------------------------------------------------------

    def _stop_all(self) -> None:
        if not self.children:
            return
        # The API and the worker first, while Redis still answers; Redis last.
        first = [c for c in self.children if c.name != "redis"]
        last = [c for c in self.children if c.name == "redis"]
        for batch in (first, last):
            self._stop_batch(batch)
        for child in self.children:
            child.reader.join(2)
            # Anything still in the group (a Celery pool process...) goes too.
            signal_group(child.process.pid, signal.SIGKILL)
        PIDS_FILE.unlink(missing_ok=True)
        self.say("stopped: no process left running")

    def _stop_batch(self, batch: list[Child]) -> None:
        for child in batch:
            if child.process.poll() is None:
                signal_group(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in batch:
            while child.process.poll() is None and not self._force:
                if time.monotonic() > deadline:
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(0.1)
            if child.process.poll() is None:
                if self._force:
                    self.say(f"{child.name}: killed at once (asked to stop a second time)")
                else:
                    self.say(f"{child.name} did not stop in time: killing it")
                signal_group(child.process.pid, signal.SIGKILL)
                child.process.wait()


def run_dev(*, port: int = 8000, seed: bool = True) -> int:
    """Start everything; returns when stopped (0) or when something failed (1)."""
    return DevRunner(port, seed).run()
