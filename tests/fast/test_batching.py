"""The open path's batching: what is asked in one loop turn is served by one call, each caller
gets its own result (or its own error), and nobody is left waiting when the batcher stops."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from streams.batching import TurnBatcher


async def test_requests_of_one_turn_share_one_call_and_get_their_own_results():
    calls: list[list[int]] = []

    async def run(args: list[int]) -> list[int | BaseException]:
        calls.append(args)
        await asyncio.sleep(0.01)
        return [ValueError(f"odd {a}") if a % 2 else a * 10 for a in args]

    batcher: TurnBatcher[int, int] = TurnBatcher(run)
    got = await asyncio.gather(*(batcher.call(i) for i in range(100)), return_exceptions=True)
    assert calls == [list(range(100))]
    assert [g for g in got if not isinstance(g, BaseException)] == list(range(0, 1000, 20))
    assert [str(g) for g in got if isinstance(g, ValueError)] == [
        f"odd {i}" for i in range(1, 100, 2)
    ]


async def test_requests_made_while_a_batch_runs_form_the_next_one():
    calls: list[list[str]] = []

    async def run(args: list[str]) -> list[str | BaseException]:
        calls.append(args)
        await asyncio.sleep(0.02)
        return [a.upper() for a in args]

    batcher: TurnBatcher[str, str] = TurnBatcher(run, max_batch=3)
    first = asyncio.gather(*(batcher.call(c) for c in "ab"))
    await asyncio.sleep(0.005)  # the first batch is in flight
    later = asyncio.gather(*(batcher.call(c) for c in "cdefg"))
    assert await first == ["A", "B"]
    assert await later == ["C", "D", "E", "F", "G"]
    assert calls == [["a", "b"], ["c", "d", "e"], ["f", "g"]]


async def test_a_failed_call_fails_its_batch_and_the_next_batch_still_runs():
    async def run(args: list[int]) -> Sequence[int | BaseException]:
        if 0 in args:
            raise ConnectionError("Redis went away")
        return args

    batcher: TurnBatcher[int, int] = TurnBatcher(run)
    got = await asyncio.gather(batcher.call(0), batcher.call(1), return_exceptions=True)
    assert all(isinstance(g, ConnectionError) for g in got)
    assert await batcher.call(2) == 2


async def test_stopping_cancels_the_batch_in_flight_and_those_waiting():
    async def run(args: list[int]) -> Sequence[int | BaseException]:
        await asyncio.sleep(10)
        return args

    batcher: TurnBatcher[int, int] = TurnBatcher(run, max_batch=1)
    waiting = [batcher.submit(i) for i in range(3)]
    await asyncio.sleep(0.01)
    await batcher.stop()
    assert all(f.cancelled() for f in waiting)
