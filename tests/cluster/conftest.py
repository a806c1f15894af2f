"""Fixtures of the Redis Cluster tests: one real cluster per module, torn down after."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.cluster.cluster_redis import TestCluster
from tests.conftest import TMP

if not (shutil.which("redis-server") and shutil.which("redis-cli")):
    pytest.skip("the cluster tests need redis-server and redis-cli 7", allow_module_level=True)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[TestCluster]:
    root = TMP / f"cluster-{request.module.__name__.rsplit('.', 1)[-1]}"
    started = TestCluster(root)
    try:
        yield started.start()
    finally:
        started.stop()
