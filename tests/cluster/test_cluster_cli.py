"""The ``finrt`` commands that read Redis directly, on a Redis Cluster."""

from __future__ import annotations

import json
import subprocess

from tests.cluster.test_cluster_streams import cluster_publisher
from tests.conftest import REDIS_URL
from tests.support import BIN, ROOT


def test_tail_and_stats_read_the_cluster(cluster, env, user):
    """Regression: both made a single-node client of the ``redis+cluster://`` URL, which it
    refuses ("Redis URL must specify one of the following schemes"): ``finrt tail`` (without
    --api) and ``finrt stats`` failed on a cluster."""
    cli_env = {**env, "FINRT_REDIS_URL": cluster.url, "FINRT_CELERY_BROKER_URL": REDIS_URL}
    sent = cluster_publisher(cluster).publish(f"user:{user}", "greeting", {"n": 1})
    tail = subprocess.Popen(
        [str(BIN / "finrt"), "tail", f"user:{user}", "--from", "oldest"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )
    try:
        assert tail.stdout is not None
        line = tail.stdout.readline()
        assert line, tail.stderr.read() if tail.stderr else ""
        assert json.loads(line)["id"] == sent
    finally:
        tail.kill()
        tail.communicate()
    stats = subprocess.run(
        [str(BIN / "finrt"), "stats"], env=cli_env, capture_output=True, text=True, timeout=30
    )
    assert stats.returncode == 0, stats.stderr
    assert "Traceback" not in stats.stderr and "deliveries unknown" not in stats.stdout
