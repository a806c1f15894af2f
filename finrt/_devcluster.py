"""``finrt dev`` with a Redis Cluster for events (``FINRT_REDIS_URL=redis+cluster://...``).

Celery cannot use a cluster as its broker (docs/cluster.md, supported combinations), so the
broker is ``FINRT_CELERY_BROKER_URL`` when set (a plain Redis or RabbitMQ), and otherwise the
embedded Redis that ``finrt dev`` starts anyway when no Redis is configured: a plain Redis beside
the cluster. The cluster is checked before anything starts, with one line saying what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path

import redis
from dotenv import dotenv_values

from core.settings import safe_url
from finrt._devfiles import BROKER_FILE
from streams.connect import cluster_seeds, is_cluster

__all__ = ["BROKER_FILE", "cluster_problem", "configured_cluster"]


def configured_value(name: str) -> str | None:
    """``name`` from the environment, else from ./.env (which the settings honour)."""
    value = os.environ.get(name)
    if value:
        return value
    if not Path(".env").exists():
        return None
    return dotenv_values(".env").get(name) or None


def configured_cluster() -> str | None:
    """The ``redis+cluster://`` URL that FINRT_REDIS_URL names, if it names one."""
    url = configured_value("FINRT_REDIS_URL")
    return url if url and is_cluster(url) else None


def cluster_problem(url: str) -> str | None:
    """One line on why ``url`` cannot carry the events, or None when a node answers that it
    belongs to a healthy Redis Cluster of version 7 or later."""
    shown = f"FINRT_REDIS_URL={safe_url(url)}"
    try:
        seeds, user, password = cluster_seeds(url)
    except ValueError as exc:
        return f"{shown} is not redis+cluster://host:port[,host:port...]: {exc}"
    last = "no seed node listed"
    for host, port in seeds:
        client = redis.Redis(
            host=host,
            port=port,
            username=user,
            password=password,
            socket_timeout=2,
            socket_connect_timeout=2,
            decode_responses=True,
        )
        try:
            version = str(client.info("server")["redis_version"])
            state = client.cluster("info").get("cluster_state")
        except redis.ResponseError as exc:
            return (
                f"{shown}: {host}:{port} is not a Redis Cluster node ({exc}); for a single "
                f"Redis use redis://{host}:{port}/0"
            )
        except (redis.RedisError, OSError) as exc:
            last = f"{host}:{port}: {exc}"
            continue
        finally:
            client.close()
        if int(version.split(".")[0]) < 7:
            return f"{shown}: Redis {version} has no sharded pub/sub; a cluster needs Redis 7+"
        if state != "ok":
            return f"{shown}: the cluster is not serving (cluster_state:{state} at {host}:{port})"
        return None
    return f"{shown}: no node of the Redis Cluster answers ({last})"
