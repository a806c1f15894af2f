"""The send-stepping driver: a send that does not wait finishes without a task; one that waits
is handed to a task that finishes it, and errors reach the callback either way."""

from __future__ import annotations

import asyncio

import pytest

from streams import _drive


async def test_a_send_that_does_not_wait_finishes_at_once_without_a_task():
    sent: list[str] = []
    outcome: list[BaseException | None] = []

    async def send(message: str) -> None:
        sent.append(message)

    task = _drive.drive(_drive.send_all(send, ["a", "b"]), outcome.append)
    assert task is None
    assert sent == ["a", "b"] and outcome == [None]


async def test_a_send_that_waits_is_finished_by_a_task():
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    sent: list[str] = []
    outcome: list[BaseException | None] = []

    async def send(message: str) -> None:
        if message == "b":
            await gate  # the socket's buffer is full
            await asyncio.sleep(0)  # and a bare checkpoint on the way
        sent.append(message)

    task = _drive.drive(_drive.send_all(send, ["a", "b", "c"]), outcome.append)
    assert task is not None
    assert sent == ["a"] and outcome == []
    gate.set_result(None)
    await asyncio.wait_for(task, 10)
    assert sent == ["a", "b", "c"] and outcome == [None]


async def test_errors_reach_the_callback_with_or_without_a_task():
    outcome: list[BaseException | None] = []

    async def broken(message: str) -> None:
        raise ConnectionResetError("client went away")

    assert _drive.drive(broken("x"), outcome.append) is None
    assert isinstance(outcome[0], ConnectionResetError)

    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def late(message: str) -> None:
        await gate
        raise BrokenPipeError

    task = _drive.drive(late("x"), outcome.append)
    assert task is not None
    gate.set_result(None)
    await asyncio.wait_for(task, 10)
    assert isinstance(outcome[1], BrokenPipeError)


async def test_a_cancelled_send_reports_the_cancellation():
    outcome: list[BaseException | None] = []
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def stuck(message: str) -> None:
        await never

    task = _drive.drive(stuck("x"), outcome.append)
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert isinstance(outcome[0], asyncio.CancelledError)
