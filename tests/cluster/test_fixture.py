"""The cluster fixture itself: three primaries, each with a replica, all slots served."""

from __future__ import annotations

from tests.cluster.cluster_redis import TestCluster


def test_cluster_has_three_primaries_with_a_replica_each(cluster: TestCluster) -> None:
    primaries = cluster.primaries()
    assert len(primaries) == 3
    info = cluster.nodes[0].client().cluster("info")
    assert info["cluster_state"] == "ok"
    assert int(info["cluster_slots_assigned"]) == 16384
    assert int(info["cluster_known_nodes"]) == 6
    for port in primaries:
        replication = cluster.node(port).client().info("replication")
        assert replication["role"] == "master"
        assert replication["connected_slaves"] == 1
