"""Figures the hardening suites record, printed as one table at the end of the run.

``make test`` runs the short versions; ``make soak`` sets ``FINRT_SOAK=1`` and runs the long
ones. Each suite calls :func:`record` once with the figures that apply to it; the conftest's
terminal summary prints every recorded row and ``make soak`` keeps the table in
``tests/hardening/results/soak-latest.txt``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

SOAK = os.environ.get("FINRT_SOAK", "") == "1"

# The columns of the table, in order: (key, heading).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("suite", "suite"),
    ("clients", "clients"),
    ("requests", "requests"),
    ("connections", "connections"),
    ("events", "events"),
    ("duration_s", "duration s"),
    ("lost", "lost"),
    ("duplicates", "dup"),
    ("reorders", "reorder"),
    ("fd_drift", "fd drift"),
    ("tasks_drift", "task drift"),
    ("rss_drift_kb", "RSS drift KB"),
    ("published_first", "published before reply"),
    ("read_idle_p99_ms", "idle read p99 ms"),
    ("read_p99_ms", "busy read p99 ms"),
    ("cases", "fuzz cases"),
    ("server_errors", "5xx"),
    ("tokens_leaked", "tokens in logs"),
    ("notification_delivery_pct", "notif. delivered %"),
    ("notification_counted_pct", "notif. counted %"),
)


def scaled(short: int | float, long: int | float) -> Any:
    """``short`` in ``make test``, ``long`` in ``make soak``."""
    return long if SOAK else short


# Recorded by the tests of this pytest process, read by its terminal summary.
_ROWS: dict[str, dict[str, Any]] = {}


def record(suite: str, **figures: int | float | str) -> None:
    """Keep one suite's figures (a later call for the same suite replaces the row)."""
    _ROWS[suite] = {"suite": suite, **figures}


def rows() -> list[dict[str, Any]]:
    return [_ROWS[k] for k in sorted(_ROWS)]


def table(found: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.1f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    grid = [[heading for _, heading in COLUMNS]]
    grid += [[cell(row.get(key)) for key, _ in COLUMNS] for row in found]
    widths = [max(len(r[i]) for r in grid) for i in range(len(COLUMNS))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in grid]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def machine() -> str:
    """Where and when: the header of a kept table."""
    import datetime
    import platform
    import subprocess

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = subprocess.run(
        ["git", "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False
    ).stdout.strip()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"date {now}; git {git or '-'}\n"
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"kernel {platform.release()}; FINRT_SOAK={'1' if SOAK else '0'}"
    )


def keep(text: str) -> Path:
    """Write the soak table where the README quotes it from."""
    path = Path(__file__).resolve().parent / "results" / "soak-latest.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text + "\n")
    return path
