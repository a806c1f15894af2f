"""``finrt dev`` with a Redis Cluster for events: the cluster carries the streams, an embedded
Redis beside it is Celery's broker, and the commands run in the directory find both. A
combination that cannot work stops it with one line, before anything starts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import redis
from redis import RedisCluster

from finrt.embedded_redis import EmbeddedRedis, free_port
from tests.cluster.cluster_redis import TestCluster
from tests.ops.test_dev import DevRun, _assert_nothing_left, _check_running, dev_env, kill_leftovers
from tests.support import BIN

pytestmark = pytest.mark.timeout(300)


async def test_finrt_dev_streams_over_the_cluster_with_an_embedded_broker(cluster, tmp_path):
    (tmp_path / ".env").write_text(f"FINRT_REDIS_URL={cluster.url}\n")
    try:
        run = DevRun(tmp_path, free_port())
        token = run.wait_for(r"\?token=(\S+)").group(1)
        assert run.wait_for(r"^dev\s*\| events: the Redis Cluster at redis\+cluster://")
        broker = run.wait_for(r"Celery broker: an embedded Redis on port (\d+)")
        redis_port = int(broker.group(1))
        recorded = (tmp_path / "var" / "celery_broker_url").read_text().strip()
        assert recorded == f"redis://127.0.0.1:{redis_port}/0"
        # The seeded file was processed by the worker (its broker: the embedded Redis), and an
        # event published with the printed command (run as a person would, in the directory)
        # reaches the stream.
        event_id = await _check_running(run, token)
        nodes = RedisCluster(host="127.0.0.1", port=cluster.live()[0].port)
        try:
            # The events are on the cluster: the demo user's history holds the one published.
            ids = [e[0].decode() for e in nodes.xrange("finrt:{user:demo}:h")]
            assert event_id in ids
        finally:
            nodes.close()
        assert run.stop() == 0
        _assert_nothing_left(run, redis_port)
    finally:
        kill_leftovers(tmp_path)


async def test_finrt_dev_uses_the_configured_broker_beside_the_cluster(cluster, tmp_path):
    """FINRT_CELERY_BROKER_URL set (a plain Redis of its own here): no embedded Redis at all."""
    broker = EmbeddedRedis().start()
    try:
        (tmp_path / ".env").write_text(
            f"FINRT_REDIS_URL={cluster.url}\nFINRT_CELERY_BROKER_URL={broker.url}\n"
        )
        run = DevRun(tmp_path, free_port())
        token = run.wait_for(r"\?token=(\S+)").group(1)
        assert run.wait_for(r"Celery broker: redis://127\.0\.0\.1:\d+/\d+ \(FINRT_CELERY")
        assert not re.search(r"^redis\s*\|", run.output, re.M)  # nothing embedded started
        await _check_running(run, token)  # the seeded file went through the worker
        queued = redis.Redis.from_url(broker.url)
        try:
            assert queued.keys("finrt:celery:*")  # Celery's queues live on this broker
        finally:
            queued.close()
        assert run.stop() == 0
    finally:
        kill_leftovers(tmp_path)
        broker.stop()


def _dev_fails(cwd: Path, env_file: str) -> str:
    (cwd / ".env").write_text(env_file)
    done = subprocess.run(
        [str(BIN / "finrt"), "dev", "--port", str(free_port())],
        cwd=str(cwd),
        env=dev_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (1, 2), done.stdout + done.stderr  # 2: a setting refused
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    ("env_file", "says"),
    [
        # A single Redis named as a cluster: not a cluster node.
        ("FINRT_REDIS_URL=redis+cluster://127.0.0.1:{plain}\n", r"is not a Redis Cluster node"),
        # Nothing listens there.
        ("FINRT_REDIS_URL=redis+cluster://127.0.0.1:{free}\n", r"no node of the Redis Cluster"),
        # A cluster cannot be the broker either.
        (
            "FINRT_REDIS_URL={cluster}\nFINRT_CELERY_BROKER_URL={cluster}\n",
            r"FINRT_CELERY_BROKER_URL is not a broker URL",
        ),
    ],
)
def test_finrt_dev_refuses_what_cannot_carry_events_in_one_line(
    cluster: TestCluster, tmp_path: Path, env_file: str, says: str
) -> None:
    from tests.conftest import REDIS_URL

    plain = int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    text = _dev_fails(tmp_path, env_file.format(plain=plain, free=free_port(), cluster=cluster.url))
    errors = [line for line in text.splitlines() if "error" in line]
    assert len(errors) == 1 and re.search(says, errors[0]), text
    assert not (tmp_path / "var" / "dev.pids").exists()  # nothing was started
