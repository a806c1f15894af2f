"""What ``finrt dev`` leaves under ``./var/`` for the other commands run in the same directory.

``finrt dev`` records the Redis it uses (``var/redis_url``; with a Redis Cluster also the Celery
broker beside it, ``var/celery_broker_url``) and its JWT secret (``var/jwt_secret``). Every
``finrt`` command run in that directory uses them unless the environment (or ``.env``) says
otherwise, so ``finrt token alice`` and ``finrt publish ...`` work as the README writes them,
against the Redis the open streams read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

VAR = Path("var")
SECRET_FILE = VAR / "jwt_secret"
REDIS_URL_FILE = VAR / "redis_url"
# The Celery broker beside a Redis Cluster (a cluster cannot be one); absent otherwise.
BROKER_FILE = VAR / "celery_broker_url"
PIDS_FILE = VAR / "dev.pids"

# Setting -> the file ``finrt dev`` keeps it in.
RECORDED = {
    "FINRT_REDIS_URL": REDIS_URL_FILE,
    "FINRT_CELERY_BROKER_URL": BROKER_FILE,
    "FINRT_JWT_SECRET": SECRET_FILE,
}


def dotenv_sets(name: str) -> bool:
    """Whether ./.env (which the settings honour) sets ``name``."""
    try:
        text = Path(".env").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key = line.strip().removeprefix("export ").partition("=")[0].strip()
        if key == name:
            return True
    return False


def configured(name: str) -> bool:
    """Whether the environment or ./.env sets ``name`` (then it wins over ``var/``)."""
    return bool(os.environ.get(name)) or dotenv_sets(name)


def read_recorded(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return value or None


def use_recorded() -> dict[str, Path]:
    """Put what ``finrt dev`` recorded here into the environment where nothing else sets it;
    returns the settings taken from files."""
    used: dict[str, Path] = {}
    for name, path in RECORDED.items():
        if configured(name):
            continue
        value = read_recorded(path)
        if value is not None:
            os.environ[name] = value
            used[name] = path
    return used


def dev_running_here() -> bool:
    """Whether a ``finrt dev`` in this directory has children running (it lists them)."""
    return PIDS_FILE.exists()


def _where(url: str) -> tuple[str, int, str]:
    parsed = urlparse(url)
    return (parsed.hostname or "127.0.0.1", parsed.port or 6379, parsed.path.strip("/") or "0")


def other_redis_note(url: str) -> str | None:
    """One line when ``url`` is not the Redis that the ``finrt dev`` running here uses."""
    recorded = read_recorded(REDIS_URL_FILE)
    if recorded is None or not dev_running_here():
        return None
    try:
        if _where(recorded) == _where(url):
            return None
    except ValueError:
        return None
    from core.settings import safe_url

    return (
        f"note: FINRT_REDIS_URL ({safe_url(url)}) is not the Redis that `finrt dev` runs in "
        f"this directory ({safe_url(recorded)}, {REDIS_URL_FILE}): its streams will not see "
        "this; unset FINRT_REDIS_URL to use it"
    )


def warn_other_redis(url: str) -> None:
    if note := other_redis_note(url):
        print(note, file=sys.stderr)


def record(path: Path, value: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
