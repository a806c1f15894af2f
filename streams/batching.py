"""Many small requests made in one loop turn, served by one call: the open path's batching.

When thousands of streams open at once (a deploy, a network blip), each would otherwise make its
own round trip to Redis or the database: one history bounds lookup, one lease, one user check.
A :class:`TurnBatcher` gathers the requests made while the event loop runs one turn (and those
made while its previous batch is in flight) and hands them to one call, e.g. one Redis pipeline.
Alone on a quiet process a request waits for nothing but the next loop turn; under a storm the
batches grow and the number of round trips (and of pooled connections in use) stays small.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from core.aio import stop_task
from streams.connect import is_cluster_client

log = logging.getLogger("finrt.hub")

# Script calls in flight at once per batch on a Redis Cluster (see eval_many).
CLUSTER_PARALLEL = 16

A = TypeVar("A")
R = TypeVar("R")


class TurnBatcher(Generic[A, R]):
    """``await batcher.call(arg)``: ``run`` gets every argument gathered since the last batch
    (at most ``max_batch`` at a time, in order) and returns one result per argument, in the same
    order; a result that is an exception is raised to its caller alone. One batch is in flight
    at a time: that bounds the connections a storm can take from a pool."""

    def __init__(
        self, run: Callable[[list[A]], Awaitable[Sequence[R | BaseException]]], max_batch: int = 500
    ) -> None:
        self._run, self.max_batch = run, max_batch
        self._queue: list[tuple[A, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # batches run (for tests and metrics)

    def submit(self, arg: A) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((arg, future))
        if self._task is None:
            # A task starts on the next turn: everything submitted in this one joins the batch.
            self._task = loop.create_task(self._drain(), name="turn-batcher")
        return future

    async def call(self, arg: A) -> R:
        return await self.submit(arg)

    async def _drain(self) -> None:
        live: list[tuple[A, asyncio.Future[R]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                live = [(a, f) for a, f in batch if not f.done()]  # callers gone: skip them
                if not live:
                    continue
                self.batches += 1
                try:
                    results = await self._run([a for a, _ in live])
                except Exception as exc:
                    for _, future in live:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(live, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        except asyncio.CancelledError:
            for _, future in live + self._queue:  # the batch in flight and those waiting
                future.cancel()
            self._queue = []
            raise
        finally:
            self._task = None

    async def drained(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until everything submitted has been run."""
        task = self._task
        if task is not None:
            await asyncio.wait([task], timeout=timeout)

    async def stop(self) -> None:
        await stop_task(self._task)


async def eval_many(
    client: aioredis.Redis, script: Any, calls: Sequence[tuple[list[str], list[Any]]]
) -> list[Any]:
    """Run a registered script (``client.register_script``) once per ``(keys, args)`` in one
    pipeline (one round trip; on a cluster, one per node): the results in order, an exception
    in place of a call that failed. A script Redis does not know yet is loaded and the pipeline
    sent again.

    A Redis Cluster client refuses scripts in a pipeline: there they run as separate calls, a
    few at a time (still one batch in flight, so the pools stay small)."""
    if is_cluster_client(client):
        gate = asyncio.Semaphore(CLUSTER_PARALLEL)

        async def one(keys: list[str], args: list[Any]) -> Any:
            async with gate:
                return await script(keys=keys, args=args)

        return list(await asyncio.gather(*(one(k, a) for k, a in calls), return_exceptions=True))
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        if attempt == 1 and any(isinstance(r, NoScriptError) for r in results):
            await client.script_load(script.script)
            continue
        return results
    raise AssertionError("unreachable")


def per_key_scripts(lua: str, shared: int, *, each: bool = False) -> tuple[str, str]:
    """The two scripts :func:`eval_batch` takes, written once: ``lua`` defines
    ``local function one(key, <shared arguments>[, the key's own argument])`` (after anything to
    compute once per call, such as the time). The single script returns ``one`` of ``KEYS[1]``;
    the batch script a list of ``one`` of each key, the i-th key's own argument at
    ``ARGV[shared + i]``."""
    common = [f"ARGV[{n}]" for n in range(1, shared + 1)]
    single = ", ".join(["KEYS[1]", *common, *([f"ARGV[{shared + 1}]"] if each else [])])
    batch = ", ".join(["KEYS[i]", *common, *([f"ARGV[{shared} + i]"] if each else [])])
    return (
        f"{lua}\nreturn one({single})\n",
        f"{lua}\nlocal out = {{}}\nfor i = 1, #KEYS do out[i] = one({batch}) end\nreturn out\n",
    )


async def eval_batch(
    client: aioredis.Redis,
    batch_script: Any,
    single_script: Any,
    keys: Sequence[str],
    shared: Sequence[Any],
    each: Sequence[Any] | None = None,
) -> list[Any]:
    """One script call for a whole batch: ``batch_script`` loops over its KEYS (the i-th key's
    own argument, if any, at ``ARGV[len(shared) + i]``) and returns one reply per key, as
    ``single_script`` would for ``KEYS[1]``, ``ARGV = shared (+ each[i])``.

    redis-py costs ~30 µs of the process's CPU per command of a pipeline (building, packing and
    parsing it) and ~5 µs per key in one command, and a storm of opens makes two script calls
    per stream (the lease and the history bounds). A key repeated in the batch is handled in
    order, as in a pipeline. If the call fails as a whole (a key of the wrong type), the keys are
    run one by one so that only the bad ones fail; on a Redis Cluster (keys of several slots)
    they always are (:func:`eval_many`)."""

    def one_by_one() -> list[tuple[list[str], list[Any]]]:
        if each is None:
            return [([k], list(shared)) for k in keys]
        return [([k], [*shared, e]) for k, e in zip(keys, each, strict=True)]

    if is_cluster_client(client) or not keys:
        return await eval_many(client, single_script, one_by_one())
    args = [*shared, *(each or ())]
    try:
        try:
            reply = await client.evalsha(batch_script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(batch_script.script)
            reply = await client.evalsha(batch_script.sha, len(keys), *keys, *args)
    except ResponseError:
        return await eval_many(client, single_script, one_by_one())
    return list(reply)
