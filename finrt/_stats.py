"""``finrt stats``: the table it prints (see services/engagement_stats.py for the figures)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import typer


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def print_stats(
    s: Any, echo: Callable[[str], None], fail: Callable[[str, int], typer.Exit]
) -> None:
    import redis

    from finrt._cli import database_problem, is_database_error, safe_url
    from models import session_scope
    from services.engagement_stats import TypeFigures, add_deliveries, from_database
    from streams.connect import sync_client

    now = datetime.now(UTC)
    try:
        with session_scope(s.database_url) as session:
            figures = from_database(session, now - timedelta(days=1))
    except Exception as exc:
        if is_database_error(exc):
            raise fail(database_problem(exc), 1) from None
        raise
    delivered_known = True
    try:
        client = sync_client(s.redis_url, socket_timeout=3, socket_connect_timeout=3)
        add_deliveries(figures, client, s.redis_prefix, now)
    except redis.RedisError as exc:
        delivered_known = False
        echo(f"note: deliveries unknown: Redis at {safe_url(s.redis_url)}: {exc}")
    header = ("type", "created", "delivered", "seen", "read", "acted", "delivery", "interaction")
    rows: list[tuple[str, ...]] = [header]
    total = TypeFigures()
    for type, f in sorted(figures.items()):
        for name in ("created", "delivered", "seen", "read", "acted", "interacted"):
            setattr(total, name, getattr(total, name) + getattr(f, name))
        rows.append(_row(type, f, delivered_known))
    rows.append(_row("all", total, delivered_known))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    echo(f"notifications created since {now - timedelta(days=1):%Y-%m-%d %H:%M} UTC")
    for r in rows:
        echo(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


def _row(type: str, f: Any, delivered_known: bool) -> tuple[str, ...]:
    delivered = str(f.delivered) if delivered_known else "?"
    rate = _rate(f.delivery_rate) if delivered_known else "?"
    return (
        type,
        str(f.created),
        delivered,
        str(f.seen),
        str(f.read),
        str(f.acted),
        rate,
        _rate(f.interaction_rate),
    )
