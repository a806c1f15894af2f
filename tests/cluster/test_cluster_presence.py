"""Presence on a real Redis Cluster: files on every shard, two API processes, a snapshot, joins
and leaves delivered over sharded pub/sub, a process killed with SIGKILL whose users leave
within the lease, once each, and a failover of the primary that holds a file's presence."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from redis import RedisCluster

from core.settings import get_settings
from streams.keys import presence_key, pubsub_channel
from tests.cluster.test_cluster_failover import _wait_promoted
from tests.cluster.test_cluster_streams import files_on_every_shard, start_cluster_api
from tests.streams.test_presence import _held, _presence, _quiet, _stream, _until_who, _who

FAST = {"presence_grace_seconds": "1", "presence_lease_seconds": "4"}


async def test_snapshot_join_and_leave_across_two_processes_on_every_shard(
    cluster, start_api, token, user, make_file
):
    bob = f"{user}-bob"
    files = list(files_on_every_shard(cluster, lambda o: make_file(o, members=(bob,)), user))
    one, two = (start_cluster_api(start_api, cluster, **FAST) for _ in range(2))
    async with contextlib.AsyncExitStack() as stack:
        alices = {}
        for file_id in files:
            stream = await stack.enter_async_context(_stream(one, file_id, token(user)))
            snap = (await _presence(stream)).envelope["data"]
            assert snap["count"] == 1 and [u["user_id"] for u in snap["users"]] == [user]
            alices[file_id] = stream
        async with contextlib.AsyncExitStack() as bobs:
            for file_id in files:
                theirs = await bobs.enter_async_context(_stream(two, file_id, token(bob)))
                snap = (await _presence(theirs)).envelope["data"]
                assert {u["user_id"] for u in snap["users"]} == {user, bob}
            for file_id, alice in alices.items():
                joined = await _presence(alice)
                assert joined.event == "presence_join" and not joined.had_id
                assert joined.envelope["data"] == {"file_id": file_id, "user_id": bob, "count": 2}
            for server in (one, two):
                for file_id in files:
                    body = _who(server, file_id, token(bob))
                    assert body["count"] == 2
        for file_id, alice in alices.items():
            left = await _presence(alice)
            assert left.event == "presence_leave"
            assert left.envelope["data"] == {"file_id": file_id, "user_id": bob, "count": 1}
        for alice in alices.values():
            assert await _quiet(alice, 2) == []


async def test_a_killed_process_on_the_cluster_loses_its_users_once_each(
    cluster, start_api, token, user, make_file
):
    bob, carol = f"{user}-bob", f"{user}-carol"
    files = list(files_on_every_shard(cluster, lambda o: make_file(o, members=(bob, carol)), user))
    survivor = start_cluster_api(start_api, cluster, **FAST)
    doomed = start_cluster_api(start_api, cluster, **FAST)
    async with contextlib.AsyncExitStack() as stack:
        watchers = {
            f: await stack.enter_async_context(_held(survivor, f, token(user))) for f in files
        }
        for file_id in files:
            for who in (bob, carol, carol):  # carol twice: two tabs count once
                await stack.enter_async_context(_held(doomed, file_id, token(who)))
        for file_id, watcher in watchers.items():
            joins = [await _presence(watcher) for _ in range(2)]
            assert {j.envelope["data"]["user_id"] for j in joins} == {bob, carol}
            body = await _until_who(survivor, file_id, token(user), {user, bob, carol})
            assert {u["user_id"]: u["connections"] for u in body["users"]}[carol] == 2
        doomed.kill()
        killed_at = time.monotonic()
        for watcher in watchers.values():
            leaves = [await _presence(watcher, timeout=30) for _ in range(2)]
            assert {e.event for e in leaves} == {"presence_leave"}
            assert sorted(e.envelope["data"]["user_id"] for e in leaves) == sorted([bob, carol])
        # 4 s of lease; generous room for a loaded machine, still far below "never".
        assert time.monotonic() - killed_at < 20
        for watcher in watchers.values():
            assert await _quiet(watcher, 3) == []
        nodes = RedisCluster(host="127.0.0.1", port=cluster.live()[0].port)
        try:
            prefix = get_settings().redis_prefix
            for file_id in files:
                body = _who(survivor, file_id, token(user))
                assert body["count"] == 1 and [u["user_id"] for u in body["users"]] == [user]
                # The dead process's entry is gone from the file's slot: only the survivor's.
                pattern = presence_key(prefix, f"file:{file_id}", "p:*")
                assert len(list(nodes.scan_iter(match=pattern))) == 1
        finally:
            nodes.close()


async def _until_event(stream: Any, done: Callable[[Any], bool], timeout: float = 30) -> None:
    """Presence events until one satisfies ``done`` (snapshots and others may come first)."""
    deadline = time.monotonic() + timeout
    while True:
        event = await _presence(stream, timeout=max(0.1, deadline - time.monotonic()))
        if done(event):
            return


async def test_presence_follows_a_failover_of_the_files_primary(
    cluster, start_api, token, user, make_file
):
    """kill -9 of the primary that holds a file's presence: once a replica is promoted, a
    leave and a join are still announced, and the endpoint ends with the true set."""
    bob, carol = f"{user}-bob", f"{user}-carol"
    files = files_on_every_shard(cluster, lambda o: make_file(o, members=(bob, carol)), user)
    file_id, victim = next(iter(files.items()))
    shard = pubsub_channel(get_settings().redis_prefix, f"file:{file_id}")
    api = start_cluster_api(start_api, cluster, **FAST)
    try:
        async with _held(api, file_id, token(user)) as alice:
            async with _held(api, file_id, token(bob)):
                assert (await _presence(alice)).envelope["data"]["user_id"] == bob
                cluster.node(victim).kill()
                await asyncio.to_thread(_wait_promoted, cluster, shard, victim)

            def bob_gone(event: Any) -> bool:
                data = event.envelope["data"]
                if event.event == "presence_leave":
                    return bool(data["user_id"] == bob)
                return event.event == "presence" and bob not in {
                    u["user_id"] for u in data["users"]
                }

            await _until_event(alice, bob_gone)
            body = await _until_who(api, file_id, token(user), {user})
            assert [u["user_id"] for u in body["users"]] == [user]
            async with _held(api, file_id, token(carol)):

                def carol_in(event: Any) -> bool:
                    data = event.envelope["data"]
                    if event.event == "presence_join":
                        return bool(data["user_id"] == carol)
                    return False

                await _until_event(alice, carol_in)
                body = await _until_who(api, file_id, token(user), {user, carol})
                assert body["count"] == 2
    finally:
        if cluster.node(victim) not in cluster.live():
            cluster.node(victim).start()
        cluster.wait_ok()
