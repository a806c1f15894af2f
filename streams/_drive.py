"""Run an ASGI ``send`` without a task when it would not wait.

Under uvicorn a body ``send`` only suspends while the socket's buffer is above its high-water
mark (flow control); otherwise it completes within its first step. Stepping the coroutine by
hand lets the hub write to thousands of connections from its dispatcher without waking one task
per connection per event, which is where a fan-out server spends its CPU. Only when a send
really waits (a slow client) is the rest of it handed to a task, exactly as ``Task`` itself
would run it: resume it whenever the future it yielded is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

Done = Callable[[BaseException | None], None]


def drive(coro: Coroutine[Any, Any, Any], done: Done) -> asyncio.Task[None] | None:
    """Start ``coro``; if it finishes at once call ``done`` and return None, else return the
    task that finishes it (and then calls ``done``)."""
    try:
        yielded = coro.send(None)
    except StopIteration:
        done(None)
        return None
    except BaseException as exc:  # the client went away, or the server is closing it
        done(exc)
        return None
    return asyncio.get_running_loop().create_task(_finish(coro, yielded, done))


async def _finish(coro: Coroutine[Any, Any, Any], yielded: Any, done: Done) -> None:
    error: BaseException | None = None
    try:
        while True:
            if yielded is None:  # a bare checkpoint (asyncio.sleep(0))
                await asyncio.sleep(0)
            else:
                # The coroutine reads the future's outcome itself once resumed.
                await asyncio.wait((yielded,))
            try:
                yielded = coro.send(None)
            except StopIteration:
                break
    except asyncio.CancelledError as exc:
        coro.close()
        error = exc
        raise
    except BaseException as exc:
        error = exc
    finally:
        done(error)


async def send_all(send: Callable[[Any], Awaitable[None]], messages: list[Any]) -> None:
    for message in messages:
        await send(message)
