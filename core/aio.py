"""asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def timed(awaitable: Awaitable[T], seconds: float) -> T:
    """``await awaitable``, TimeoutError after ``seconds``: what ``asyncio.wait_for`` does, but
    a cancellation is never lost. Python 3.11's ``wait_for`` drops a cancellation that arrives
    as the awaited completes: the hub's Redis task, cancelled on shutdown just as its connection
    was made, ran on, and the process hung in "Waiting for application shutdown", deaf to
    SIGTERM (as when uvicorn could not bind its address right after start-up)."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def stop_task(task: asyncio.Task[Any] | None, *, every: float = 0.1) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again while it runs on.

    On Python 3.11 a cancellation can be lost: ``asyncio.wait_for`` (the standard library's,
    which redis-py's connect uses) drops one that arrives as what it awaited completes, and the
    task carries on. One ``cancel()`` and an ``await`` then wait for ever: a process stopping
    right after start-up hung in "Waiting for application shutdown", deaf to SIGTERM. What the
    task raised is not raised here (it is stopping anyway)."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=every)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved
