"""Redis clients from FINRT_REDIS_URL: one Redis (``redis://``, ``rediss://``, ``unix://``) or a
Redis Cluster (``redis+cluster://[user:password@]host:port[,host:port...]``, the listed nodes
being seeds: any one that answers tells the client the rest).

Every part of the service that talks to Redis for events, history, tickets, limits and metrics
gets its client here, so the choice between one node and a cluster is made in one place. A
cluster client offers the same command methods the service uses (keys that must meet share a
hash tag), so callers keep their ``redis.Redis`` annotations.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.cluster import ClusterNode

CLUSTER_SCHEME = "redis+cluster"


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME + "://")


def cluster_seeds(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """The seed nodes, user and password of a ``redis+cluster://`` URL."""
    rest = url[len(CLUSTER_SCHEME) + 3 :].split("/", 1)[0].split("?", 1)[0]
    user = password = None
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        if ":" in auth:
            name, secret = auth.split(":", 1)
            user, password = unquote(name) or None, unquote(secret)
        else:
            password = unquote(auth)
    seeds: list[tuple[str, int]] = []
    for part in rest.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not host:port: {part!r}")
        seeds.append((host.strip("[]"), int(port)))
    if not seeds:
        raise ValueError("no seed node")
    return seeds, user, password


def sync_client(url: str, **options: Any) -> redis.Redis:
    """A blocking client (``options`` as for ``redis.Redis``; pool options are left out for a
    cluster, whose client keeps one pool per node)."""
    if not is_cluster(url):
        return redis.Redis.from_url(url, **options)
    seeds, user, password = cluster_seeds(url)
    cluster = redis.RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in seeds],  # type: ignore[no-untyped-call]
        username=user,
        password=password,
        **_cluster_options(options),
    )
    return cast(redis.Redis, cluster)


def async_client(url: str, **options: Any) -> aioredis.Redis:
    """The asyncio twin of :func:`sync_client`."""
    if not is_cluster(url):
        return aioredis.Redis.from_url(url, **options)
    seeds, user, password = cluster_seeds(url)
    cluster = aioredis.RedisCluster(
        startup_nodes=[AsyncClusterNode(h, p) for h, p in seeds],
        username=user,
        password=password,
        **_cluster_options(options),
    )
    return cast(aioredis.Redis, cluster)


def _cluster_options(options: dict[str, Any]) -> dict[str, Any]:
    kept = {
        k: v
        for k, v in options.items()
        if k
        in ("socket_timeout", "socket_connect_timeout", "max_connections", "health_check_interval")
    }
    return kept


def is_cluster_client(client: object) -> bool:
    return isinstance(client, (redis.RedisCluster, aioredis.RedisCluster))
