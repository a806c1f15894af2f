"""Helpers of the ``finrt`` commands: errors a person can act on (never a traceback), and the
history that ``finrt tail --from`` prints first, with a progress bar on a terminal."""

from __future__ import annotations

import sys
from typing import IO, Any

from core.settings import redis_url_problem, safe_url

__all__ = [
    "database_problem",
    "is_database_error",
    "print_history",
    "redis_url_problem",
    "safe_url",
]


# What ``finrt tail --from`` takes for "from the oldest event history still holds".
OLDEST = ("oldest", "0-0", "0")


def database_problem(exc: BaseException) -> str:
    """A one-line reason for a database failure (SQLAlchemy's messages run to a page)."""
    from sqlalchemy import exc as sa_exc

    expected = "expected sqlite:///path or postgresql+psycopg://user:password@host/db"
    if isinstance(exc, sa_exc.NoSuchModuleError):
        return f"FINRT_DATABASE_URL names an unknown database driver ({expected})"
    if isinstance(exc, sa_exc.ArgumentError):
        return f"FINRT_DATABASE_URL is not a database URL ({expected})"
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        text = str(exc.orig).strip()
        return "database not reachable: " + (text.splitlines()[0] if text else type(exc).__name__)
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__).removesuffix(".")


def is_database_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError | OSError)


class _HistoryBar:
    """Progress through history by event time (ids start with their millisecond): exact enough
    for a bar, and free (counting a Redis Stream's entries after an id would mean reading them).
    """

    def __init__(self, start_ms: int, head_ms: int, stream: IO[str]) -> None:
        self.start_ms = start_ms
        self.count = 0
        self.progress: Any = None
        if stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(
                TextColumn("history"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[count]:,} events"),
                TimeElapsedColumn(),
                console=Console(file=stream),
                transient=True,
            )
            self.task = self.progress.add_task("history", total=max(head_ms - start_ms, 1), count=0)

    def __enter__(self) -> _HistoryBar:
        if self.progress is not None:
            self.progress.start()
        return self

    def advance(self, printed: int, last_ms: int) -> None:
        self.count += printed
        if self.progress is not None:
            self.progress.update(self.task, completed=last_ms - self.start_ms, count=self.count)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress.console.print(
                f"{self.count:,} events of history; now following live", highlight=False
            )


async def print_history(
    settings: Any, channel: str, from_id: str, out: IO[str] | None = None
) -> str:
    """Print ``channel``'s events after ``from_id`` (history as of now; ``oldest`` or ``0-0``:
    all it holds), one envelope per line; return the id to follow live from. When history no
    longer reaches ``from_id``, print nothing and return it: the live follower then starts with
    the ``reset`` event."""
    from streams.channels import check_channel
    from streams.connect import async_client
    from streams.envelope import InvalidEvent, format_id, parse_id
    from streams.history import PAGE, HistoryReader, plan_resume

    out = out or sys.stdout
    # "oldest" (or 0-0, the id before every event): all that history still holds, never a reset.
    oldest = from_id.strip().lower() in OLDEST
    try:
        check_channel(channel)
        last = (0, 0) if oldest else parse_id(from_id)
    except InvalidEvent as exc:
        raise ValueError(str(exc)) from exc
    client = async_client(settings.redis_url, socket_connect_timeout=3)
    try:
        reader = HistoryReader(
            client,
            settings.redis_prefix,
            maxlen=settings.history_maxlen,
            ttl_seconds=settings.history_ttl_seconds,
        )
        bounds = await reader.bounds(channel)
        if oldest:
            if bounds.head <= last:
                return format_id(bounds.head)
            after = printed_up_to = last
        else:
            plan = plan_resume(last, bounds)
            if plan.reset is not None or not plan.replay:
                return from_id
            after = printed_up_to = plan.position
        start_ms = bounds.first[0] if oldest else after[0]
        with _HistoryBar(start_ms, bounds.head[0], sys.stderr) as bar:
            while after < bounds.head:
                page = await reader.read_page(channel, after, PAGE)
                events = [e for e in page.events if e.sid <= bounds.head]
                if events:
                    out.write("".join(e.envelope.decode() + "\n" for e in events))
                    out.flush()
                    printed_up_to = events[-1].sid
                    bar.advance(len(events), printed_up_to[0])
                if not page.more:
                    break
                after = page.last
        # From the oldest, everything up to the head is printed (trailing markers included).
        return format_id(bounds.head if oldest else printed_up_to)
    finally:
        await client.aclose()
