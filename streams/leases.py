"""One stream limit for the whole fleet: FINRT_MAX_STREAMS_PER_USER counted across every API
process, in Redis.

Each open stream holds a *lease*: a member of the user's sorted set whose score is when it
expires (Redis' own clock, so processes on several hosts agree). Opening a stream drops the
expired members, counts the rest and adds one, in one script; closing removes it; every process
renews the leases of its open streams every third of ``lease_seconds``. A process killed with
SIGKILL renews nothing more, so its slots come back within ``lease_seconds``: a crash never
locks a user out for longer.

Streams that open (or close) together share a round trip: the acquisitions made in one loop
turn go to Redis as one pipeline of scripts (each still atomic for its user, so the limit holds
for streams of one user in one batch), and releases are sent the same way (streams/batching.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.aio import stop_task
from streams.batching import TurnBatcher, eval_batch, per_key_scripts

log = logging.getLogger("finrt.hub")

# Each script in two forms (streams/batching.py per_key_scripts): for one user's leases (KEYS[1])
# and for a batch of opens, renewals or closes (KEYS[i] the i-th user's leases).

# Redis's clock, read once per call (whole seconds and microseconds).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# ARGV: limit, lease seconds, then the stream's member. 1: taken, 0: full.
ACQUIRE_LUA, ACQUIRE_BATCH_LUA = per_key_scripts(
    _NOW
    + """
local function one(key, limit, lease, member)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(limit) then return 0 end
  redis.call('ZADD', key, now + tonumber(lease), member)
  redis.call('EXPIRE', key, math.ceil(tonumber(lease) * 2))
  return 1
end
""",
    shared=2,
    each=True,
)
# ARGV: lease seconds, then the members held by this process, separated by spaces (each renewed
# only if still there).
RENEW_LUA, RENEW_BATCH_LUA = per_key_scripts(
    _NOW
    + """
local function one(key, lease, members)
  for m in string.gmatch(members, '%S+') do
    redis.call('ZADD', key, 'XX', now + tonumber(lease), m)
  end
  redis.call('EXPIRE', key, math.ceil(tonumber(lease) * 2))
  return 1
end
""",
    shared=1,
    each=True,
)
# ARGV: the member to drop.
RELEASE_LUA, RELEASE_BATCH_LUA = per_key_scripts(
    """
local function one(key, member) return redis.call('ZREM', key, member) end
""",
    shared=0,
    each=True,
)


def leases_key(prefix: str, user_id: str) -> str:
    """A user's stream leases (sorted set: member ``<process>:<n>``, score: expiry)."""
    return f"{prefix}:streams:{{user:{user_id}}}"


class StreamLeases:
    def __init__(
        self, client: aioredis.Redis, prefix: str, *, limit: int, lease_seconds: float
    ) -> None:
        self.client, self.prefix, self.limit, self.lease = client, prefix, limit, lease_seconds
        self._acquire = client.register_script(ACQUIRE_LUA)
        self._acquire_batch = client.register_script(ACQUIRE_BATCH_LUA)
        self._renew = client.register_script(RENEW_LUA)
        self._renew_batch = client.register_script(RENEW_BATCH_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._release_batch = client.register_script(RELEASE_BATCH_LUA)
        self._process = uuid.uuid4().hex[:12]
        self._count = 0
        self._held: dict[str, set[str]] = {}  # user -> members held by this process
        self._task: asyncio.Task[None] | None = None
        self._acquires: TurnBatcher[tuple[str, str], int] = TurnBatcher(self._acquire_many)
        self._drops: TurnBatcher[tuple[str, str], None] = TurnBatcher(self._drop_many)

    async def acquire(self, user_id: str) -> str | None:
        """A lease for one more stream of ``user_id``, or None when the fleet-wide limit is
        reached."""
        self._count += 1
        member = f"{self._process}:{self._count}"
        taken = await self._acquires.call((user_id, member))
        if not taken:
            return None
        self._held.setdefault(user_id, set()).add(member)
        if self._task is None:
            self._task = asyncio.create_task(self._keep_renewing(), name="stream-leases")
        return member

    def release(self, user_id: str, member: str) -> None:
        held = self._held.get(user_id)
        if held is not None:
            held.discard(member)
            if not held:
                del self._held[user_id]
        self._drops.submit((user_id, member)).add_done_callback(_quiet)

    async def _acquire_many(self, wanted: list[tuple[str, str]]) -> list[int | BaseException]:
        keys = [leases_key(self.prefix, user_id) for user_id, _member in wanted]
        members = [member for _user_id, member in wanted]
        replies = await eval_batch(
            self.client, self._acquire_batch, self._acquire, keys, [self.limit, self.lease], members
        )
        return [r if isinstance(r, BaseException) else int(r) for r in replies]

    async def _drop_many(self, leases: list[tuple[str, str]]) -> list[None]:
        keys = [leases_key(self.prefix, user_id) for user_id, _member in leases]
        members = [member for _user_id, member in leases]
        try:
            await eval_batch(self.client, self._release_batch, self._release, keys, [], members)
        except (RedisError, OSError):
            pass  # they expire with their leases
        return [None] * len(leases)

    async def _keep_renewing(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            held = [(u, sorted(m)) for u, m in list(self._held.items()) if m]
            for start in range(0, len(held), 500):  # one script call per 500 users
                part = held[start : start + 500]
                keys = [leases_key(self.prefix, u) for u, _members in part]
                members = [" ".join(m) for _u, m in part]
                try:
                    replies = await eval_batch(
                        self.client, self._renew_batch, self._renew, keys, [self.lease], members
                    )
                    failed = [r for r in replies if isinstance(r, BaseException)]
                except (RedisError, OSError) as exc:
                    failed = [exc]
                if failed:
                    log.warning("renewing stream leases failed: %r", failed[0])

    async def stop(self) -> None:
        await self._acquires.stop()
        await self._drops.drained(2.0)  # closed streams give their slots back before exit
        await stop_task(self._task)


def _quiet(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a failed release expires with its lease
