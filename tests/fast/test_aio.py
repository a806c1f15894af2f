"""``core.aio.timed``: a timeout that never loses a cancellation (Python 3.11's
``asyncio.wait_for`` does when it arrives as the awaited completes)."""

from __future__ import annotations

import asyncio

import pytest

from core.aio import stop_task, timed


async def test_a_cancellation_arriving_as_the_awaited_completes_is_not_lost():
    loop = asyncio.get_running_loop()
    connected = loop.create_future()
    ran_on: list[str] = []

    async def background() -> None:  # as the hub's Redis task: connect, then serve for ever
        await timed(connected, 5)
        ran_on.append("past the connect")
        await asyncio.sleep(30)

    task = asyncio.create_task(background())
    await asyncio.sleep(0.01)
    connected.set_result(None)  # the connection is made...
    task.cancel()  # ...just as shutdown cancels the task
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert ran_on == []


async def test_it_times_out_and_returns_what_was_awaited():
    assert await timed(asyncio.sleep(0, "done"), 1) == "done"
    with pytest.raises(TimeoutError):
        await timed(asyncio.sleep(5), 0.05)


async def test_stop_task_stops_a_task_that_lost_its_first_cancellation():
    """What ``asyncio.wait_for`` (redis-py's connect uses it) does to a task cancelled as its
    connection is made: the task carries on. One cancel() and an await would wait for ever."""
    loop = asyncio.get_running_loop()
    connected = loop.create_future()

    async def background() -> None:
        await asyncio.wait_for(connected, 5)  # loses the cancellation below
        while True:
            await asyncio.sleep(30)

    task = asyncio.create_task(background())
    await asyncio.sleep(0.01)
    connected.set_result(None)
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()  # the cancellation was lost
    await asyncio.wait_for(stop_task(task), 2)
    assert task.cancelled()
